"""The operator console: a web board of the spool's jobs (see console.app)."""

"""Supervisor daemon, its per-job shim and the operator CLI."""

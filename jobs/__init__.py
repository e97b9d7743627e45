"""The contract shared by facade and supervisor: config, spool, specs, states, definitions."""

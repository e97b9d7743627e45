"""jobctl: the operator's view of the spool and the commands an operator may send.

jobctl never touches a running process itself. It reads the files the
supervisor writes (state.json, queue.json, supervisor.json, the logs) and asks
for changes the same way the facade does: a spec dropped into incoming/
(`submit`) or a command file dropped into commands/ (`kill`, `restart`). The
supervisor acts on them when it runs, so both work while it is down.
"""
from jobctl.cli import main

__all__ = ["main"]

"""Whether a listening port is free, and who holds it: checked before any server of ours binds.

granian binds with SO_REUSEPORT, so a second façade or console on a port one of
ours already serves would start and the kernel would split the connections
between them. A probe bound without SO_REUSEPORT (but with SO_REUSEADDR:
TIME_WAIT is no obstacle) fails while anything listens on the port, so each
server checks with it first and refuses to start.
"""
from __future__ import annotations

import shlex
import socket

import psutil

from .errors import JobsError


class PortInUse(JobsError):
    """The server's port is held by another process."""


def port_holder(host: str, port: int) -> str | None:
    """None if (host, port) can be bound; else who holds it, as well as can be told."""
    if port == 0:
        return None  # any free port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
            return None
        except OSError:
            pass
    try:
        owners = {c.pid for c in psutil.net_connections("inet")
                  if c.laddr and c.laddr.port == port and c.pid and not c.raddr}
    except psutil.Error:
        owners = set()
    for pid in sorted(owners):
        try:
            argv = [a for a in psutil.Process(pid).cmdline() if a]  # a retitled process pads with empty ones
            return f"pid {pid} ({shlex.join(argv)[:160]})"
        except psutil.Error:
            continue
    return f"another process (ask `ss -ltnp 'sport = :{port}'` which)"


def require_free(key: str, host: str, port: int) -> None:
    """Raise PortInUse, naming the setting and the holder, if (host, port) is taken."""
    holder = port_holder(host, port)
    if holder:
        raise PortInUse(f"port {port} ({key}) on {host} is already in use by {holder}; "
                        f"stop that process or set {key} to a free port")

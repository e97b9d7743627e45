"""`python -m console` (spoolsoap-console): the console under granian, configured from the env file.

One worker: the board's index and the event streams live in the process.
"""
from __future__ import annotations

import os
import sys

import structlog

from jobs import config as config_mod
from jobs import logs
from jobs.cli import service_args
from jobs.errors import JobsError
from jobs.ports import require_free
from jobs.requirements import require_clfpy

_app = None


def asgi_app():
    """granian's factory: the app main() built (and checked) before serving."""
    global _app
    if _app is None:
        from .app import make_app
        _app = make_app(config_mod.load())
    return _app


def yield_cpu(nice: int) -> None:
    """Run at niceness `nice` (never lower than now): when the CPU is short, the façade and the
    supervisor, which workflows wait on, go first; the board is a few hundred ms later."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def main(argv: list[str] | None = None) -> int:
    global _app
    service_args("spoolsoap-console", "Serve the operator console (CONSOLE_HOST:CONSOLE_PORT) under granian.", argv)
    require_clfpy("console")
    try:
        cfg = config_mod.load()
        logs.configure(cfg.log_level)
        require_free("CONSOLE_PORT", cfg.console_host, cfg.console_port)  # granian would share it (SO_REUSEPORT)
        from .app import make_app
        _app = make_app(cfg)
    except JobsError as e:
        print(f"console: error: {e}", file=sys.stderr)
        return 2
    yield_cpu(cfg.console_nice)
    from granian.constants import HTTPModes, Interfaces
    from granian.server import Server
    server = Server("console.__main__:asgi_app", factory=True, interface=Interfaces.ASGI,
                    address=cfg.console_host, port=cfg.console_port, workers=1, http=HTTPModes.http1,
                    log_access=False, log_dictconfig=logs.stdlib_config(cfg.log_level),
                    process_name="console")
    host = f"[{cfg.console_host}]" if ":" in cfg.console_host else cfg.console_host

    @server.on_startup
    def listening():
        print(f"console: http://{host}:{cfg.console_port}/", flush=True)
        structlog.get_logger("console").info("ready", port=cfg.console_port, spool=str(cfg.spool_dir))

    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

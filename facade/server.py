"""`python -m facade`: the façade under granian, configured from the env file (ENV_FILE).

granian (a Rust HTTP server) is driven from code so there is one entry point
and every setting comes from jobs.config. It was chosen on bench/ figures
(README "Performance", S9): connections are handled asynchronously, so slow
or idle clients cost no thread and are timed out (facade.bridge), and polls
are answered at a higher rate than under gunicorn's gthread workers. The app
is built in the master before the workers fork (a bad configuration or
definition stops start-up with its message), and each worker inherits it.
Each worker's event loop is uvloop's: a poll answered on the loop (facade.bridge)
spends less of its time in the loop's own machinery than under asyncio's
(docs/profile-polls.md).
"""
from __future__ import annotations

import gc
import os
import sys

import structlog

from jobs import config as config_mod
from jobs import logs
from jobs.errors import JobsError
from jobs.ports import require_free

from .app import make_app
from .bridge import WsgiOverRsgi
from jobs.proxies import TrustedProxies

HEADER_BUFFER_BYTES = 64 * 1024  # request line + headers; hyper also caps them at 100 fields

_app: WsgiOverRsgi | None = None  # built by main() before the workers fork


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def worker_app() -> WsgiOverRsgi:
    """granian's factory, called in each worker: the app main() built before the fork."""
    global _app
    if _app is None:  # a worker started without fork: build it here
        cfg = config_mod.load()
        logs.configure(cfg.log_level)
        _app = rsgi_app(cfg, make_app(cfg), parent_pid=os.getppid())
    # the app's ~50,000 long-lived objects (spyne's schema, the definitions) leave the collector's
    # view: a full collection no longer walks them while every thread of the worker waits
    gc.freeze()
    return _app


def rsgi_app(cfg: config_mod.Config, wsgi_app, parent_pid: int | None) -> WsgiOverRsgi:
    return WsgiOverRsgi(wsgi_app, cfg.max_body_bytes, cfg.facade_read_timeout_seconds, cfg.facade_threads,
                        parent_pid=parent_pid, trusted_proxies=TrustedProxies(cfg.forwarded_allow_ips))


def granian_server(cfg: config_mod.Config, target: str = "facade.server:worker_app"):
    """The granian server for the façade's settings (the benchmark serves its baselines with it too)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    return Server(
        target, factory=True, interface=Interfaces.RSGI,
        address=cfg.facade_host, port=cfg.facade_port, workers=cfg.facade_workers,
        http=HTTPModes.http1, loop=Loops.uvloop,
        http1_settings=HTTP1Settings(header_read_timeout=int(cfg.facade_read_timeout_seconds * 1000),
                                     keep_alive=True, max_buffer_size=HEADER_BUFFER_BYTES),
        backlog=2048,
        log_dictconfig=logs.stdlib_config(cfg.log_level),
        respawn_failed_workers=True,
        # a request is bounded by the auth timeout (a few calls) and the abort wait
        workers_kill_timeout=int(max(10, 3 * cfg.auth_timeout_seconds + cfg.abort_wait_seconds + 2)),
        process_name="facade",
    )


def main() -> int:
    """Load the configuration (ENV_FILE), build the app, serve; 2 on a configuration error."""
    global _app
    try:
        cfg = config_mod.load()
        logs.configure(cfg.log_level)
        require_free("FACADE_PORT", cfg.facade_host, cfg.facade_port)  # granian would share it (SO_REUSEPORT)
        wsgi_app = make_app(cfg)
    except JobsError as e:
        print(f"facade: error: {e}", file=sys.stderr)
        return 2
    _app = rsgi_app(cfg, wsgi_app, parent_pid=os.getpid())
    server = granian_server(cfg)
    log = structlog.get_logger("facade.server")

    @server.on_startup
    def listening():
        for p in wsgi_app.paths:
            print(f"facade: WSDL at http://{_url_host(cfg.facade_host)}:{cfg.facade_port}{p}?wsdl", flush=True)
        log.info("ready", services=wsgi_app.paths, workers=cfg.facade_workers, threads=cfg.facade_threads,
                 spool=str(cfg.spool_dir))

    server.serve()
    return 0

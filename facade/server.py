"""`python -m facade`: the façade under gunicorn, configured from the env file (ENV_FILE).

gunicorn is driven from code (BaseApplication) so there is one entry point
and every setting comes from jobs.config. Workers are gthread: a request that
waits (abortService polls for up to ABORT_WAIT_SECONDS; a slow authentication
manager costs up to AUTH_TIMEOUT_SECONDS per call) blocks one thread, not the
whole worker, so polls keep being answered. The app is built before forking
(preload), so a bad configuration or definition stops start-up with its message.
"""
from __future__ import annotations

import logging
import sys

import structlog
from gunicorn import glogging

from jobs import config as config_mod
from jobs import logs
from jobs.errors import JobsError

from .app import make_app

THREADS_PER_WORKER = 8


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _logconfig(level: str) -> dict:
    """gunicorn's and spyne's stdlib records as JSON lines on stderr, like our structlog events."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": structlog.stdlib.ProcessorFormatter,
            "foreign_pre_chain": [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                                  structlog.processors.TimeStamper(fmt="iso", utc=True)],
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                           structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # spyne logs each fault with a traceback and malformed bodies in full; we log faults ourselves
            "spyne": {"level": "CRITICAL", "handlers": [], "propagate": True},
        },
    }


class FacadeLogger(glogging.Logger):
    """gunicorn's logger, minus the per-request cost of an access log that is configured off.

    gunicorn builds every request's access-log entry whenever a logconfig_dict
    is set, even with gunicorn.access at WARNING as here (~2 % of a poll).
    """

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def gunicorn_options(cfg: config_mod.Config) -> dict:
    """Everything but the start-up hook; request limits keep hostile headers small."""
    return {
        "bind": [f"{_url_host(cfg.facade_host)}:{cfg.facade_port}"],
        "workers": cfg.facade_workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "preload_app": True,
        "proc_name": "facade",
        # a request is bounded by the auth timeout (a few calls) and the abort wait
        "timeout": int(max(30, 6 * cfg.auth_timeout_seconds + cfg.abort_wait_seconds + 10)),
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "loglevel": cfg.log_level,
        "logconfig_dict": _logconfig(cfg.log_level),
        "accesslog": None,
        "logger_class": FacadeLogger,
        "control_socket_disable": True,
    }


def main() -> int:
    """Load the configuration (ENV_FILE), build the app, serve; 2 on a configuration error."""
    try:
        cfg = config_mod.load()
        logs.configure(cfg.log_level)
        app = make_app(cfg)
    except JobsError as e:
        print(f"facade: error: {e}", file=sys.stderr)
        return 2
    from gunicorn.app.base import BaseApplication

    paths = app.paths
    log = structlog.get_logger("facade.server")

    def when_ready(server):
        for listener in server.LISTENERS:
            host, port = listener.sock.getsockname()[:2]
            for p in paths:
                print(f"facade: WSDL at http://{_url_host(host)}:{port}{p}?wsdl", flush=True)
        log.info("ready", services=paths, workers=cfg.facade_workers, spool=str(cfg.spool_dir))

    options = {**gunicorn_options(cfg), "when_ready": when_ready}

    class FacadeServer(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    FacadeServer().run()
    return 0

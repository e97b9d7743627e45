"""Serving a WSGI app for the benchmark: under the façade's own server, or under the previous one.

`python -m bench.servers --app floor|waiter|facade --server granian|gunicorn --port P`
(ENV_FILE as for the façade). granian serves exactly as the façade does
(facade.server: the RSGI bridge, the same workers, threads and timeouts);
gunicorn serves with the gthread settings the façade used before the switch
(2 workers × 8 threads), so the two can be compared in one run (S9).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from facade import server as facade_server
from jobs import config as config_mod

# the façade's gunicorn settings until it moved to granian, kept for the comparison
GUNICORN_OPTIONS = {
    "worker_class": "gthread", "threads": 8, "preload_app": True, "timeout": 40, "graceful_timeout": 10,
    "keepalive": 5, "limit_request_line": 8190, "limit_request_fields": 100, "limit_request_field_size": 8190,
    "accesslog": None, "control_socket_disable": True,
    "logconfig_dict": {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}},
}


def make(app_name: str, cfg: config_mod.Config):
    if app_name == "facade":
        from facade.app import make_app
        return make_app(cfg)
    from . import baseline_waiter
    return baseline_waiter.floor_app if app_name == "floor" else baseline_waiter.make_app()


def serve_gunicorn(app, cfg: config_mod.Config, port: int, name: str) -> None:
    from gunicorn.app.base import BaseApplication
    options = {**GUNICORN_OPTIONS, "bind": [f"127.0.0.1:{port}"], "workers": cfg.facade_workers, "proc_name": name}

    class Server(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Server().run()


def serve_granian(app, cfg: config_mod.Config, port: int) -> None:
    import dataclasses
    cfg = dataclasses.replace(cfg, facade_host="127.0.0.1", facade_port=port)
    facade_server._app = facade_server.rsgi_app(cfg, app, parent_pid=os.getpid())
    facade_server.granian_server(cfg).serve()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.servers")
    p.add_argument("--app", choices=("floor", "waiter", "facade"), required=True)
    p.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log-folder", default="/tmp/waiter", help="the tutorial waiter's status folders")
    args = p.parse_args(argv)
    from . import baseline_waiter
    baseline_waiter.WAITER_LOG_FOLDER = args.log_folder
    cfg = config_mod.load()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("spyne", "suds"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    app = make(args.app, cfg)
    if args.server == "gunicorn":
        serve_gunicorn(app, cfg, args.port, f"{args.app}-gunicorn")
    else:
        serve_granian(app, cfg, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

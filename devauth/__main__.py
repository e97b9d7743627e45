"""Command line of the development authentication manager.

    python -m devauth serve [--host H] [--port P] [--users-file F] [--workers N]
                            [--token-ttl SECONDS] [--demo]
    python -m devauth adduser USERNAME --project P [--project P2 ...] [--role R ...]
                              [--password-stdin] [--replace] [--users-file F]

Why gunicorn, programmatically: the facade and the real platform talk to the
authentication manager concurrently, so it runs with several worker processes
(tokens live in sqlite, see devauth.tokens); starting gunicorn from here keeps
one entry point (``devauth``) and takes defaults from ``jobs.config``.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import structlog

from jobs.errors import JobsError
from jobs.ports import require_free

from . import tokens as tokens_mod
from .service import SERVICE_PATH, make_wsgi_app
from .users import (
    DEFAULT_ROLES,
    UserExists,
    add_user,
    demo_credentials_path,
    ensure_demo_user,
    load_users,
)

log = structlog.get_logger("devauth")


def _config():
    from jobs import config

    return config.load()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="devauth", description="Development AuthManager (SOAP) for the SemWES/CloudFlow platform."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the SOAP service under gunicorn")
    s.add_argument("--host", help="listen address (default: DEVAUTH_HOST)")
    s.add_argument("--port", type=int, help="listen port (default: DEVAUTH_PORT; 0 = any free port)")
    s.add_argument("--users-file", type=Path, help="users file (default: DEVAUTH_USERS_FILE)")
    s.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: 2)")
    s.add_argument("--token-ttl", type=float,
                   help=f"session token lifetime in seconds (default: {tokens_mod.TTL_ENV} or 86400)")
    s.add_argument("--demo", action="store_true",
                   help="ensure user 'demo' in project 'demo'; its password goes to "
                        "demo-credentials.txt next to the users file")

    a = sub.add_parser("adduser", help="create a user in the users file")
    a.add_argument("username")
    a.add_argument("--project", action="append", required=True,
                   help="project the user may log in to (repeatable)")
    a.add_argument("--role", action="append",
                   help=f"role in every given project (repeatable; default: {', '.join(DEFAULT_ROLES)})")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    a.add_argument("--replace", action="store_true", help="replace an existing user")
    a.add_argument("--users-file", type=Path, help="users file (default: DEVAUTH_USERS_FILE)")
    return p


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise ValueError("stdin is not a terminal: pass the password with --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise ValueError("passwords do not match")
    return first


def cmd_adduser(args) -> int:
    users_file = (args.users_file or _config().devauth_users_file).resolve()
    password = _read_password(args.password_stdin).rstrip("\r")
    roles = args.role or list(DEFAULT_ROLES)
    add_user(users_file, args.username, password, {p: roles for p in args.project},
             replace=args.replace)
    print(f"devauth: user {args.username!r} saved in {users_file} "
          f"(projects: {', '.join(args.project)}; roles: {', '.join(roles)})")
    return 0


def _gunicorn_app(wsgi, options: dict):
    from gunicorn.app.base import BaseApplication

    class DevauthGunicorn(BaseApplication):
        """gunicorn driven from code: fixed options, an already-built WSGI app."""

        def load_config(self):
            for key, value in options.items():
                if key in self.cfg.settings:  # e.g. control_socket_disable is gunicorn >= 25.1
                    self.cfg.set(key, value)

        def load(self):
            return wsgi

    return DevauthGunicorn()


def cmd_serve(args) -> int:
    from . import _logging

    cfg = _config()
    host = args.host or cfg.devauth_host
    port = cfg.devauth_port if args.port is None else args.port
    users_file = (args.users_file or cfg.devauth_users_file).resolve()
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in [0, 65535]")
    if not 1 <= args.workers <= 64:
        raise ValueError(f"--workers {args.workers}: must be in [1, 64]")
    require_free("--port" if args.port is not None else "DEVAUTH_PORT", host, port)  # gunicorn would retry for 5 s
    logconfig = _logging.configure(cfg.log_level)

    if args.demo:
        creds, changed = ensure_demo_user(users_file)
        where = demo_credentials_path(users_file)
        if changed:
            print(f"devauth: demo account: username={creds['username']} "
                  f"password={creds['password']} project={creds['project']} (saved in {where})",
                  flush=True)
        else:
            print(f"devauth: demo account unchanged; credentials in {where}", flush=True)
    users = load_users(users_file)  # fail fast on a malformed file
    if not users:
        log.warning("no_users", users_file=str(users_file),
                    hint="create users with 'devauth adduser' or start with --demo")

    wsgi = make_wsgi_app(users_file, token_ttl=args.token_ttl)
    ttl = wsgi.backend.store.ttl

    def when_ready(server):
        for listener in server.LISTENERS:
            addr = listener.sock.getsockname()
            print(f"devauth: WSDL at http://{_url_host(addr[0])}:{addr[1]}{SERVICE_PATH}?wsdl",
                  flush=True)
        log.info("ready", users_file=str(users_file), token_ttl=ttl, workers=args.workers)

    options = {
        "bind": [f"{_url_host(host)}:{port}"],
        "workers": args.workers,
        "worker_class": "sync",
        "preload_app": True,
        "proc_name": "devauth",
        "timeout": 30,
        "graceful_timeout": 5,
        "loglevel": cfg.log_level,
        "logconfig_dict": logconfig,
        "accesslog": None,
        "when_ready": when_ready,
        # gunicorn >= 24 opens a control socket at one fixed per-user path; several
        # servers (devauth, facade, tests) would fight over it.
        "control_socket_disable": True,
    }
    _gunicorn_app(wsgi, options).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``devauth``); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "adduser":
            return cmd_adduser(args)
        return cmd_serve(args)
    except (JobsError, ValueError, OSError) as e:
        print(f"devauth: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, UserExists) else 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

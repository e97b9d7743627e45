"""The operator console: a Starlette app over the spool, a peer of the façade and jobctl.

It reads only through jobs/ (console.index keeps the board in memory) and acts
only by dropping the same files they drop: a spec in incoming/ (submit), a
command in commands/ (kill, restart). It owns no job state, so it works
whether or not the supervisor is up. One process: the index and the event
streams live in it.

By role: console.board (the view model), console.routes (pages, API, actions),
console.auth (login and the gates), console.streams (server-sent events),
console.logs (reading a run's logs), console.formatting (filters, templates).
This module builds the app.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from jobs.proxies import TrustedProxies
from jobs.config import Config
from jobs.errors import ConfigError

from .board import Console
from .routes import routes
from .sessions import SessionStore, Sessions
from .streams import Broadcast

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def secret_key(path: Path) -> str:
    """The session-signing key; generated (mode 0600) on first start."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if len(key) < 32:
            raise ConfigError(f"CONSOLE_SECRET_FILE={path}: holds fewer than 32 characters; delete it to "
                              "have a new key generated") from None
        return key
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return secret_key(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
    return secret_key(path)


class SecurityHeaders:
    """Pure ASGI (a BaseHTTPMiddleware would buffer the event streams)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)
        await self.app(scope, receive, with_headers)


def sessions_file(cfg: Config) -> Path:
    """The server-side sessions live beside the signing key (the console's own directory)."""
    return cfg.console_secret_file.with_name(cfg.console_secret_file.name + ".sessions.json")


def end_streams_on_stop_signals(console: Console) -> None:
    """SIGTERM/SIGINT end the event streams at once, then granian's own handler runs as before.

    granian tells the app it stops (lifespan shutdown) only once every open
    response has ended, and an event stream never ends by itself: the console
    ran on until SIGKILL. The handler is chained at the Python level; asyncio's
    own (granian's, through loop.add_signal_handler) still runs from the loop.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(console.stop_streams)
            if callable(previous):
                previous(signum, frame)
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (an app run in a test's thread): nothing to chain
            return


def make_app(cfg: Config) -> Starlette:
    """The console's Starlette app for cfg (one process: the index lives in it)."""
    console = Console(cfg)
    console.refresh()
    console.index.sample_history()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(console.refresher())
        end_streams_on_stop_signals(console)
        try:
            yield
        finally:
            task.cancel()
            await console.close_streams()  # granian waits for every open response before it exits

    key = secret_key(cfg.console_secret_file)
    app = Starlette(routes=routes(), lifespan=lifespan, middleware=[
        Middleware(SecurityHeaders),
        Middleware(Sessions, secret_key=key, trusted_proxies=TrustedProxies(cfg.forwarded_allow_ips)),
    ])
    app.state.console = console
    app.state.sessions = SessionStore(sessions_file(cfg))
    app.state.broadcast = Broadcast(console)
    return app

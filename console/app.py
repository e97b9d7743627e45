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
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

from jobs.config import Config
from jobs.errors import ConfigError

from .board import Console
from .routes import routes
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


def make_app(cfg: Config) -> Starlette:
    """The console's Starlette app for cfg (one process: the index lives in it)."""
    console = Console(cfg)
    console.refresh()
    console.index.sample_history()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(console.refresher())
        try:
            yield
        finally:
            task.cancel()

    app = Starlette(routes=routes(), lifespan=lifespan, middleware=[
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret_key(cfg.console_secret_file), session_cookie="console_session",
                   max_age=12 * 3600, same_site="strict", https_only=False),
    ])
    app.state.console = console
    app.state.broadcast = Broadcast(console)
    return app

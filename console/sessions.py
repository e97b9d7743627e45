"""The console's sessions: a signed cookie that names a server-side session, and the store that can revoke it.

The cookie (signed with itsdangerous, HttpOnly, SameSite=Lax, Secure behind
HTTPS) carries what pages show (who, CSRF token, flash) and a random session
id. The platform session token stays here, in `SessionStore`, a small file
beside the signing key (mode 0600, replaced atomically), so logging out
revokes the id for every copy of the cookie, and a restart keeps who is
logged in. One console process owns the file.

Lax, not Strict: a link from the workflow manager, a ticket or a chat must
land on the page logged in; every POST carries the CSRF token anyway. A
browser that is not logged in gets its data (the login form's CSRF token) in
another cookie, so a login page never overwrites a valid session.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from base64 import b64decode, b64encode
from pathlib import Path

import itsdangerous
import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection

from jobs.proxies import TrustedProxies, forwarded_scheme

SESSION_COOKIE = "console_session"   # a logged-in session: names an id in the store
ANONYMOUS_COOKIE = "console_login"   # before logging in: the login form's CSRF token
MAX_AGE = 12 * 3600

log = structlog.get_logger("console")


class SessionStore:
    """Session id -> (platform session token, expiry), in memory and in `path`."""

    def __init__(self, path: Path, clock=time.time):
        self.path = path
        self.clock = clock
        self._sessions: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_bytes())
            return {str(k): {"token": str(v["token"]), "expires": float(v["expires"])} for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("sessions_unreadable", path=str(self.path), error=str(e))  # everyone logs in again
            return {}

    def _write(self) -> None:
        now = self.clock()
        self._sessions = {k: v for k, v in self._sessions.items() if v["expires"] > now}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sessions-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._sessions, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def create(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = {"token": token, "expires": self.clock() + MAX_AGE}
        self._write()
        return sid

    def token(self, sid: object) -> str | None:
        """The platform token of a live session; None once revoked or expired."""
        entry = self._sessions.get(sid) if isinstance(sid, str) else None
        return entry["token"] if entry and entry["expires"] > self.clock() else None

    def revoke(self, sid: object) -> None:
        if isinstance(sid, str) and self._sessions.pop(sid, None) is not None:
            self._write()


class Sessions:
    """Pure ASGI session middleware (a BaseHTTPMiddleware would buffer the event streams): scope["session"]
    is a dict loaded from the cookie; when a response starts, a changed dict is written back to the cookie
    it belongs in (SESSION_COOKIE once it has an `id`, else ANONYMOUS_COOKIE)."""

    def __init__(self, app, secret_key: str, trusted_proxies: TrustedProxies):
        self.app = app
        self.signer = itsdangerous.TimestampSigner(secret_key)
        self.proxies = trusted_proxies

    def _load(self, connection: HTTPConnection) -> tuple[str, dict]:
        for name in (SESSION_COOKIE, ANONYMOUS_COOKIE):
            raw = connection.cookies.get(name)
            if not raw:
                continue
            try:
                data = json.loads(b64decode(self.signer.unsign(raw.encode(), max_age=MAX_AGE)))
            except (itsdangerous.BadSignature, ValueError):
                continue
            if isinstance(data, dict):
                return name, data
        return "", {}

    def https(self, scope) -> bool:
        """The browser talks HTTPS to us, or to a proxy we trust (FORWARDED_ALLOW_IPS) that says so."""
        if scope.get("scheme") == "https":
            return True
        peer = (scope.get("client") or (None,))[0]
        if not self.proxies.trusts(peer):
            return False
        proto = dict(scope.get("headers") or []).get(b"x-forwarded-proto", b"").decode("latin-1")
        return forwarded_scheme(proto) == "https"

    def _cookie(self, name: str, value: str, max_age: int, secure: bool) -> str:
        return f"{name}={value}; path=/; Max-Age={max_age}; httponly; samesite=lax" + ("; secure" if secure else "")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loaded_from, data = self._load(HTTPConnection(scope))
        scope["session"] = dict(data)

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                session = scope["session"]
                if session != data:
                    headers = MutableHeaders(scope=message)
                    secure = self.https(scope)
                    target = SESSION_COOKIE if session.get("id") else ANONYMOUS_COOKIE
                    if session:
                        value = self.signer.sign(b64encode(json.dumps(session).encode())).decode()
                        headers.append("set-cookie", self._cookie(target, value, MAX_AGE, secure))
                    if loaded_from and (loaded_from != target or not session):
                        headers.append("set-cookie", self._cookie(loaded_from, '""', 0, secure))
                    headers.add_vary_header("Cookie")
            await send(message)
        await self.app(scope, receive, with_cookie)

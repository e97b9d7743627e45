"""Who is logged in, what they may see, and the CSRF check every state-changing request passes.

The session (console.sessions: a signed cookie naming a server-side session id)
holds what the authentication manager said at login; the platform session
token stays in the server's SessionStore, so logging out revokes every copy
of the cookie. The token is asked about again every AUTH_CACHE_SECONDS, so a
revoked token stops working here too.

CSRF: a random per-session token, sent back by every form (hidden field) or
script (X-CSRF-Token header) and compared with hmac.compare_digest. The
login form gets one before anyone is logged in, so a foreign site cannot log
a browser into an account of its choosing either.
"""
from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from jobs.authclient import AuthManagerClient, AuthUnavailable, Session

from .sessions import SessionStore

OPERATOR_ROLES = frozenset({"operator", "admin"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class User:
    username: str
    project: str
    roles: tuple[str, ...]
    operator: bool

    def may_see(self, project: str | None) -> bool:
        """Operators see every job; others their project's (a job without one is an operator's)."""
        return self.operator or (project is not None and project == self.project)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, sent: object) -> bool:
    expected = request.session.get("csrf")
    return isinstance(sent, str) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def store(request: Request) -> SessionStore:
    return request.app.state.sessions


def log_in(request: Request, session: Session, operators: tuple[str, ...]) -> User:
    operator = bool(OPERATOR_ROLES & {r.lower() for r in session.roles}) or session.username in operators
    store(request).revoke(request.session.get("id"))  # logging in again ends the session it replaces
    request.session.clear()  # a new session: new id and CSRF token, nothing left from before the login
    request.session.update({"id": store(request).create(session.token), "username": session.username,
                            "project": session.project, "roles": list(session.roles), "operator": operator,
                            "checked_at": time.time(), "csrf": secrets.token_urlsafe(32)})
    return user_of(request)


def log_out(request: Request) -> None:
    """Revoke the session on the server (a copy of the cookie is worth nothing from now on) and forget it."""
    store(request).revoke(request.session.get("id"))
    request.session.clear()


def user_of(request: Request) -> User | None:
    """Who the cookie's session names, while the store still holds it (not logged out, not expired)."""
    s = request.session
    if store(request).token(s.get("id")) is None:
        return None
    return User(s["username"], s["project"], tuple(s.get("roles", ())), bool(s.get("operator")))


async def current_user(request: Request, auth: AuthManagerClient, recheck_seconds: float) -> User | None:
    """The logged-in user, once their token is still valid (asked again every recheck_seconds).

    Fails closed: a token the authentication manager no longer knows ends the
    session; if it cannot be asked, AuthUnavailable propagates (HTTP 503).
    """
    user = user_of(request)
    if user is None:
        return None
    if time.time() - request.session.get("checked_at", 0) >= recheck_seconds:
        if not await run_in_threadpool(auth.valid, store(request).token(request.session["id"])):
            log_out(request)
            return None
        request.session["checked_at"] = time.time()
    return user


__all__ = ["AuthUnavailable", "CSRF_FIELD", "CSRF_HEADER", "User", "csrf_ok", "csrf_token", "current_user",
           "log_in", "log_out", "user_of"]

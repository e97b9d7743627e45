"""Logging in and out, and the two gates every endpoint passes: `login_required` and, for what changes
anything, `action` (the session's CSRF token sent back). Who the user is lives in console.access."""
from __future__ import annotations

import hmac
from functools import wraps
from urllib.parse import urlencode

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from jobs.authclient import AuthRefused, AuthUnavailable

from . import access
from .board import Console

log = structlog.get_logger("console")


def console_of(request: Request) -> Console:
    return request.app.state.console


def text(status: int, message: str, api: bool = False) -> Response:
    """A refusal: JSON {"error": ...} for the API and event streams, plain text for pages."""
    return JSONResponse({"error": message}, status) if api else Response(message + "\n", status,
                                                                         media_type="text/plain")


def login_required(api: bool = False):
    """Pages redirect to the login page, API and event streams answer 401."""
    def decorate(endpoint):
        @wraps(endpoint)
        async def wrapper(request: Request):
            c = console_of(request)
            try:
                user = await access.current_user(request, c.auth, c.cfg.auth_cache_seconds)
            except AuthUnavailable as e:
                return text(503, str(e), api)
            if user is None:
                if api:
                    return JSONResponse({"error": "log in first"}, 401)
                asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": asked}), 303)
            request.state.user = user
            c.fresh()
            return await endpoint(request)
        return wrapper
    return decorate


def action(endpoint):
    """Every state-changing request: logged in, and the session's CSRF token sent back."""
    @login_required()
    @wraps(endpoint)
    async def wrapper(request: Request):
        form = await request.form()
        if not access.csrf_ok(request, form.get(access.CSRF_FIELD) or request.headers.get(access.CSRF_HEADER)):
            return text(403, "refused: the form's CSRF token is missing or wrong; reload the page and try again")
        request.state.form = form
        return await endpoint(request)
    return wrapper


async def login_page(request: Request):
    c = console_of(request)
    if access.user_of(request) is not None:
        return RedirectResponse("/", 303)
    return c.render(request, "login.html", next=_next(request.query_params.get("next")))


async def login(request: Request):
    c = console_of(request)
    form = await request.form()
    if not access.csrf_ok(request, form.get(access.CSRF_FIELD)):
        return text(403, "refused: the login form's CSRF token is missing or wrong; reload the page")
    username, password, project = (str(form.get(k) or "").strip() for k in ("username", "password", "project"))
    nxt = _next(form.get("next"))
    if not (username and password and project):
        return c.render(request, "login.html", 400, error="username, password and project are required",
                        username=username, project=project, next=nxt)
    try:
        session = await run_in_threadpool(c.auth.login, username, password, project)
    except AuthRefused as e:
        log.info("login_refused", username=username, project=project)
        return c.render(request, "login.html", 401, error=f"login refused: {e}", username=username,
                        project=project, next=nxt)
    except AuthUnavailable as e:
        return c.render(request, "login.html", 503, error=str(e), username=username, project=project, next=nxt)
    user = access.log_in(request, session, c.cfg.console_operators)
    log.info("login", username=user.username, project=user.project, operator=user.operator)
    return RedirectResponse(nxt, 303)


def _next(value: object) -> str:
    """Only a local path: never a redirect to another site."""
    return value if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
        and "\\" not in value else "/"


@action
async def logout(request: Request):
    access.log_out(request)
    return RedirectResponse("/login", 303)


async def metrics_gate(request: Request) -> Response | None:
    """/metrics shows every project's counts: a scraper with the bearer token of CONSOLE_METRICS_TOKEN_FILE,
    or a logged-in operator; None lets the request through."""
    c = console_of(request)
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if c.metrics_token and scheme.lower() == "bearer":
        if hmac.compare_digest(sent.strip().encode(), c.metrics_token.encode()):
            return None
        return JSONResponse({"error": "wrong bearer token"}, 401, headers={"www-authenticate": "Bearer"})
    try:
        user = await access.current_user(request, c.auth, c.cfg.auth_cache_seconds)
    except AuthUnavailable as e:
        return text(503, str(e), True)
    if user is None:
        return JSONResponse({"error": "log in as an operator, or send the bearer token of CONSOLE_METRICS_TOKEN_FILE"},
                            401, headers={"www-authenticate": "Bearer"})
    if not user.operator:
        return JSONResponse({"error": "/metrics counts every project's jobs: operators only"}, 403)
    return None

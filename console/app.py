"""The operator console: a Starlette app over the spool, a peer of the façade and jobctl.

It reads only through jobs/ (console.index keeps the board in memory) and acts
only by dropping the same files they drop: a spec in incoming/ (submit), a
command in commands/ (kill, restart). It owns no job state, so it works
whether or not the supervisor is up. One process: the index and the event
streams live in it.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobs.authclient import AuthManagerClient, AuthRefused, AuthUnavailable
from jobs.config import Config
from jobs.definitions import Definition, load_definitions
from jobs.errors import ConfigError, SpecError
from jobs.runstate import RunState, signal_name, stop_note
from jobs.spec import JobSpec
from jobs.spool import NotRegularFile, Spool, open_regular, read_json, storage_refused, validate_service_id
from jobs.supervisorinfo import supervisor_status

from . import access
from .health import routes as health_routes
from .index import STATES, Index, Job

HERE = Path(__file__).resolve().parent
REFRESH_SECONDS = 0.25
IDLE_REFRESH_SECONDS = 2.0  # no event stream open: nobody sees a change at once, so a pass costs 8x less often
HISTORY_SECONDS = 5.0
PER_PAGE = 50
LOG_CHUNK = 64 * 1024
LOG_FIRST_BYTES = 256 * 1024   # a followed log starts with at most this much; the download has all
MAX_NOTIFICATIONS = 200
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}

log = structlog.get_logger("console")


def auth_wsdl(cfg: Config) -> str:
    """The authentication manager people log in with: the first of AUTH_MANAGERS, a full WSDL URL."""
    if not cfg.auth_managers:
        raise ConfigError("AUTH_MANAGERS is empty: set it to the WSDL URL of the platform's authentication manager "
                          "(the console logs people in with the first entry)")
    first = cfg.auth_managers[0]
    if not first.startswith(("http://", "https://")) or "?" not in first:
        raise ConfigError(f"AUTH_MANAGERS: the console logs in with the first entry, which must be a full WSDL "
                          f"URL such as https://auth.example/authManager/AuthManager?wsdl, not {first[:100]!r}")
    return first


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


class Console:
    """What the endpoints share: configuration, spool, definitions, index, auth client, templates."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.spool = Spool(cfg.spool_dir).ensure()
        self.definitions: dict[str, Definition] = load_definitions(cfg.definitions_dir)
        self.wsdl = auth_wsdl(cfg)
        self.auth = AuthManagerClient(self.wsdl, cfg.auth_timeout_seconds)
        self.index = Index(self.spool, self.definitions)
        self._health: dict[str, Any] | None = None
        self._health_event: tuple[dict | None, bytes] = (None, b"")
        self._batches: dict[tuple, bytes] = {}
        self._batches_seq = -1
        self.watchers = 0                 # event streams open
        self._watched = asyncio.Event()   # set when one opens: the idle wait ends at once
        self._refreshed_at = 0.0
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.filters.update(duration=duration, clock=clock, percent=percent)
        self.templates.globals.update(states=STATES, definitions=self.definitions)

    # -- background -----------------------------------------------------------
    async def refresher(self) -> None:
        """Keep the index current: a pass every REFRESH_SECONDS while an event stream is open, else every
        IDLE_REFRESH_SECONDS (a page or API request refreshes first: see fresh()); a history point every
        HISTORY_SECONDS."""
        last_sample = 0.0
        while True:
            try:
                self.refresh()
                if time.time() - last_sample >= HISTORY_SECONDS:
                    last_sample = time.time()
                    self.index.sample_history(last_sample)
            except Exception:  # noqa: BLE001 - a bad pass must not stop the board
                log.exception("refresh_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watched.wait(), REFRESH_SECONDS if self.watchers else IDLE_REFRESH_SECONDS)
            self._watched.clear()

    def refresh(self) -> None:
        self.index.refresh()
        self._health = self._measure_health()
        self._refreshed_at = time.monotonic()

    def fresh(self) -> None:
        """Before answering a request: a pass now if the last one is older than REFRESH_SECONDS."""
        if time.monotonic() - self._refreshed_at > REFRESH_SECONDS:
            self.refresh()

    @contextlib.contextmanager
    def watching(self):
        """While an event stream is open, the index is refreshed every REFRESH_SECONDS."""
        self.watchers += 1
        self._watched.set()
        try:
            yield
        finally:
            self.watchers -= 1

    # -- views ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The supervisor's health as of the last refresh pass (measured once a pass, not per stream)."""
        if self._health is None:
            self._health = self._measure_health()
        return self._health

    def _measure_health(self) -> dict[str, Any]:
        sup = supervisor_status(self.spool, None, self.cfg.reconcile_seconds)
        try:
            free = shutil.disk_usage(self.spool.root).free
        except OSError:
            free = None
        return {"supervisor": "hung" if sup.hung else "up" if sup.running else "down",
                "pid": sup.pid, "heartbeat_age_seconds": None if sup.heartbeat_age is None else round(sup.heartbeat_age, 1),
                "problem": sup.problem, "queue_length": sum(1 for j in self.index.live() if j.state == "QUEUED"),
                "free_bytes": free, "free": _bytes(free), "event_streams": self.watchers}

    def changes(self, since: int, user: access.User) -> bytes:
        """The encoded events for what changed after `since` that `user` may see; b"" if nothing.

        Every stream wakes at the same change with the same `since`, so a batch
        is made once per (since, what its viewer may see) and sent by all.
        """
        seq = self.index.seq
        if self._batches_seq != seq:
            self._batches, self._batches_seq = {}, seq
        key = (since, None if user.operator else user.project)
        batch = self._batches.get(key)
        if batch is None:
            now = time.time()
            rows, moved = self.index.changed_since(since)
            rows = [j.json_text(now) for j in rows if user.may_see(j.project)]
            moved = {j.sid: j.progress for j in moved if user.may_see(j.project)}
            events = []
            if moved:
                events.append(ServerSentEvent(json.dumps(moved, separators=(",", ":")), event="progress",
                                              id=None if rows else str(seq)))
            if rows:
                events.append(ServerSentEvent("[" + ",".join(rows) + "]", event="jobs", id=str(seq)))
            batch = self._batches[key] = b"".join(e.encode() for e in events)
        return batch

    def health_event(self) -> bytes:
        """The `health` event of the last pass, encoded once for every stream."""
        health = self.health()
        if self._health_event[0] != health:
            self._health_event = (health, ServerSentEvent(json.dumps(health), event="health").encode())
        return self._health_event[1]

    def visible(self, user: access.User, sid: str) -> Job | None:
        try:
            validate_service_id(sid)
        except SpecError:
            return None
        job = self.index.get(sid)
        if job is None and self.spool.exists(sid):  # newer than the last pass
            self.index.refresh()
            job = self.index.get(sid)
        return job if job is not None and user.may_see(job.project) else None

    def board(self, user: access.User, params) -> dict[str, Any]:
        f = {k: (params.get(k) or "").strip() for k in ("state", "job", "project", "user", "q")}
        jobs = [j for j in self.index.live() if user.may_see(j.project)
                and (not f["state"] or j.state == f["state"]) and (not f["job"] or j.job == f["job"])
                and (not f["project"] or j.project == f["project"]) and (not f["user"] or j.username == f["user"])
                and (not f["q"] or f["q"].lower() in j.sid.lower())]
        jobs.sort(key=lambda j: (j.submitted_at, j.sid), reverse=True)
        pages = max(1, -(-len(jobs) // PER_PAGE))
        try:
            page = min(max(1, int(params.get("page") or 1)), pages)
        except ValueError:
            page = 1
        shown = jobs[(page - 1) * PER_PAGE: page * PER_PAGE]
        now = time.time()
        return {"filters": f, "page": page, "pages": pages, "total": len(jobs), "now": now,
                "jobs": [j.as_json(now) for j in shown], "seq": self.index.seq,
                "query": {k: v for k, v in f.items() if v}}

    def detail(self, job: Job) -> dict[str, Any]:
        """Everything the job page shows: the row, every attempt, the inputs, the notifications."""
        now = time.time()
        files = self.spool.files(job.sid)
        d = self.definitions.get(job.job)
        try:
            rs = RunState.from_dict(read_json(files.state))
        except (FileNotFoundError, SpecError):
            rs = None
        grace = d.abort_grace_s if d else None
        attempts = []
        for h in (rs.history if rs else []):
            attempts.append({"attempt": h.attempt, "started_at": h.started_at, "finished_at": h.finished_at,
                             "exit_code": h.exit_code, "signal": h.signal,
                             "signal_name": None if h.signal is None else signal_name(h.signal),
                             "stopped": stop_note(h.signal, h.killed, grace) if (h.killed or h.signal) else "",
                             "reason": h.reason, "logs": self._logs(job.sid, h.attempt)})
        if rs is not None and not any(a["attempt"] == rs.attempt for a in attempts):
            attempts.append({"attempt": rs.attempt, "started_at": rs.started_at, "finished_at": rs.finished_at,
                             "exit_code": rs.exit_code, "signal": rs.signal,
                             "signal_name": None if rs.signal is None else signal_name(rs.signal),
                             "stopped": rs.stopped_how(grace) or "", "reason": rs.reason,
                             "logs": self._logs(job.sid, rs.attempt), "current": True})
        return {**job.as_json(now), "attempt_history": attempts, "inputs": job.inputs,
                "timestamps": {"submitted": job.submitted_at, "queued": job.queued_at, "started": job.started_at,
                               "finished": job.finished_at, "updated": rs.updated_at if rs else None},
                "definition_inputs": [{"name": i.name, "type": i.type, "default": i.default, "min": i.min,
                                       "max": i.max, "description": i.description} for i in (d.inputs if d else ())],
                "notifications": self._notifications(files.notifications),
                "progress_samples": [[round(t, 2), p] for t, p in job.samples]}

    def _logs(self, sid: str, attempt: int) -> dict[str, int | None]:
        a = self.spool.files(sid).attempt(attempt)
        sizes = {}
        for stream, path in (("stdout", a.stdout), ("stderr", a.stderr)):
            try:
                sizes[stream] = os.lstat(path).st_size
            except OSError:
                sizes[stream] = None
        return sizes

    @staticmethod
    def _notifications(path: str) -> list[dict[str, Any]]:
        try:
            with open_regular(path) as f:
                lines = f.read(256 * 1024).decode("utf-8", "replace").splitlines()
        except (FileNotFoundError, NotRegularFile):
            return []
        out = []
        for line in lines[-MAX_NOTIFICATIONS:]:
            try:
                n = json.loads(line)
                out.append({"at": float(n["at"]), "message": str(n["message"])})
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def render(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        user = access.user_of(request)
        html = self.templates.get_template(name).render(
            request=request, user=user, csrf=access.csrf_token(request), health=self.health(),
            flash=request.session.pop("flash", None), **context)
        return HTMLResponse(html, status)

    def submit(self, user: access.User, d: Definition, form) -> str:
        """Validate as the SOAP start does (same messages), then drop the spec; the new serviceID."""
        sid = (form.get("service_id") or "").strip() or f"console-{secrets.token_hex(6)}"
        try:
            validate_service_id(sid)
        except SpecError as e:
            raise SubmitError(str(e)) from None
        raw = {}
        for i in d.inputs:
            value = form.get(f"input.{i.name}")
            if value is None or value == "":
                continue  # absent, as an empty element is for the SOAP start: the default applies
            raw[i.name] = {"true": True, "false": False}.get(value, value) if i.type == "boolean" else value
        try:
            inputs = d.validate_inputs(raw)
        except SpecError as e:
            raise SubmitError(f"invalid input {e}") from None
        spec = JobSpec(service_id=sid, job=d.name, inputs=inputs, auth_url=self.wsdl,
                       owner={"username": user.username, "project": user.project})
        try:
            if not self.spool.submit(spec.to_json(), sid):
                raise SubmitError(f"serviceID {sid!r} is already taken; choose another or leave it empty")
        except OSError as e:
            if storage_refused(e) is None:
                raise
            raise SubmitError(f"the spool refused the write ({storage_refused(e)}); nothing was submitted") from None
        log.info("job_submitted", service_id=sid, job=d.name, inputs=inputs, username=user.username,
                 project=user.project)
        return sid


class SubmitError(Exception):
    """A submit refused with a message for the form."""


# -- formatting -------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def clock(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.0f} %"


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


# -- endpoints --------------------------------------------------------------------

def _console(request: Request) -> Console:
    return request.app.state.console


def login_required(api: bool = False):
    """Pages redirect to the login page, API and event streams answer 401."""
    def decorate(endpoint):
        @wraps(endpoint)
        async def wrapper(request: Request):
            c = _console(request)
            try:
                user = await access.current_user(request, c.auth, c.cfg.auth_cache_seconds)
            except AuthUnavailable as e:
                return _text(503, str(e), api)
            if user is None:
                if api:
                    return JSONResponse({"error": "log in first"}, 401)
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
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
            return _text(403, "refused: the form's CSRF token is missing or wrong; reload the page and try again")
        request.state.form = form
        return await endpoint(request)
    return wrapper


def _text(status: int, text: str, api: bool = False) -> Response:
    return JSONResponse({"error": text}, status) if api else Response(text + "\n", status, media_type="text/plain")


async def login_page(request: Request):
    c = _console(request)
    if access.user_of(request) is not None:
        return RedirectResponse("/", 303)
    return c.render(request, "login.html", next=_next(request.query_params.get("next")))


async def login(request: Request):
    c = _console(request)
    form = await request.form()
    if not access.csrf_ok(request, form.get(access.CSRF_FIELD)):
        return _text(403, "refused: the login form's CSRF token is missing or wrong; reload the page")
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
    request.session.clear()
    return RedirectResponse("/login", 303)


@login_required()
async def board_page(request: Request):
    c = _console(request)
    return c.render(request, "board.html", **c.board(request.state.user, request.query_params),
                    history=list(c.index.history))


@login_required()
async def board_rows(request: Request):
    c = _console(request)
    return c.render(request, "_board.html", **c.board(request.state.user, request.query_params),
                    history=list(c.index.history))


@login_required(api=True)
async def api_jobs(request: Request):
    c = _console(request)
    b = c.board(request.state.user, request.query_params)
    return JSONResponse({k: b[k] for k in ("jobs", "page", "pages", "total", "seq")})


@login_required(api=True)
async def api_job(request: Request):
    c = _console(request)
    job = c.visible(request.state.user, request.path_params["sid"])
    if job is None:
        return JSONResponse({"error": "no such job"}, 404)
    return JSONResponse(c.detail(job))


@login_required(api=True)
async def api_health(request: Request):
    c = _console(request)
    return JSONResponse({**c.health(), "history": [{"at": t, "queued": q, "running": r, "finished": f}
                                                   for t, q, r, f in c.index.history]})


def _not_found(c: Console, request: Request) -> Response:
    return c.render(request, "error.html", 404, message=f"No job {request.path_params['sid']!r} that you may see.")


@login_required()
async def job_page(request: Request):
    c = _console(request)
    job = c.visible(request.state.user, request.path_params["sid"])
    if job is None:
        return _not_found(c, request)
    requested = request.session.pop("requested", None)
    requested = requested if isinstance(requested, list) and requested[:1] == [job.sid] else None
    return c.render(request, "job.html", job=c.detail(job), seq=c.index.seq, requested=requested)


@login_required()
async def job_summary(request: Request):
    c = _console(request)
    job = c.visible(request.state.user, request.path_params["sid"])
    if job is None:
        return _not_found(c, request)
    return c.render(request, "_job.html", job=c.detail(job))


@login_required()
async def job_log(request: Request):
    """The whole log of one attempt, as a download."""
    c = _console(request)
    sid, stream = request.path_params["sid"], request.path_params["stream"]
    job = c.visible(request.state.user, sid)
    if job is None or stream not in ("stdout", "stderr"):
        return _not_found(c, request)
    a = c.spool.files(sid).attempt(request.path_params["attempt"])
    try:
        f = open_regular(a.stdout if stream == "stdout" else a.stderr)
    except (FileNotFoundError, NotRegularFile):
        return _text(404, "no such log")

    def chunks():
        with f:
            while data := f.read(LOG_CHUNK):
                yield data
    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="{sid}-attempt{a.number}-{stream}.log"'})


@action
async def job_command(request: Request):
    c = _console(request)
    user = request.state.user
    sid, verb = request.path_params["sid"], request.path_params["verb"]
    job = c.visible(user, sid)
    if job is None or verb not in ("kill", "restart"):
        return _not_found(c, request)
    try:
        c.spool.send_command(sid, verb, origin=f"console:{user.username}")
    except OSError as e:
        if storage_refused(e) is None:
            raise
        request.session["flash"] = f"{verb} not sent: the spool refused the write ({storage_refused(e)})"
        return RedirectResponse(f"/jobs/{sid}", 303)
    h = c.health()
    log.info("command_sent", service_id=sid, verb=verb, username=user.username, supervisor=h["supervisor"])
    if h["supervisor"] == "up":
        request.session["flash"] = f"{verb} requested; waiting for the supervisor to apply it"
    else:
        request.session["flash"] = (f"{verb} queued: the supervisor is {h['supervisor']}; it will be applied "
                                    "when the supervisor runs again")
    c.index.refresh()  # the pending command is on the row from now on: its end is the outcome
    request.session["requested"] = [sid, verb, c.index.seq]
    return RedirectResponse(f"/jobs/{sid}", 303)


@login_required()
async def submit_page(request: Request):
    c = _console(request)
    d = c.definitions.get(request.path_params["job"])
    if d is None:
        return c.render(request, "error.html", 404, message="No such job type.")
    return c.render(request, "submit.html", d=d, values={})


@action
async def submit(request: Request):
    c = _console(request)
    d = c.definitions.get(request.path_params["job"])
    if d is None:
        return c.render(request, "error.html", 404, message="No such job type.")
    form = request.state.form
    try:
        sid = c.submit(request.state.user, d, form)
    except SubmitError as e:
        return c.render(request, "submit.html", 400, d=d, values=dict(form), error=str(e))
    c.index.refresh()
    h = c.health()
    request.session["flash"] = f"submitted {sid}" + ("" if h["supervisor"] == "up" else
                                                     f"; the supervisor is {h['supervisor']}: it will run when it starts")
    return RedirectResponse(f"/jobs/{sid}", 303)


# -- server-sent events -------------------------------------------------------------

def _since(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("since")


@login_required(api=True)
async def board_events(request: Request):
    """Every change to the jobs the user may see, and the supervisor's health (event `health`).

    Each wake-up sends `progress` ({serviceID: percent} for jobs whose
    percentage alone moved) and `jobs` (the whole rows of the others, in seq
    order); the last of them carries the id, the index's seq. A client that
    comes back with Last-Event-ID gets what changed since; one that has been
    away longer than the index remembers removals gets a snapshot.
    """
    c = _console(request)
    user = request.state.user
    try:
        last = int(_since(request) or "")
    except ValueError:
        last = None

    async def events():
        nonlocal last
        with c.watching():
            now = time.time()
            if last is None or last < c.index.floor or last > c.index.seq:
                yield {"event": "snapshot", "id": str(c.index.seq), "data": json.dumps(
                    {"jobs": [j.as_json(now) for j in c.index.live() if user.may_see(j.project)]})}
                last = c.index.seq
            sent_health = None
            while True:
                batch = c.changes(last, user)
                last = c.index.seq
                if batch:
                    yield batch
                health = c.health_event()
                if health is not sent_health:
                    sent_health = health
                    yield health
                await c.index.wait_change(last, 2.0)
    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})


@login_required(api=True)
async def job_events(request: Request):
    """One job: its row (event `job`) and its stdout/stderr as they grow (event `log`).

    The event id is `seq.attempt.stdout-offset.stderr-offset`, so a resumed
    stream continues the logs where it stopped and misses no state change.
    """
    c = _console(request)
    sid = request.path_params["sid"]
    job = c.visible(request.state.user, sid)
    if job is None:
        return JSONResponse({"error": "no such job"}, 404)
    try:
        seq, attempt, out, err = (int(x) for x in (_since(request) or "").split("."))
    except ValueError:
        seq, attempt, out, err = -1, job.attempt, -1, -1

    async def events():
        nonlocal seq, attempt, out, err
        with c.watching():
            while True:
                current = c.index.get(sid)
                if current is None:
                    yield {"event": "gone", "data": "{}"}
                    return
                if current.attempt != attempt:
                    attempt, out, err = current.attempt, 0, 0
                files = c.spool.files(sid).attempt(attempt)
                sent = False
                for stream, path in (("stdout", files.stdout), ("stderr", files.stderr)):
                    offset = out if stream == "stdout" else err
                    text, offset = _read_log(path, offset)
                    if stream == "stdout":
                        out = offset
                    else:
                        err = offset
                    if text:
                        sent = True
                        yield {"event": "log", "id": f"{current.seq}.{attempt}.{out}.{err}",
                               "data": json.dumps({"stream": stream, "attempt": attempt, "text": text})}
                if current.seq > seq or sent:
                    seq = current.seq
                    yield {"event": "job", "id": f"{seq}.{attempt}.{out}.{err}",
                           "data": json.dumps(current.as_json(time.time()))}
                await c.index.wait_change(c.index.seq, 0.5)  # any change, or 0.5 s for the logs
    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})


def _read_log(path: str, offset: int) -> tuple[str, int]:
    """New whole lines of a log from offset (-1: the last LOG_FIRST_BYTES); the text and the new offset."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if offset < 0 or offset > size:  # first read, or the file was replaced
                offset = max(0, size - LOG_FIRST_BYTES)
            if size <= offset:
                return "", offset
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    except (FileNotFoundError, NotRegularFile):
        return "", max(offset, 0)
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) < LOG_CHUNK:
        return "", offset  # half a line: wait for its end
    data = data[:cut] if cut else data
    return data.decode("utf-8", "replace"), offset + len(data)


# -- the app ------------------------------------------------------------------------

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

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", board_page),
        Route("/board", board_rows),
        Route("/events", board_events),
        Route("/jobs/{sid}", job_page),
        Route("/jobs/{sid}/summary", job_summary),
        Route("/jobs/{sid}/events", job_events),
        Route("/jobs/{sid}/attempts/{attempt:int}/{stream}", job_log),
        Route("/jobs/{sid}/{verb}", job_command, methods=["POST"]),
        Route("/submit/{job}", submit_page, methods=["GET"]),
        Route("/submit/{job}", submit, methods=["POST"]),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs/{sid}", api_job),
        Route("/api/health", api_health),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *health_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret_key(cfg.console_secret_file), session_cookie="console_session",
                   max_age=12 * 3600, same_site="strict", https_only=False),
    ])
    app.state.console = console
    return app

"""The console's view model: what a user may see of the spool's jobs, as the board, a job's page and the health.

`Console` holds what the endpoints share (configuration, spool, definitions,
the index, the authentication-manager client, the templates) and keeps the
index current: often while an event stream is open, rarely while nobody
watches, and always before a request that would see a stale board.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse

from jobs import submit as submitting
from jobs.authclient import AuthManagerClient
from jobs.config import Config
from jobs.definitions import Definition, load_definitions
from jobs.errors import ConfigError, SpecError
from jobs.outputs import outputs as read_outputs
from jobs.runstate import Attempt, RunState, signal_name, stop_note
from jobs.spool import read_json, service_id
from jobs.states import DISPLAY_STATES, SUBMITTED, TERMINAL_STATES, JobState
from jobs.supervisorinfo import supervisor_status

from . import access, formatting, logs, usage
from .health import console_spool
from .index import Index, Job

REFRESH_SECONDS = 0.25
IDLE_REFRESH_SECONDS = 2.0  # no event stream open: nobody sees a change at once, so a pass costs 8x less often
HISTORY_SECONDS = 5.0
PER_PAGE = 50
MAX_PER_PAGE = 500
FILTERS = ("state", "job", "project", "user", "q", "sort")  # sort: a usage column (console/usage.py)
# The states in which the supervisor applies each command (supervisor/daemon.py kill() and restart()); any other
# it ignores, so the console neither offers nor sends it.
COMMAND_STATES = {"kill": frozenset({SUBMITTED, JobState.QUEUED.value, JobState.RUNNING.value}),
                  "restart": frozenset({JobState.RUNNING.value}) | TERMINAL_STATES}

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


def _number(value: object, default: int, top: int) -> int:
    """A page number or size from the query: 1..top, `default` when absent or not a number."""
    try:
        return min(max(1, int(value or default)), top)
    except ValueError:
        return default


def metrics_token(cfg: Config) -> str | None:
    """The bearer token a scraper sends to /metrics (CONSOLE_METRICS_TOKEN_FILE), or None."""
    path = cfg.console_metrics_token_file
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"CONSOLE_METRICS_TOKEN_FILE={path}: cannot be read ({e.strerror})") from None
    if len(token) < 16:
        raise ConfigError(f"CONSOLE_METRICS_TOKEN_FILE={path}: holds fewer than 16 characters")
    return token


def crashed(sig: int | None) -> str:
    """An attempt ended by a signal the supervisor did not send: the program crashed."""
    if sig is None:
        return ""
    try:
        what = signal.strsignal(sig)
    except ValueError:
        what = None
    return f"crashed ({signal_name(sig)}" + (f", {what.lower()})" if what else ")")


def ended_how(a: Attempt, grace_s: float | None) -> str:
    """How an earlier attempt ended, if by a signal: stopped by the supervisor, or crashed. The supervisor
    records a crash's reason as the shim's "killed by SIG..." and a stop's as the stop's reason."""
    if a.signal is None and not a.killed:
        return ""
    if not a.killed and a.reason.startswith("killed by "):
        return crashed(a.signal)
    return stop_note(a.signal, a.killed, grace_s)


class Console:
    """What the endpoints share: configuration, spool, definitions, index, auth client, templates."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.spool = console_spool(cfg).ensure()  # its refused writes counted (console/health.py)
        self.definitions: dict[str, Definition] = load_definitions(cfg.definitions_dir)
        self.wsdl = auth_wsdl(cfg)
        self.auth = AuthManagerClient(self.wsdl, cfg.auth_timeout_seconds)
        self.index = Index(self.spool, self.definitions)
        self._health: dict[str, Any] | None = None
        self.watchers = 0                 # event streams open
        self._watched = asyncio.Event()   # set when one opens: the idle wait ends at once
        self._refreshed_at = 0.0
        self.stopping = asyncio.Event()   # set on shutdown: every event stream ends
        self.templates = formatting.templates(self.definitions)
        self.metrics_token = metrics_token(cfg)

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

    def stop_streams(self) -> None:
        """End every event stream now: the server's graceful shutdown waits for every open response."""
        self.stopping.set()
        self.index.wake()

    async def close_streams(self, wait: float = 3.0) -> None:
        """On shutdown: end every event stream and give them `wait` seconds to close."""
        self.stop_streams()
        deadline = time.monotonic() + wait
        while self.watchers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- views ------------------------------------------------------------------
    def health(self, user: access.User | None = None) -> dict[str, Any]:
        """The supervisor's health as of the last refresh pass (measured once a pass, not per stream);
        with a user who is no operator, the queue length counts only the jobs they may see."""
        if self._health is None:
            self._health = self._measure_health()
        if user is None or user.operator:
            return self._health
        queued = sum(1 for j in self.index.live() if j.state == JobState.QUEUED and user.may_see(j.project))
        return {**self._health, "queue_length": queued}

    def _measure_health(self) -> dict[str, Any]:
        sup = supervisor_status(self.spool, None, self.cfg.reconcile_seconds)
        try:
            free = shutil.disk_usage(self.spool.root).free
        except OSError:
            free = None
        return {"supervisor": "hung" if sup.hung else "up" if sup.running else "down",
                "pid": sup.pid, "heartbeat_age_seconds": None if sup.heartbeat_age is None else round(sup.heartbeat_age, 1),
                "problem": sup.problem, "queue_length": sum(1 for j in self.index.live() if j.state == JobState.QUEUED),
                "free_bytes": free, "free": formatting.size(free), "event_streams": self.watchers}

    def visible(self, user: access.User, sid: str) -> Job | None:
        try:
            sid = service_id(sid)
        except SpecError:
            return None
        job = self.index.get(sid)
        if job is None and self.spool.known(sid):  # newer than the last pass
            self.index.refresh()
            job = self.index.get(sid)
        return job if job is not None and user.may_see(job.project) else None

    def board(self, user: access.User, params) -> dict[str, Any]:
        f = {k: (params.get(k) or "").strip() for k in FILTERS}
        jobs = [j for j in self.index.live() if user.may_see(j.project)
                and (not f["state"] or j.state == f["state"]) and (not f["job"] or j.job == f["job"])
                and (not f["project"] or j.project == f["project"]) and (not f["user"] or j.username == f["user"])
                and (not f["q"] or f["q"].lower() in j.sid.lower())]
        jobs.sort(key=lambda j: (j.submitted_at, j.sid), reverse=True)
        jobs = usage.sort_rows(jobs, f["sort"], time.time())
        per_page = _number(params.get("per_page"), PER_PAGE, MAX_PER_PAGE)
        pages = max(1, -(-len(jobs) // per_page))
        page = _number(params.get("page"), 1, pages)
        shown = jobs[(page - 1) * per_page: page * per_page]
        now = time.time()
        # the query names the page: the board's live updates refetch it, and must stay on it
        paging = {**({"page": page} if page > 1 else {}), **({"per_page": per_page} if per_page != PER_PAGE else {})}
        return {"filters": f, "page": page, "pages": pages, "total": len(jobs), "now": now,
                "jobs": [j.as_json(now) for j in shown], "seq": self.index.seq,
                "query": {**{k: v for k, v in f.items() if v}, **paging}}

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
                             "stopped": ended_how(h, grace),
                             "reason": h.reason, "logs": logs.sizes(files.attempt(h.attempt)),
                            "usage": usage.attempt_usage(h.usage)})
        if rs is not None and not any(a["attempt"] == rs.attempt for a in attempts):
            attempts.append({"attempt": rs.attempt, "started_at": rs.started_at, "finished_at": rs.finished_at,
                             "exit_code": rs.exit_code, "signal": rs.signal,
                             "signal_name": None if rs.signal is None else signal_name(rs.signal),
                             "stopped": rs.stopped_how(grace) or crashed(rs.signal), "reason": rs.reason,
                             "logs": logs.sizes(files.attempt(rs.attempt)), "current": True,
                            "usage": usage.attempt_usage(rs.usage if rs.terminal else None)})
        return {**job.as_json(now), "attempt_history": attempts, "inputs": job.inputs,
                "commands": [verb for verb, states in COMMAND_STATES.items() if job.state in states],
                "outputs": self.outputs(job, files, d, rs),
                "timestamps": {"submitted": job.submitted_at, "queued": job.queued_at, "started": job.started_at,
                               "finished": job.finished_at, "updated": rs.updated_at if rs else None},
                "definition_inputs": [{"name": i.name, "type": i.type, "default": i.default, "min": i.min,
                                       "max": i.max, "description": i.description} for i in (d.inputs if d else ())],
                "notifications": logs.notifications(files.notifications),
                "progress_samples": [[round(t, 2), p] for t, p in job.samples],
                "usage_facts": usage.attempt_usage(job.usage)}

    def outputs(self, job: Job, files, d: Definition | None, rs: RunState | None) -> list[dict[str, str]]:
        """A SUCCEEDED job's outputs, read as the SOAP status call's COMPLETED answer reads them."""
        if d is None or rs is None or job.state != JobState.SUCCEEDED.value:
            return []
        return [{"name": o.name, "value": v} for o, v in zip(d.outputs, read_outputs(files, d, rs))]

    def refusal(self, job: Job, verb: str) -> str | None:
        """Why `verb` does not apply to the job in its state (the supervisor would ignore it); None if it does."""
        states = COMMAND_STATES[verb]
        if job.state in states:
            return None
        return (f"{verb} refused: job {job.sid} is {job.state}; {verb} applies only to a "
                f"{' or '.join(s for s in DISPLAY_STATES if s in states)} job")

    def render(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        user = access.user_of(request)
        html = self.templates.get_template(name).render(
            request=request, user=user, csrf=access.csrf_token(request), health=self.health(user),
            flash=request.session.pop("flash", None), **context)
        return HTMLResponse(html, status)

    # -- acting -------------------------------------------------------------------
    def submit(self, user: access.User, d: Definition, form) -> str:
        """The form's fields through jobs.submit, the SOAP start's rules and messages; the new serviceID.

        A serviceID that is already known is refused (the SOAP start would
        answer it as a retry; here it is someone else's job, or a typo).
        """
        sid = (form.get("service_id") or "").strip() or f"console-{secrets.token_hex(6)}"
        fields = {i.name: form.get(f"input.{i.name}") for i in d.inputs}
        raw = submitting.text_inputs(d, {k: v for k, v in fields.items() if v is not None})
        done = submitting.submit(self.spool, d, sid, raw, {"username": user.username, "project": user.project},
                                 self.wsdl, known_spec=lambda files: None)
        if not done.new:
            raise submitting.SubmitError(
                f"serviceID {done.sid!r} is already taken; choose another or leave it empty", "service_id")
        log.info("job_submitted", service_id=done.sid, job=d.name, inputs=done.spec.inputs,
                 username=user.username, project=user.project)
        return done.sid

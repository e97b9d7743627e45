"""The console's pages, JSON API and actions (kill, restart, submit), and `routes()`: the whole URL table."""
from __future__ import annotations

from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from jobs.spool import COMMAND_VERBS, NotRegularFile, open_regular, storage_refused
from jobs.submit import SubmitError

from . import auth, logs, streams, usagepages
from .auth import action, console_of, login_required
from .board import Console
from .health import make_routes as health_routes
from .index import Job

STATIC = Path(__file__).resolve().parent / "static"

log = structlog.get_logger("console")


def _job(request: Request) -> tuple[Console, Job | None]:
    """The console, and the job the path names if the user may see it."""
    c = console_of(request)
    return c, c.visible(request.state.user, request.path_params["sid"])


@login_required()
async def board_page(request: Request):
    c = console_of(request)
    return c.render(request, "board.html", **c.board(request.state.user, request.query_params),
                    history=list(c.index.history))


@login_required()
async def board_rows(request: Request):
    c = console_of(request)
    return c.render(request, "_board.html", **c.board(request.state.user, request.query_params),
                    history=list(c.index.history))


@login_required(api=True)
async def api_jobs(request: Request):
    c = console_of(request)
    b = c.board(request.state.user, request.query_params)
    return JSONResponse({k: b[k] for k in ("jobs", "page", "pages", "total", "seq")})


@login_required(api=True)
async def api_job(request: Request):
    c, job = _job(request)
    if job is None:
        return JSONResponse({"error": "no such job"}, 404)
    return JSONResponse(c.detail(job))


@login_required(api=True)
async def api_health(request: Request):
    c = console_of(request)
    return JSONResponse({**c.health(request.state.user), "history": [{"at": t, "queued": q, "running": r, "finished": f}
                                                   for t, q, r, f in c.index.history]})


def _not_found(c: Console, request: Request) -> Response:
    return c.render(request, "error.html", 404, message=f"No job {request.path_params['sid']!r} that you may see.")


@login_required()
async def job_page(request: Request):
    c, job = _job(request)
    if job is None:
        return _not_found(c, request)
    requested = request.session.pop("requested", None)
    requested = requested if isinstance(requested, list) and requested[:1] == [job.sid] else None
    return c.render(request, "job.html", job=c.detail(job), seq=c.index.seq, requested=requested)


@login_required()
async def job_summary(request: Request):
    c, job = _job(request)
    if job is None:
        return _not_found(c, request)
    return c.render(request, "_job.html", job=c.detail(job))


@login_required()
async def job_log(request: Request):
    """The whole log of one attempt, as a download."""
    c = console_of(request)
    sid, stream = request.path_params["sid"], request.path_params["stream"]
    job = c.visible(request.state.user, sid)
    if job is None or stream not in logs.STREAMS:
        return _not_found(c, request)
    a = c.spool.files(sid).attempt(request.path_params["attempt"])
    try:
        f = open_regular(logs.path_of(a, stream))
    except (FileNotFoundError, NotRegularFile):
        return auth.text(404, "no such log")
    return StreamingResponse(logs.chunks(f), media_type="text/plain; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="{sid}-attempt{a.number}-{stream}.log"'})


@login_required(api=True)
async def job_output(request: Request):
    """The new lines of an attempt's stdout and stderr since the offsets asked for (-1: its last
    LOG_FIRST_BYTES). A job page polls it: a short request, so any number of pages share the browser's
    six connections (only the board's event stream is held open, by one page for all: console.js)."""
    c, job = _job(request)
    if job is None:
        return JSONResponse({"error": "no such job"}, 404)
    q = request.query_params
    try:
        attempt = int(q.get("attempt") or job.attempt)
        offsets = {stream: int(q.get(stream) or -1) for stream in logs.STREAMS}
    except ValueError:
        return JSONResponse({"error": "attempt and offsets are integers"}, 400)
    if attempt != job.attempt:  # a new attempt: its logs from the start
        attempt, offsets = job.attempt, {stream: 0 for stream in logs.STREAMS}
    chunks = logs.follow(c.spool.files(job.sid).attempt(attempt), offsets)
    return JSONResponse({"attempt": attempt, "offsets": offsets, "state": job.state,
                         "chunks": [{"stream": stream, "text": text} for stream, text in chunks]})


@action
async def job_command(request: Request):
    c = console_of(request)
    user = request.state.user
    sid, verb = request.path_params["sid"], request.path_params["verb"]
    job = c.visible(user, sid)
    if job is None or verb not in COMMAND_VERBS:
        return _not_found(c, request)
    refused = c.refusal(job, verb)
    if refused:
        log.info("command_refused", service_id=sid, verb=verb, state=job.state, username=user.username)
        return auth.text(409, refused)
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
    c = console_of(request)
    d = c.definitions.get(request.path_params["job"])
    if d is None:
        return c.render(request, "error.html", 404, message="No such job type.")
    return c.render(request, "submit.html", d=d, values={})


@action
async def submit(request: Request):
    c = console_of(request)
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


def routes() -> list[BaseRoute]:
    """Every URL the console answers."""
    return [
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/", board_page),
        Route("/board", board_rows),
        Route("/events", streams.board_events),
        Route("/jobs/{sid}", job_page),
        Route("/jobs/{sid}/summary", job_summary),
        Route("/jobs/{sid}/events", streams.job_events),
        Route("/jobs/{sid}/output", job_output),
        Route("/jobs/{sid}/attempts/{attempt:int}/{stream}", job_log),
        Route("/jobs/{sid}/{verb}", job_command, methods=["POST"]),
        Route("/submit/{job}", submit_page, methods=["GET"]),
        Route("/submit/{job}", submit, methods=["POST"]),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs/{sid}", api_job),
        Route("/api/health", api_health),
        Route("/usage", usagepages.usage_page),
        Route("/api/usage", usagepages.api_usage),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *health_routes(gate=auth.metrics_gate),
    ]

"""The console's server-sent event streams: the board's (`/events`) and one job's (`/jobs/{sid}/events`).

Every stream wakes at the same change of the index, so what they send is
encoded once (`Broadcast`) and written by all of them.
"""
from __future__ import annotations

import json
import time

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import access, logs
from .auth import console_of, login_required
from .board import Console


class Broadcast:
    """The encoded events the open streams share, made once per index change."""

    def __init__(self, console: Console):
        self.console = console
        self._health_events: dict[str | None, tuple[dict, bytes]] = {}
        self._batches: dict[tuple, bytes] = {}
        self._batches_seq = -1

    def changes(self, since: int, user: access.User) -> bytes:
        """The encoded events for what changed after `since` that `user` may see; b"" if nothing.

        Every stream wakes at the same change with the same `since`, so a batch
        is made once per (since, what its viewer may see) and sent by all.
        """
        index = self.console.index
        seq = index.seq
        if self._batches_seq != seq:
            self._batches, self._batches_seq = {}, seq
        key = (since, None if user.operator else user.project)
        batch = self._batches.get(key)
        if batch is None:
            now = time.time()
            rows, moved = index.changed_since(since)
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

    def health_event(self, user: access.User) -> bytes:
        """The `health` event of the last pass as `user` may see it, encoded once for all who see the same."""
        health = self.console.health(user)
        key = None if user.operator else user.project
        cached = self._health_events.get(key)
        if cached is None or cached[0] != health:
            cached = self._health_events[key] = (health, ServerSentEvent(json.dumps(health), event="health").encode())
        return cached[1]


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
    c = console_of(request)
    broadcast: Broadcast = request.app.state.broadcast
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
            while not c.stopping.is_set():
                batch = broadcast.changes(last, user)
                last = c.index.seq
                if batch:
                    yield batch
                health = broadcast.health_event(user)
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
    c = console_of(request)
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
            while not c.stopping.is_set():
                current = c.index.get(sid)
                if current is None:
                    yield {"event": "gone", "data": "{}"}
                    return
                if current.attempt != attempt:
                    attempt, out, err = current.attempt, 0, 0
                offsets = {"stdout": out, "stderr": err}
                new = logs.follow(c.spool.files(sid).attempt(attempt), offsets)
                sent = bool(new)
                for stream, text in new:  # each event's id: the offsets up to and including it
                    out, err = (offsets["stdout"], err) if stream == "stdout" else (out, offsets["stderr"])
                    yield {"event": "log", "id": f"{current.seq}.{attempt}.{out}.{err}",
                           "data": json.dumps({"stream": stream, "attempt": attempt, "text": text})}
                out, err = offsets["stdout"], offsets["stderr"]
                if current.seq > seq or sent:
                    seq = current.seq
                    yield {"event": "job", "id": f"{seq}.{attempt}.{out}.{err}",
                           "data": json.dumps(current.as_json(time.time()))}
                await c.index.wait_change(c.index.seq, 0.5)  # any change, or 0.5 s for the logs
    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})

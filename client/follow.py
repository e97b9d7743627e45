"""`run`: start a job and follow it to its end as the workflow manager does, drawing its progress.

Polls getServiceStatus every --interval seconds until COMPLETED (exit 0) or a
failed or aborted page (exit 1); a façade that restarts costs retries, not
the run; Ctrl-C asks whether to abort the job.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from jobs.cli import INTERRUPTED, CliError, note, out

from . import PROG, UNREACHABLE
from .commands import abort, new_service_id, outcome, start
from .output import status_json, status_reply
from .settings import Settings
from .soap import Service
from .statuspage import Status, page_text


def bar(percent: float | None, width: int = 30) -> str:
    if percent is None:
        return "[" + "?" * width + "]    ?%"
    filled = int(round(width * percent / 100))
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:3.0f}%"


class Progress:
    """A one-line bar redrawn in place on a terminal; a line per change otherwise."""

    def __init__(self, sid: str, stream=None):
        self.sid, self.stream = sid, stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last: tuple | None = None
        self.drawn = False

    def show(self, percent: float | None, note_: str = "") -> None:
        elapsed = int(time.monotonic() - self.start)
        line = f"{bar(percent)}  {self.sid}  {elapsed // 60}:{elapsed % 60:02d}{('  ' + note_) if note_ else ''}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.drawn = True
        elif (percent, note_) != self.last:
            self.stream.write(f"progress: {'?' if percent is None else f'{percent:.0f}'}%"
                              f"{('  ' + note_) if note_ else ''}\n")
        self.last = (percent, note_)
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def cmd_run(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    inputs = svc.parse_inputs(args.input, args.seconds)
    sid = args.id or new_service_id()
    bar_ = Progress(sid, sys.stderr if args.json else None)
    try:
        return _run_loop(svc, sid, token, args, bar_, s, inputs)
    except KeyboardInterrupt:
        bar_.end()
        return _interrupted(svc, sid, token, args)
    finally:
        bar_.end()


def _run_loop(svc: Service, sid: str, token: str, args, bar_: Progress, s: Settings, inputs: dict[str, Any]) -> int:
    reply = start(s, svc, sid, token, inputs)  # a refusal raises: no serviceID line for a job that is not there
    (note if args.json else out)(f"serviceID: {sid}")  # --json: stdout holds only the final JSON
    page, percent = "", None
    while True:
        status, rest = status_reply(reply)
        if status.kind == "COMPLETED" or status.ended:
            return _finished(sid, rest, status, bar_, args)
        if status.kind == "PAGE":  # UNCHANGED: keep showing the last page
            if status.page != page:
                page = status.page
                _show_page(args, bar_, page)
            if status.percent is not None:
                percent = status.percent
        bar_.show(percent)
        reply = _poll(svc, sid, token, args, bar_, percent)


def _poll(svc: Service, sid: str, token: str, args, bar_: Progress, percent: float | None):
    """The next getServiceStatus reply, after the interval; a restarting façade costs retries, not the run."""
    failures = 0
    while True:
        time.sleep(args.interval)
        try:
            return svc.call("getServiceStatus", serviceID=sid, sessionToken=token)
        except CliError as e:  # a fault or a lasting outage ends the run
            if e.code != UNREACHABLE or failures >= args.retries:
                raise
            failures += 1
            bar_.show(percent, f"({e}; retry {failures}/{args.retries})")


def _show_page(args, bar_: Progress, page: str) -> None:
    if args.page and page:
        bar_.end()
        text = page if args.page == "html" else page_text(page)
        (note if args.json else out)(text)


def _finished(sid: str, rest: dict[str, Any], status: Status, bar_: Progress, args) -> int:
    """The end of `run`: COMPLETED and the outputs (exit 0), or FAILED/ABORTED with the reason (exit 1)."""
    if not status.ended:
        bar_.show(100.0)
    bar_.end()
    if args.json:
        out(status_json(sid, status, rest))
    else:
        out(status.summary())
        for k, v in ({} if status.ended else rest).items():
            out(f"{k}: {v}")
    return outcome(status)


def _interrupted(svc: Service, sid: str, token: str, args) -> int:
    if args.abort_on_interrupt:
        answer = "y"
    elif sys.stdin.isatty():
        try:
            answer = input(f"\nabort {sid} on the service? [y]es / [n]o, leave it running: ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = "n"
    else:
        answer = "n"
    if answer.startswith("y"):
        try:
            abort(svc, sid, token, args.json)
        except CliError as e:
            note(f"{PROG}: {e}")
    else:
        note(f"left {sid} running; check it with `{PROG} status --id {sid}`")
    return INTERRUPTED

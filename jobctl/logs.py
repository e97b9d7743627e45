"""`logs`: a job's stdout or stderr, once or followed until the job ends."""
from __future__ import annotations

import os
import sys
import time

from jobctl.context import Context
from jobs.cli import OK, USAGE, CliError, note
from jobs.spool import open_regular
from jobs.states import SUBMITTED, TERMINAL, JobState


def cmd_logs(ctx: Context, args) -> int:
    sid = ctx.require_job(args.id)
    stream = "stderr" if args.stderr else "stdout"
    run = ctx.read_run(sid)
    attempt = args.attempt if args.attempt is not None else (run.attempt if run else 1)
    if args.attempt is not None and args.attempt < 1:
        raise CliError("--attempt must be >= 1", USAGE)
    path = getattr(ctx.spool.files(sid).attempt(attempt), stream)
    if not args.follow:
        if not os.path.exists(path):
            state = run.state.value if run else SUBMITTED
            raise CliError(f"no {os.path.basename(path)} for {sid} attempt {attempt} (state {state})")
        with open_regular(path) as f:
            _copy(f, sys.stdout.buffer)
        return OK
    return _follow(ctx, sid, stream, attempt, pinned=args.attempt is not None)


def _copy(src, dst) -> int:
    n = 0
    while chunk := src.read(65536):
        dst.write(chunk)
        n += len(chunk)
    dst.flush()
    return n


def _follow(ctx: Context, sid: str, stream: str, attempt: int, pinned: bool, interval: float = 0.2) -> int:
    """Print the log as it grows; end when the job (or a pinned attempt) is over."""
    offset = 0
    out_ = sys.stdout.buffer
    waiting_noted = False
    while True:
        run = ctx.read_run(sid)
        path = getattr(ctx.spool.files(sid).attempt(attempt), stream)  # "stdout" or "stderr"
        try:
            with open_regular(path) as f:
                f.seek(offset)
                offset += _copy(f, out_)
        except FileNotFoundError:
            if not waiting_noted and (run is None or run.state is JobState.QUEUED):
                note(f"{sid} is {run.state.value if run else SUBMITTED}; waiting for attempt {attempt} to start")
                waiting_noted = True
        if run is not None and run.attempt > attempt:
            if pinned:
                return OK
            note(f"--- attempt {attempt} ended; following attempt {run.attempt} ---")
            attempt, offset = run.attempt, 0
            continue
        if run is not None and run.state in TERMINAL:
            # state.json is written after the program exited: one last read gets the rest.
            try:
                with open_regular(path) as f:
                    f.seek(offset)
                    _copy(f, out_)
            except FileNotFoundError:
                pass
            return OK
        time.sleep(interval)

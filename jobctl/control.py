"""The control commands, `kill` and `restart`: a command file for the supervisor, then wait to see it applied."""
from __future__ import annotations

import time
from pathlib import Path

from jobctl.context import PENDING, PROG, Context, origin
from jobs.cli import FAILED, OK, CliError, note, out
from jobs.errors import SpecError
from jobs.reasons import describe
from jobs.runstate import RunState
from jobs.spool import Spool, read_bytes
from jobs.states import SUBMITTED, TERMINAL, JobState
from jobs.supervisorinfo import supervisor_status
from jobs.wait import wait_for


def cmd_control(ctx: Context, args) -> int:
    """kill and restart: check it applies, drop the command, wait to see it applied."""
    verb = args.command
    sid = ctx.require_job(args.id)
    before = ctx.read_run(sid)
    state = before.state if before is not None else None
    if verb == "kill" and state in TERMINAL:
        raise CliError(f"{sid} already ended ({state.value}): nothing to kill")
    if verb == "restart" and (state is None or state is JobState.QUEUED):
        shown = "QUEUED" if state else "SUBMITTED"
        raise CliError(f"{sid} is still {shown} and has not run yet: nothing to restart")
    ctx.spool.ensure()
    cmd_path = ctx.spool.send_command(sid, verb, origin())
    sent_at = time.time()
    sup = supervisor_status(ctx.spool, None, ctx.cfg.reconcile_seconds)
    if not sup.running:
        note(f"supervisor is not running; the command is queued and will run when it starts ({cmd_path.name})")
        return PENDING
    if sup.hung:
        note(f"warning: the supervisor (pid {sup.pid}) last wrote a heartbeat {sup.heartbeat_age:.0f}s ago; it may be hung")
    if args.wait <= 0:
        out(f"{verb} of {sid} queued ({cmd_path.name})")
        return OK
    old_attempt = before.attempt if before is not None else 0

    def applied() -> RunState | str | None:
        if cmd_path.exists():
            return None
        if _rejection(ctx.spool, cmd_path) is not None:
            return "rejected"
        run = ctx.read_run(sid)
        if run is None:
            return None
        if verb == "kill":
            return run if run.state in TERMINAL else None
        if run.attempt > old_attempt and run.state is not JobState.STOPPING:
            return run
        if run.state is JobState.QUEUED and (run.updated_at or 0) >= sent_at - 1:
            return run
        return None

    try:
        run = wait_for(applied, args.wait, 0.1, f"the {verb} of {sid}")
    except TimeoutError:
        run = None
    if run == "rejected":
        raise CliError(f"the supervisor rejected the {verb} command: {_rejection(ctx.spool, cmd_path)}")
    if run is None:
        now = ctx.read_run(sid)
        shown = now.state.value if now else SUBMITTED
        note(f"{verb} of {sid} is queued but not applied after {args.wait:g}s (state {shown}); "
             f"check with `{PROG} show {sid}`")
        return PENDING
    if verb == "kill":
        if run.state is JobState.ABORTED:
            out(f"{sid}: ABORTED ({describe(run.reason)})")  # worded as `list` and `show` word it
            return OK
        out(f"{sid}: ended {run.state.value} before the kill took effect ({describe(run.reason)})")
        return FAILED
    out(f"{sid}: restarted, attempt {run.attempt} is {run.state.value} ({describe(run.reason)})")
    return OK


def _rejection(spool: Spool, cmd_path: Path) -> str | None:
    """The supervisor moves a bad command to rejected/<time>-<name> with a .reason beside it."""
    try:
        found = sorted(spool.rejected.glob(f"*-{cmd_path.name}"))
    except OSError:
        return None
    if not found:
        return None
    try:
        reason = read_bytes(found[-1].with_name(found[-1].name + ".reason"), 4096)
        return reason.decode("utf-8", "replace").strip() or "no reason given"
    except (OSError, SpecError):
        return "no reason given"

"""The reading commands: `list` (every job, one row each) and `show` (one job in full)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from jobctl.context import Context
from jobctl.formatting import hms, table, terminal_width, when
from jobs.cli import OK, USAGE, CliError, note, out
from jobs.reasons import describe
from jobs.runstate import RunState
from jobs.states import DISPLAY_STATES, TERMINAL_STATES
from jobs.usagereport import seconds, size, spent

RECENT_S = 24 * 3600.0    # `list` without --all shows terminal jobs this recent


def cmd_list(ctx: Context, args) -> int:
    now = time.time()
    views = ctx.views(now)
    if args.state:
        wanted = {s.strip().upper() for s in args.state.split(",") if s.strip()}
        known = set(DISPLAY_STATES)
        bad = sorted(wanted - known)
        if bad:
            raise CliError(f"--state {bad[0]}: expected one of {', '.join(sorted(known))}", USAGE)
        views = [v for v in views if v.state in wanted]
    elif not args.all:
        views = [v for v in views if v.state not in TERMINAL_STATES
                 or v.finished_at is None or now - v.finished_at <= RECENT_S]
    if args.json:
        out(json.dumps([v.as_json() for v in views], indent=1))
        return OK
    if not views:
        note("no jobs" + ("" if args.all or args.state else " (active or finished in the last 24 h; --all shows every job)"))
        return OK
    rows = [[v.service_id, v.job, v.state, v.pid or "-", hms(v.runtime),
             "-" if v.progress is None else f"{v.progress:.0f}%", v.attempt or "-",
             "-" if v.cpu_seconds is None else f"{v.cpu_seconds:.1f}s", hms(v.wall_seconds),
             "-" if v.memory_peak_bytes is None else size(v.memory_peak_bytes).replace(" ", ""),
             describe(v.reason) or "-"]
            for v in views]
    out(table(rows, ["SERVICE ID", "JOB", "STATE", "PID", "RUNTIME", "PROGRESS", "ATTEMPT", "CPU", "WALL", "MEM",
                     "REASON"], terminal_width()))
    return OK


def cmd_show(ctx: Context, args) -> int:
    sid = ctx.require_job(args.id)
    now = time.time()
    v = ctx.view(sid, now)
    run, spec = v.run, v.spec
    if args.json:
        data = {"spec": {} if spec is None else json.loads(spec.to_json()), "state": ctx.spool.read_state(sid),
                "paths": {k: str(p) for k, p in _paths(ctx, sid, run).items()}}
        out(json.dumps(data, indent=1, default=str))
        return OK
    out(f"serviceID   {sid}")
    out(f"job         {v.job}")
    out(f"state       {v.state}" + (f"  ({describe(v.reason)})" if v.reason else ""))
    if spec is not None:
        out(f"submitted   {when(spec.submitted_at)}")
        if spec.owner:
            out(f"owner       {spec.owner.get('username') or '-'} (project {spec.owner.get('project') or '-'})")
        out(f"auth        {spec.auth_url or '-'}")
        out("inputs      " + (", ".join(f"{k}={json.dumps(val)}" for k, val in spec.inputs.items()) or "-"))
    if run is not None:
        out(f"attempt     {run.attempt}")
        if run.pid:
            out(f"pid         {run.pid}")
        if run.executor_id:
            out(f"{run.executor} job   {run.executor_id}")
        out(f"started     {when(run.started_at)}")
        out(f"finished    {when(run.finished_at)}")
        if v.runtime is not None:
            out(f"runtime     {hms(v.runtime)}")
        if v.progress is not None:
            out(f"progress    {v.progress:.0f}%")
        if run.exit_code is not None or run.signal is not None:
            out(f"exit        code {run.exit_code if run.exit_code is not None else '-'}, "
                f"signal {run.signal if run.signal is not None else '-'}")
        d = ctx.definitions().get(run.job)
        how = run.stopped_how(d.abort_grace_s if d else None)
        if how:
            out(f"stop        {how}")
        if run.history:
            out("")
            out("history")
            rows = [[h.attempt, when(h.started_at), when(h.finished_at),
                     "-" if h.exit_code is None else h.exit_code, "-" if h.signal is None else h.signal,
                     describe(h.reason) or "-"] for h in run.history]
            for line in table(rows, ["ATTEMPT", "STARTED", "FINISHED", "EXIT", "SIGNAL", "REASON"]).splitlines():
                out("  " + line)
        _usage(run)
    out("")
    out("files")
    for name, path in _paths(ctx, sid, run).items():
        out(f"  {name:<13}{path}" + ("" if path.exists() else "  (missing)"))
    return OK


def _usage(run: RunState) -> None:
    """What each ended attempt used (jobs/usage.py's record), one line each."""
    used = spent(run)
    if not used:
        return
    out("")
    out("usage")
    rows = [[s.attempt, seconds(s.usage.wall_s), seconds(s.usage.cpu_s), seconds(s.usage.cpu_user_s),
             seconds(s.usage.cpu_system_s), size(s.usage.memory_peak_bytes), size(s.usage.io_read_bytes),
             size(s.usage.io_write_bytes), seconds(s.usage.queue_wait_s), s.usage.source or "-"] for s in used]
    for line in table(rows, ["ATTEMPT", "WALL", "CPU", "USER", "SYSTEM", "PEAK MEM", "READ", "WRITTEN",
                             "QUEUE WAIT", "SOURCE"]).splitlines():
        out("  " + line)


def _paths(ctx: Context, sid: str, run: RunState | None) -> dict[str, Path]:
    files = ctx.spool.files(sid)
    if run is None and not ctx.spool.claimed(sid):
        return {"spec": Path(files.incoming)}
    paths = {"run dir": files.run, "spec": files.spec, "state": files.state}
    if run is not None:
        a = files.attempt(run.attempt)
        paths.update({"attempt dir": a.dir, "stdout": a.stdout, "stderr": a.stderr})
        d = ctx.definitions().get(run.job)
        paths.update(a.files(d) if d else {})
    return {name: Path(p) for name, p in paths.items()}

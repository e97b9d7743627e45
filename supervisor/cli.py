"""jobctl: the operator's view of the spool and the commands an operator may send.

jobctl never touches a running process itself. It reads the files the
supervisor writes (state.json, queue.json, supervisor.json, the logs) and asks
for changes the same way the facade does: a spec dropped into incoming/
(`submit`) or a command file dropped into commands/ (`kill`, `restart`). The
supervisor acts on them when it runs, so both work while it is down.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobs import config as config_mod
from jobs.cli import FAILED, INTERRUPTED, OK, USAGE, CliError, Parser, note, out, run
from jobs.definitions import Definition, load_definitions
from jobs.errors import ConfigError, DefinitionError, JobsError, SpecError
from jobs.progress import read_percent
from jobs.reasons import describe
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import (SERVICE_ID_RE, NotRegularFile, Spool, open_regular, read_bytes, read_json,
                        validate_service_id)
from jobs.states import ACTIVE, TERMINAL, JobState
from jobs.supervisorinfo import supervisor_status
from jobs.times import read_time
from jobs.wait import wait_for

PROG = "jobctl"

# Exit codes (also in the --help epilog): OK, FAILED, USAGE, INTERRUPTED from jobs.cli, and
PENDING = 3      # command queued but not (yet) applied: supervisor down or --wait elapsed

SUBMITTED = "SUBMITTED"   # a spec in incoming/ the supervisor has not claimed yet
RECENT_S = 24 * 3600.0    # `list` without --all shows terminal jobs this recent

EPILOG = f"""\
exit codes:
  {OK}    done
  {FAILED}    refused or failed (unknown serviceID, nothing to kill, serviceID taken, ...);
       status: the supervisor runs but is hung (its heartbeat is stale)
  {USAGE}    usage error: bad arguments, malformed serviceID, invalid input, bad configuration
  {PENDING}    kill/restart: the command is queued but not applied yet, because the
       supervisor is not running (it runs when the supervisor starts) or --wait
       elapsed first; status: the supervisor is not running
  {INTERRUPTED}  interrupted (Ctrl-C)

The env file is ENV_FILE (or --env-file); the spool directory comes from it.
"""


# -- reading the spool ---------------------------------------------------------

@dataclass
class JobView:
    """One row of `jobctl list`: a run directory or an unclaimed incoming spec."""
    service_id: str
    job: str
    state: str
    attempt: int | None = None
    pid: int | None = None
    runtime: float | None = None
    progress: float | None = None
    reason: str = ""
    run: RunState | None = None
    spec: dict = field(default_factory=dict)
    finished_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id, "job": self.job, "state": self.state,
            "attempt": self.attempt, "pid": self.pid,
            "runtime_seconds": None if self.runtime is None else round(self.runtime, 3),
            "progress": self.progress, "reason": self.reason,
        }


class Context:
    """Configuration, spool and (lazily) job definitions of one jobctl invocation."""

    def __init__(self, env_file: str | None):
        self.cfg = config_mod.load(env_file)
        self.spool = Spool(self.cfg.spool_dir)
        self._defs: dict[str, Definition] | None = None
        self._defs_error: str | None = None

    def definitions(self, required: bool = False) -> dict[str, Definition]:
        if self._defs is None and self._defs_error is None:
            try:
                self._defs = load_definitions(self.cfg.definitions_dir)
            except DefinitionError as e:
                self._defs_error = str(e)
        if self._defs is None:
            if required:
                raise CliError(self._defs_error or "no job definitions", USAGE)
            return {}
        return self._defs

    # -- reads ----------------------------------------------------------------
    def read_spec(self, sid: str) -> dict:
        files = self.spool.files(sid)
        for path in (files.spec, files.incoming):
            try:
                data = read_json(path)
                return data if isinstance(data, dict) else {}
            except FileNotFoundError:
                continue
            except SpecError:
                return {}
        return {}

    def read_run(self, sid: str) -> RunState | None:
        """state.json decoded; None if not written yet; CliError if it is corrupt."""
        try:
            raw = self.spool.read_state(sid)
        except SpecError as e:
            raise CliError(f"{sid}: {e}") from None
        if raw is None:
            return None
        try:
            return RunState.from_dict(raw)
        except SpecError as e:
            raise CliError(f"{sid}: {e}") from None

    def progress(self, sid: str, run: RunState, spec: dict) -> float | None:
        """Percent from the definition's progress file in the current attempt, if readable."""
        d = self.definitions().get(run.job or spec.get("job", ""))
        if d is None or d.progress_file is None:
            return None
        return read_percent(self.spool.files(sid).attempt(run.attempt).progress(d))

    def view(self, sid: str, now: float) -> JobView:
        spec = self.read_spec(sid)
        job = str(spec.get("job", "?"))
        if not self.spool.run_dir(sid).is_dir():
            return JobView(sid, job, SUBMITTED, spec=spec, reason="waiting for the supervisor to claim it")
        try:
            run = self.read_run(sid)
        except CliError as e:
            return JobView(sid, job, "?", reason=str(e), spec=spec)
        if run is None:
            return JobView(sid, job, SUBMITTED, spec=spec, reason="claimed; no state yet")
        v = JobView(sid, run.job or job, run.state.value, attempt=run.attempt, reason=run.reason,
                    run=run, spec=spec, finished_at=run.finished_at)
        if run.state in ACTIVE:
            v.pid = run.pid or (f"slurm:{run.executor_id}" if run.executor_id else None)
            if run.started_at:
                v.runtime = max(0.0, now - run.started_at)
        elif run.state in TERMINAL and run.started_at and run.finished_at:
            v.runtime = max(0.0, run.finished_at - run.started_at)
        if run.state in ACTIVE or run.state in TERMINAL:  # a finished job shows how far it got
            v.progress = self.progress(sid, run, spec)
        return v

    def service_ids(self) -> list[str]:
        """Every run directory and every unclaimed incoming/<sid>.json, by serviceID."""
        names: list[str] = []
        for d, suffix in ((self.spool.runs, ""), (self.spool.incoming, ".json")):
            try:
                names += [n[:len(n) - len(suffix)] for n in os.listdir(d) if n.endswith(suffix)]
            except FileNotFoundError:
                continue
        return sorted({n for n in names if SERVICE_ID_RE.fullmatch(n)})

    def views(self, now: float) -> list[JobView]:
        views = [self.view(sid, now) for sid in self.service_ids()]

        views.sort(key=lambda v: (read_time(v.spec.get("submitted_at")) or 0.0, v.service_id))
        return views

    def require_job(self, sid: str) -> str:
        """Validate and resolve an ID typed by the operator: exit 2 if malformed, 1 if unknown."""
        try:
            validate_service_id(sid)
        except SpecError as e:
            raise CliError(str(e), USAGE) from None
        if not self.spool.exists(sid):
            raise CliError(f"unknown serviceID {sid!r} (no run and no submitted spec in {self.spool.root})")
        return sid


# -- formatting ----------------------------------------------------------------

def hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """Aligned columns; with `width`, the last column is cut (…) so lines fit, but keeps MIN_LAST chars."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = None if width is None else max(MIN_LAST, width - sum(w + 2 for w in widths[:-1]))
    lines = ["  ".join(str(c).ljust(w) for c, w in zip([*r[:-1], clip(str(r[-1]), last)], widths)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


MIN_LAST = 20  # a reason cut shorter than this says nothing


def clip(text: str, width: int | None) -> str:
    text = " ".join(text.split())  # one line per job, whatever the reason holds
    return text if width is None or len(text) <= width else text[:width - 1] + "…"


def terminal_width() -> int | None:
    """The width to fit lines to: the terminal's, or $COLUMNS; None (no cut) when stdout is a pipe or file."""
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


# -- commands ------------------------------------------------------------------

def cmd_list(ctx: Context, args) -> int:
    now = time.time()
    views = ctx.views(now)
    if args.state:
        wanted = {s.strip().upper() for s in args.state.split(",") if s.strip()}
        known = {s.value for s in JobState} | {SUBMITTED}
        bad = sorted(wanted - known)
        if bad:
            raise CliError(f"--state {bad[0]}: expected one of {', '.join(sorted(known))}", USAGE)
        views = [v for v in views if v.state in wanted]
    elif not args.all:
        views = [v for v in views if v.state not in {s.value for s in TERMINAL}
                 or v.finished_at is None or now - v.finished_at <= RECENT_S]
    if args.json:
        out(json.dumps([v.as_json() for v in views], indent=1))
        return OK
    if not views:
        note("no jobs" + ("" if args.all or args.state else " (active or finished in the last 24 h; --all shows every job)"))
        return OK
    rows = [[v.service_id, v.job, v.state, v.pid or "-", hms(v.runtime),
             "-" if v.progress is None else f"{v.progress:.0f}%", v.attempt or "-", describe(v.reason) or "-"]
            for v in views]
    out(table(rows, ["SERVICE ID", "JOB", "STATE", "PID", "RUNTIME", "PROGRESS", "ATTEMPT", "REASON"],
              terminal_width()))
    return OK


def cmd_show(ctx: Context, args) -> int:
    sid = ctx.require_job(args.id)
    now = time.time()
    v = ctx.view(sid, now)
    run, spec = v.run, v.spec
    if args.json:
        data = {"spec": spec, "state": ctx.spool.read_state(sid) if ctx.spool.run_dir(sid).is_dir() else None,
                "paths": {k: str(p) for k, p in _paths(ctx, sid, run).items()}}
        out(json.dumps(data, indent=1, default=str))
        return OK
    out(f"serviceID   {sid}")
    out(f"job         {v.job}")
    out(f"state       {v.state}" + (f"  ({describe(v.reason)})" if v.reason else ""))
    if spec:
        out(f"submitted   {when(read_time(spec.get('submitted_at')))}")
        owner = spec.get("owner") or {}
        if owner:
            out(f"owner       {owner.get('username') or '-'} (project {owner.get('project') or '-'})")
        out(f"auth        {spec.get('auth_url') or '-'}")
        inputs = spec.get("inputs") or {}
        out("inputs      " + (", ".join(f"{k}={json.dumps(val)}" for k, val in inputs.items()) or "-"))
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
    out("")
    out("files")
    for name, path in _paths(ctx, sid, run).items():
        out(f"  {name:<13}{path}" + ("" if path.exists() else "  (missing)"))
    return OK


def _paths(ctx: Context, sid: str, run: RunState | None) -> dict[str, Path]:
    files = ctx.spool.files(sid)
    if run is None and not os.path.isdir(files.run):
        return {"spec": Path(files.incoming)}
    paths = {"run dir": files.run, "spec": files.spec, "state": files.state}
    if run is not None:
        a = files.attempt(run.attempt)
        paths.update({"attempt dir": a.dir, "stdout": a.stdout, "stderr": a.stderr})
        d = ctx.definitions().get(run.job)
        paths.update(a.files(d) if d else {})
    return {name: Path(p) for name, p in paths.items()}


def _origin() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid is still useful
        user = f"uid{os.getuid()}"
    return f"jobctl:{user}"


def cmd_control(ctx: Context, args) -> int:
    """kill and restart: check it applies, drop the command, wait to see it applied."""
    verb = args.command
    sid = ctx.require_job(args.id)
    before = ctx.read_run(sid) if ctx.spool.run_dir(sid).is_dir() else None
    state = before.state if before is not None else None
    if verb == "kill" and state in TERMINAL:
        raise CliError(f"{sid} already ended ({state.value}): nothing to kill")
    if verb == "restart" and (state is None or state is JobState.QUEUED):
        shown = "QUEUED" if state else "SUBMITTED"
        raise CliError(f"{sid} is still {shown} and has not run yet: nothing to restart")
    ctx.spool.ensure()
    cmd_path = ctx.spool.send_command(sid, verb, _origin())
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
        run = ctx.read_run(sid) if ctx.spool.run_dir(sid).is_dir() else None
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
            out(f"{sid}: ABORTED ({run.reason})")
            return OK
        out(f"{sid}: ended {run.state.value} before the kill took effect ({run.reason})")
        return FAILED
    out(f"{sid}: restarted, attempt {run.attempt} is {run.state.value} ({run.reason})")
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


def cmd_logs(ctx: Context, args) -> int:
    sid = ctx.require_job(args.id)
    stream = "stderr" if args.stderr else "stdout"
    run = ctx.read_run(sid) if ctx.spool.run_dir(sid).is_dir() else None
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
        run = ctx.read_run(sid) if ctx.spool.run_dir(sid).is_dir() else None
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


def _parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"input {text!r}: expected NAME=VALUE", USAGE)
    return name, value


def _typed(d: Definition, name: str, value: str) -> Any:
    """Command-line values are text; booleans need converting before validation."""
    spec = next((i for i in d.inputs if i.name == name), None)
    if spec is not None and spec.type == "boolean":
        low = value.strip().lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise CliError(f"{name}: must be true or false, got {value!r}", USAGE)
    return value


def new_service_id(prefix: str = "manual") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def cmd_submit(ctx: Context, args) -> int:
    defs = ctx.definitions(required=True)
    d = defs.get(args.job)
    if d is None:
        raise CliError(f"unknown job {args.job!r}; known jobs: {', '.join(sorted(defs))}", USAGE)
    raw: dict[str, Any] = {}
    for a in args.inputs:
        k, v = _parse_assignment(a)
        if k in raw:
            raise CliError(f"input {k} given twice", USAGE)
        raw[k] = _typed(d, k, v)
    try:
        inputs = d.validate_inputs(raw)
    except SpecError as e:
        raise CliError(f"job {d.name}: {e}", USAGE) from None
    sid = args.id or new_service_id()
    try:
        validate_service_id(sid)
    except SpecError as e:
        raise CliError(str(e), USAGE) from None
    spec = JobSpec(service_id=sid, job=d.name, inputs=inputs, auth_url=None,
                   owner={"username": _origin(), "project": None})
    ctx.spool.ensure()
    if ctx.spool.exists(sid) or not ctx.spool.submit(spec.to_json(), sid):
        raise CliError(f"serviceID {sid!r} already exists")
    out(sid)
    sup = supervisor_status(ctx.spool, None, ctx.cfg.reconcile_seconds)
    if not sup.running:
        note("supervisor is not running; the job will start when it does")
    return OK


def cmd_status(ctx: Context, args) -> int:
    now = time.time()
    sup = supervisor_status(ctx.spool, now, ctx.cfg.reconcile_seconds)
    counts: dict[str, int] = {}
    for v in ctx.views(now):
        counts[v.state] = counts.get(v.state, 0) + 1
    queue = ctx.spool.read_queue()
    code = (FAILED if sup.hung else OK) if sup.running else PENDING
    if args.json:
        out(json.dumps({"supervisor": {"running": sup.running, "hung": sup.hung, "pid": sup.pid,
                                       "heartbeat_age": sup.heartbeat_age, "started_at": sup.started_at,
                                       "problem": sup.problem},
                        "spool": str(ctx.spool.root), "counts": counts, "queued": len(queue)}, indent=1))
        return code
    if sup.running:
        age = "unknown" if sup.heartbeat_age is None else f"{sup.heartbeat_age:.1f}s ago"
        out(f"supervisor  {'HUNG' if sup.hung else 'running'}, pid {sup.pid}, heartbeat {age}"
            + (", started " + sup.started_at if sup.started_at else ""))
        if sup.hung:
            out(f"warning     no heartbeat for more than {sup.stale_after:.0f}s: the supervisor process "
                "is alive but hung; it claims nothing and applies no command")
    else:
        out(f"supervisor  NOT RUNNING ({sup.problem})")
    out(f"spool       {ctx.spool.root}")
    order = [SUBMITTED] + [s.value for s in JobState]
    shown = [f"{s} {counts[s]}" for s in order if counts.get(s)] + [f"{s} {n}" for s, n in counts.items() if s not in order]
    out("jobs        " + (", ".join(shown) if shown else "none"))
    if queue:
        out(f"queue       {len(queue)} waiting for a slot")
    return code


# -- argument parsing ------------------------------------------------------------

def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Inspect and control the jobs of the spool supervisor.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", metavar="FILE", help="configuration file (default: $ENV_FILE or the project's env)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    s = sub.add_parser("list", help="list jobs (active ones and those finished in the last 24 h)",
                       description="List jobs. Without options: unfinished jobs and jobs that ended in the "
                                   "last 24 hours. SUBMITTED means the supervisor has not claimed the spec yet.")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--all", action="store_true", help="every job in the spool")
    g.add_argument("--state", metavar="S[,S...]", help="only jobs in these states (e.g. RUNNING,QUEUED)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="spec, state, attempt history and file paths of one job")
    s.add_argument("id", metavar="ID", help="serviceID")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_show)

    for verb, text in (("kill", "stop a queued or running job; it ends ABORTED"),
                       ("restart", "stop the job if running and run it again as a new attempt")):
        s = sub.add_parser(verb, help=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{text[0].upper()}{text[1:]}. The command is handed to the supervisor "
                                       "through the spool; jobctl then waits for the job's state to show it.")
        s.add_argument("id", metavar="ID", help="serviceID")
        s.add_argument("--wait", type=_wait_seconds, default=10.0, metavar="SECONDS",
                       help="how long to wait for the supervisor to apply it (default 10; 0: do not wait)")
        s.set_defaults(func=cmd_control)

    s = sub.add_parser("logs", help="print a job's stdout (or stderr) log")
    s.add_argument("id", metavar="ID", help="serviceID")
    s.add_argument("--stderr", action="store_true", help="the stderr log instead of stdout")
    s.add_argument("--attempt", type=int, metavar="N", help="attempt number (default: the current one)")
    s.add_argument("-f", "--follow", action="store_true",
                   help="keep printing as the log grows, until the job ends (or Ctrl-C)")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("submit", help="run a job by hand; prints its serviceID",
                       description="Submit a job as the facade would. Inputs are NAME=VALUE; they are checked "
                                   "against the job's definition now, not when the job starts.")
    s.add_argument("job", metavar="JOB", help="job type (a definition file's name, e.g. waiter)")
    s.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help="job inputs; missing ones take their default")
    s.add_argument("--id", metavar="SID", help="serviceID (default: manual-<UTC time>-<random>)")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="is the supervisor running; how many jobs in each state",
                       description="Exit status 0 if the supervisor is running, 1 if it runs but is hung "
                                   "(no heartbeat for 3 reconcile periods), 3 if it is not running.")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse cannot take `submit JOB --id X a=1` (positionals after an option) on its own.
        if args.command == "submit" and all("=" in e and not e.startswith("-") for e in extra):
            args.inputs = [*args.inputs, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args) -> int:
    """The command, with the spool's and the configuration's errors as CliErrors."""
    try:
        return args.func(Context(args.env_file), args)
    except (ConfigError, DefinitionError) as e:
        raise CliError(f"configuration: {e}", USAGE) from None
    except NotRegularFile as e:  # a spool file someone replaced by a FIFO, symlink ...
        raise CliError(str(e)) from None
    except SpecError as e:
        raise CliError(str(e), USAGE) from None
    except JobsError as e:
        raise CliError(str(e)) from None
    except BrokenPipeError:
        # `jobctl logs X | head`: the reader went away; that is not an error.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return OK
    except OSError as e:
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        raise CliError(f"{e.strerror or e}{where}") from None


if __name__ == "__main__":
    sys.exit(main())

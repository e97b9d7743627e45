"""One jobctl invocation: its configuration, spool and job definitions, and the spool read as rows."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from typing import Any

from jobs import config as config_mod
from jobs.cli import USAGE, CliError
from jobs.definitions import Definition, load_definitions
from jobs.errors import DefinitionError, SpecError
from jobs.progress import read_percent
from jobs.runstate import RunState
from jobs.spool import SERVICE_ID_RE, Spool, read_json, validate_service_id
from jobs.states import ACTIVE, TERMINAL
from jobs.times import read_time

PROG = "jobctl"

# Exit codes (also in the --help epilog): OK, FAILED, USAGE, INTERRUPTED from jobs.cli, and
PENDING = 3      # command queued but not (yet) applied: supervisor down or --wait elapsed

SUBMITTED = "SUBMITTED"   # a spec in incoming/ the supervisor has not claimed yet


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


def origin() -> str:
    """Who asked, as state.json's reasons and a submitted spec's owner record it: jobctl:<user>."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid is still useful
        user = f"uid{os.getuid()}"
    return f"jobctl:{user}"

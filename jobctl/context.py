"""One jobctl invocation: its configuration, spool and job definitions, and the spool read as rows."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

from jobs import config as config_mod
from jobs.cli import USAGE, CliError
from jobs.definitions import Definition, load_definitions
from jobs.errors import DefinitionError, SpecError
from jobs.index import Row, SpoolIndex
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import ServiceId, Spool, service_id
from jobs.states import ACTIVE_STATES, SUBMITTED

PROG = "jobctl"

# Exit codes (also in the --help epilog): OK, FAILED, USAGE, INTERRUPTED from jobs.cli, and
PENDING = 3      # command queued but not (yet) applied: supervisor down or --wait elapsed


@dataclass
class JobView:
    """One row of `jobctl list`: a job of the spool's index as jobctl shows it."""
    service_id: str
    job: str
    state: str
    attempt: int | None = None
    pid: int | str | None = None
    runtime: float | None = None
    progress: float | None = None
    reason: str = ""
    run: RunState | None = None
    spec: JobSpec | None = None
    finished_at: float | None = None
    submitted_at: float | None = None
    cpu_seconds: float | None = None        # what its ended attempts used (jobs/index.py Row.usage_json)
    wall_seconds: float | None = None
    memory_peak_bytes: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id, "job": self.job, "state": self.state,
            "attempt": self.attempt, "pid": self.pid,
            "runtime_seconds": None if self.runtime is None else round(self.runtime, 3),
            "progress": self.progress, "reason": self.reason, "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds, "memory_peak_bytes": self.memory_peak_bytes,
        }


class Context:
    """Configuration, spool, and (lazily) job definitions and the spool's index of one jobctl invocation."""

    def __init__(self, env_file: str | None):
        self.cfg = config_mod.load(env_file)
        self.spool = Spool(self.cfg.spool_dir)
        self._defs: dict[str, Definition] | None = None
        self._defs_error: str | None = None
        self._index: SpoolIndex | None = None

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
    def index(self) -> SpoolIndex:
        """The spool read once through the shared index (jobctl runs once and exits).

        Without readable definitions the rows come from state.json alone
        (no job name for a spec still waiting, no progress)."""
        if self._index is None:
            self._index = SpoolIndex(self.spool, self.definitions() or None)
            self._index.refresh()
        return self._index

    def view(self, sid: ServiceId, now: float) -> JobView:
        index = self.index()
        return self._view(sid, index.get(sid), index.problems.get(sid), now)

    def views(self, now: float) -> list[JobView]:
        """Every job of the spool, oldest submission first; a job whose files cannot be read is a row too."""
        index = self.index()
        sids = {row.sid for row in index.live()} | set(index.problems)
        views = [self._view(sid, index.get(sid), index.problems.get(sid), now) for sid in sids]
        views.sort(key=lambda v: (v.submitted_at or 0.0, v.service_id))
        return views

    def _view(self, sid: str, row: Row | None, problem: str | None, now: float) -> JobView:
        job = (row.job if row else "") or "?"
        spec, submitted_at = (row.spec, row.submitted_at) if row else (None, None)
        if problem is not None:
            return JobView(sid, job, "?", reason=f"{sid}: {problem}", spec=spec, submitted_at=submitted_at)
        if row is None or row.state == SUBMITTED:
            return JobView(sid, job, SUBMITTED, spec=spec, submitted_at=submitted_at,
                           reason="claimed; no state yet" if self.spool.claimed(sid)
                           else "waiting for the supervisor to claim it")
        v = JobView(sid, job, row.state, attempt=row.attempt, reason=row.reason, run=row.run, spec=spec,
                    finished_at=row.finished_at, submitted_at=submitted_at, runtime=row.runtime(now),
                    progress=row.progress)  # a finished job shows how far it got
        used = row.usage_json(now)
        v.cpu_seconds, v.wall_seconds, v.memory_peak_bytes = (used["cpu_seconds"], used["wall_seconds"],
                                                              used["memory_peak_bytes"])
        if row.state in ACTIVE_STATES:
            v.pid = row.pid or (f"slurm:{row.executor_id}" if row.executor_id else None)
        return v

    def read_run(self, sid: ServiceId) -> RunState | None:
        """One job's state.json, read afresh (kill, restart and logs poll it); None if not written yet.

        The index reads the whole spool once; these commands watch one job
        change, so they read its one file each time."""
        try:
            raw = self.spool.read_state(sid)
            return None if raw is None else RunState.from_dict(raw)
        except SpecError as e:
            raise CliError(f"{sid}: {e}") from None

    def require_job(self, sid: str) -> ServiceId:
        """Validate and resolve an ID typed by the operator: exit 2 if malformed, 1 if unknown."""
        try:
            sid = service_id(sid)
        except SpecError as e:
            raise CliError(str(e), USAGE) from None
        if not self.spool.known(sid):
            raise CliError(f"unknown serviceID {sid!r} (no run and no submitted spec in {self.spool.root})")
        return sid


def origin() -> str:
    """Who asked, as state.json's reasons and a submitted spec's owner record it: jobctl:<user>."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid is still useful
        user = f"uid{os.getuid()}"
    return f"jobctl:{user}"

"""Is the supervisor up, and what has it counted? supervisor.json and the supervisor's counters file.

jobctl (`status`, and its note on kill/restart) and the console ask the same
question, so they share this answer and its rule for a hung daemon. The
counters (SupervisorCounters) are how the supervisor, which serves no HTTP,
reaches /metrics (jobs.metrics).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError
from .identity import process_problem
from .runstate import Attempt, RunState, from_iso
from .spool import Spool, dump_json, read_json

STALE_HEARTBEAT_S = 5.0   # a live pid whose heartbeat is older than 3 reconcile periods (and this) is hung


@dataclass
class SupervisorInfo:
    """What supervisor.json says, checked against the live process table."""
    pid: int | None
    running: bool
    heartbeat_age: float | None
    started_at: str | None
    problem: str = ""
    stale_after: float = STALE_HEARTBEAT_S
    isolation: str | None = None  # how its jobs are confined, or "not isolated: <why>" (None: it did not say)

    @property
    def hung(self) -> bool:
        return self.running and self.heartbeat_age is not None and self.heartbeat_age > self.stale_after


def supervisor_status(spool: Spool, now: float | None = None, reconcile_seconds: float = 0.0) -> SupervisorInfo:
    """Running means: supervisor.json names a live pid whose create time matches.

    The daemon refreshes its heartbeat once per reconcile period, so a heartbeat
    is stale only when it is older than three of those (and at least 5 s).
    """
    now = time.time() if now is None else now
    stale_after = max(STALE_HEARTBEAT_S, 3 * reconcile_seconds)
    info = spool.read_supervisor()
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return SupervisorInfo(None, False, None, None, "no supervisor.json")
    pid = info["pid"]
    age = None
    try:
        beat = info.get("heartbeat")
        age = now - (from_iso(beat) if isinstance(beat, str) else float(beat))
    except (TypeError, ValueError):
        pass
    recorded = info.get("create_time")
    problem = process_problem(pid, recorded if isinstance(recorded, (int, float)) else None)
    isolation = info.get("isolation")
    return SupervisorInfo(pid, problem is None, age, info.get("started_at"), problem or "", stale_after,
                          isolation if isinstance(isolation, str) else None)


def isolation_note(spool: Spool) -> str | None:
    """What supervisor.json says of its jobs' confinement, or None (no supervisor, or it did not say)."""
    info = spool.read_supervisor()
    note = info.get("isolation") if isinstance(info, dict) else None
    return note if isinstance(note, str) else None


# -- the supervisor's cumulative counters ---------------------------------------------------------
COUNTERS_FILE = "supervisor-counters.json"  # beside supervisor.json; written by the supervisor only
# run times of real jobs, and how long they waited to start: seconds to a day
SECONDS_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, float("inf"))
REJECTED_KINDS = ("spec", "command")
_REJECTED_FROM = {"incoming": "spec", "commands": "command"}
_TALLIES = ("rejected", "refused_writes", "retries", "spawn_failures", "started", "finished")
_HISTOGRAMS = ("run_seconds", "queue_wait_seconds")
# usage by project and job type: CPU seconds (where measured) and wall seconds of ended attempts, final jobs
USAGE = ("cpu_seconds", "wall_seconds", "jobs")
MAX_PROJECT_LABELS = 20  # projects with their own label in the usage counters, for good
OVERFLOW_PROJECT = "(other)"  # every later project's label (parenthesised like usagehistory's "(none)": no real name)


def counters_path(spool: Spool) -> Path:
    return spool.root / COUNTERS_FILE


class SupervisorCounters:
    """What the supervisor did, counted where it happens and kept across its restarts and retention.

    The supervisor serves no HTTP: the server that exports the spool's series
    (jobs.metrics) reads these from COUNTERS_FILE. Counts only grow; they are
    written at the end of a pass that changed them, so a crash loses at most
    that pass's counts and never shows a count going backwards. Keys: job
    type, then final state or errno name; histograms keep per-bucket counts
    (SECONDS_BUCKETS) and a sum.

    Usage (USAGE) is kept by project label, then job type. The first
    MAX_PROJECT_LABELS projects seen (claimed, or ending an attempt) get
    their own label, listed in the file (`project_labels`) so a project's
    label never moves; every later one counts as OVERFLOW_PROJECT.
    """

    def __init__(self, data: dict | None = None):
        data = data if isinstance(data, dict) else {}
        self.tallies: dict[str, dict[str, int]] = {k: _tally(data.get(k)) for k in _TALLIES}
        self.histograms: dict[str, dict[str, dict]] = {k: _histograms(data.get(k)) for k in _HISTOGRAMS}
        raw_usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        self.usage: dict[str, dict[str, dict[str, float]]] = {k: _amounts(raw_usage.get(k)) for k in USAGE}
        self.projects: list[str] = []  # the projects with their own label, in the order they got it
        for project in [*_names(data.get("project_labels")), *(p for t in self.usage.values() for p in t)]:
            self.seen_project(project)  # a list lost from the file is rebuilt from the counts' own labels
        self.dirty = False

    @classmethod
    def load(cls, spool: Spool) -> "SupervisorCounters":
        """The counts on disk; none (all zero) if the file is missing or not ours."""
        try:
            return cls(read_json(counters_path(spool)))
        except (FileNotFoundError, SpecError):
            return cls()

    def to_json(self) -> bytes:
        return dump_json({**self.tallies, **self.histograms, "usage": self.usage, "project_labels": self.projects})

    def save(self, spool: Spool) -> None:
        """Write the counts if they changed (raises the storage's OSError: the caller keeps them for later)."""
        if self.dirty:
            spool.write_atomic(counters_path(spool), self.to_json())
            self.dirty = False

    # -- what the supervisor counts --------------------------------------------------------------
    def add(self, tally: str, key: str, n: int = 1) -> None:
        self.tallies[tally][key] = self.tallies[tally].get(key, 0) + n
        self.dirty = True

    def rejected(self, directory: Path) -> None:
        """A file moved aside from incoming/ (a spec) or commands/ (a command)."""
        self.add("rejected", _REJECTED_FROM.get(directory.name, directory.name))

    def refused(self, errno_name: str) -> None:
        self.add("refused_writes", errno_name)

    def retry(self, job: str) -> None:
        self.add("retries", job)

    def spawn_failed(self, job: str) -> None:
        self.add("spawn_failures", job)

    def started(self, rs: RunState) -> None:
        """An attempt started: counted, and its wait since it was queued observed."""
        self.add("started", rs.job)
        if rs.queued_at is not None and rs.started_at is not None:
            self.observe("queue_wait_seconds", rs.job, rs.started_at - rs.queued_at)

    def finished(self, rs: RunState, project: str) -> None:
        """A run reached its final state: counted by job type and state, its run time observed; counted
        as a job of its project, with what its last attempt used if that attempt just ended (a job killed
        while QUEUED ends no attempt)."""
        self.add("finished", f"{rs.job}/{rs.state.value}")
        if rs.started_at is not None and rs.finished_at is not None:
            self.observe("run_seconds", rs.job, rs.finished_at - rs.started_at)
        self.use(project, rs.job, "jobs", 1)
        if rs.history and rs.history[-1].attempt == rs.attempt:
            self.ended(project, rs.job, rs.history[-1])

    def ended(self, project: str, job: str, attempt: Attempt) -> None:
        """An attempt ended: its CPU seconds (0 where not measured) and wall seconds, added once."""
        u = attempt.usage
        wall = u.wall_s if u is not None else None
        if wall is None and attempt.started_at is not None and attempt.finished_at is not None:
            wall = attempt.finished_at - attempt.started_at
        self.use(project, job, "cpu_seconds", (u.cpu_s if u is not None else None) or 0.0)
        self.use(project, job, "wall_seconds", wall or 0.0)

    def seen_project(self, project: str) -> str:
        """The project's label in the usage counters (its own while fewer than MAX_PROJECT_LABELS have one);
        a project with its own label has its series at zero from then on."""
        if project in self.projects:
            return project
        if len(self.projects) >= MAX_PROJECT_LABELS or project == OVERFLOW_PROJECT:
            return OVERFLOW_PROJECT
        self.projects.append(project)
        self.dirty = True
        return project

    def use(self, project: str, job: str, what: str, amount: float) -> None:
        amount = amount if math.isfinite(amount) and amount > 0 else 0
        per_job = self.usage[what].setdefault(self.seen_project(project), {})
        per_job[job] = per_job.get(job, 0) + amount
        self.dirty = True

    def observe(self, histogram: str, job: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        h = self.histograms[histogram].setdefault(job, {"buckets": [0] * len(SECONDS_BUCKETS), "sum": 0.0})
        h["buckets"][next(i for i, b in enumerate(SECONDS_BUCKETS) if seconds <= b)] += 1
        h["sum"] += seconds
        self.dirty = True


def _tally(raw: object) -> dict[str, int]:
    """A {key: count} map read back from the file, anything else in it dropped."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and type(v) is int and v >= 0}


def _names(raw: object) -> list[str]:
    return [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []


def _amounts(raw: object) -> dict[str, dict[str, float]]:
    """A {project: {job: amount}} map read back from the file, anything but a finite amount >= 0 dropped."""
    if not isinstance(raw, dict):
        return {}
    kept = {}
    for project, per_job in raw.items():
        if isinstance(project, str) and isinstance(per_job, dict):
            kept[project] = {j: v for j, v in per_job.items() if isinstance(j, str) and type(v) in (int, float)
                             and math.isfinite(v) and v >= 0}
    return kept


def _histograms(raw: object) -> dict[str, dict]:
    if not isinstance(raw, dict):
        return {}
    kept = {}
    for job, h in raw.items():
        buckets = h.get("buckets") if isinstance(h, dict) else None
        total = h.get("sum") if isinstance(h, dict) else None
        if (isinstance(buckets, list) and len(buckets) == len(SECONDS_BUCKETS)
                and all(type(n) is int and n >= 0 for n in buckets) and isinstance(total, (int, float))):
            kept[job] = {"buckets": buckets, "sum": float(total)}
    return kept

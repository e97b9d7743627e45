"""Decayed usage per project (SPOOL/usage.json): what fair share weighs, kept across supervisor restarts.

Usage is the slot-seconds of attempts, each second weighed 2^(-age / half-life),
so recent use counts more than old use (Slurm's PriorityDecayHalfLife). Only
the supervisor writes the file, atomically, when attempts end. It is never
trusted blindly: at start-up a file that is missing or fails validation is
rebuilt from the attempts every run's state.json records.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError
from .runfiles import RunFiles
from .runstate import RunState
from .spool import SERVICE_ID_RE, Spool, dump_json, read_bytes, read_json
from .times import iso, read_time

SCHEMA_VERSION = 1
NO_PROJECT = "(none)"  # the project of jobs submitted without one (jobctl): a project of its own
MAX_PROJECTS = 100_000
MAX_PROJECT_NAME = 256
MAX_FILE_BYTES = 16 * 1024 * 1024
FORGET_BELOW = 1e-6  # slot-seconds: a project whose usage decayed below this is dropped
CLOCK_SLACK_S = 300.0  # a file written this far in the future is refused (else its usage would grow)


def project_of(owner: dict[str, Any]) -> str:
    """The project a job is accounted to: spec.owner["project"], else NO_PROJECT."""
    project = owner.get("project")
    return project if isinstance(project, str) and project else NO_PROJECT


def decayed_seconds(start: float, end: float, now: float, half_life_s: float) -> float:
    """The slot-seconds of [start, end] as weighed at `now`: the integral of 2^(-(now - t) / half-life)."""
    end = min(end, now)
    if end <= start:
        return 0.0
    k = math.log(2) / half_life_s
    return math.exp(-k * (now - end)) * -math.expm1(-k * (end - start)) / k


@dataclass
class UsageHistory:
    """Each project's usage of ended attempts as weighed at `at`, and the decayed count of those attempts."""
    half_life_s: float
    at: float
    usage: dict[str, float] = field(default_factory=dict)
    attempts: float = 0.0

    def advance(self, now: float) -> None:
        """Decay everything to `now` (never backwards: a clock stepped back only pauses the decay)."""
        if now <= self.at:
            return
        factor = 2.0 ** (-(now - self.at) / self.half_life_s)
        self.usage = {p: u * factor for p, u in self.usage.items() if u * factor >= FORGET_BELOW}
        self.attempts *= factor
        self.at = now

    def charge(self, project: str, start: float, end: float, now: float) -> None:
        """Add one ended attempt that held a slot from start to end."""
        self.advance(now)
        used = decayed_seconds(start, end, self.at, self.half_life_s)
        self.usage[project] = self.usage.get(project, 0.0) + used
        self.attempts += 2.0 ** (-max(0.0, self.at - end) / self.half_life_s)

    def weighed_at(self, now: float) -> dict[str, float]:
        """Each project's usage as weighed at `now`, without changing the history."""
        factor = 2.0 ** (-max(0.0, now - self.at) / self.half_life_s)
        return {p: u * factor for p, u in self.usage.items()}

    def mean_attempt_s(self) -> float | None:
        """The (decayed) mean slot-seconds of an attempt; None before any attempt ended."""
        if self.attempts < 1e-3:
            return None
        return sum(self.usage.values()) / self.attempts

    def to_json(self) -> bytes:
        return dump_json({"schema_version": SCHEMA_VERSION, "at": iso(self.at), "half_life_s": self.half_life_s,
                          "ended_attempts": self.attempts, "usage": self.usage})

    @classmethod
    def parse(cls, data: Any, half_life_s: float, now: float) -> UsageHistory:
        """Validate usage.json's content; SpecError names the first problem."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise SpecError(f"usage.json: not a schema_version {SCHEMA_VERSION} object")
        at = read_time(data.get("at"))
        if at is None:
            raise SpecError("usage.json: 'at' is not an ISO 8601 time with its UTC offset")
        if at > now + CLOCK_SLACK_S:
            raise SpecError("usage.json: 'at' lies in the future")
        usage, attempts = data.get("usage"), data.get("ended_attempts")
        if not _amount(attempts):
            raise SpecError("usage.json: 'ended_attempts' must be a finite number >= 0")
        if not isinstance(usage, dict) or len(usage) > MAX_PROJECTS:
            raise SpecError(f"usage.json: 'usage' must map at most {MAX_PROJECTS} projects to slot-seconds")
        for project, used in usage.items():
            if not (0 < len(project) <= MAX_PROJECT_NAME) or not _amount(used):
                raise SpecError(f"usage.json: bad entry {project[:60]!r}: {str(used)[:30]}")
        return cls(half_life_s, min(at, now), {p: float(u) for p, u in usage.items()}, float(attempts))

    @classmethod
    def rebuild(cls, spool: Spool, half_life_s: float, now: float) -> UsageHistory:
        """From every ended attempt that the runs' state.json files record (a run that cannot be read is skipped)."""
        history = cls(half_life_s, now)
        for name in os.listdir(spool.runs):
            if not SERVICE_ID_RE.fullmatch(name):
                continue
            files = RunFiles(spool, name)
            try:
                rs = RunState.from_bytes(read_bytes(files.state))
                owner = read_json(files.spec).get("owner") or {}
            except (OSError, SpecError, AttributeError):
                continue
            project = project_of(owner) if isinstance(owner, dict) else NO_PROJECT
            for attempt in rs.history:
                if attempt.started_at is not None and attempt.finished_at is not None:
                    history.charge(project, attempt.started_at, attempt.finished_at, now)
        return history


def _amount(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def load(spool: Spool, half_life_s: float, now: float) -> tuple[UsageHistory, str | None]:
    """usage.json if it is valid, else rebuilt from the runs; the second item says why it was rebuilt."""
    try:
        return UsageHistory.parse(read_json(spool.usage_file, MAX_FILE_BYTES), half_life_s, now), None
    except FileNotFoundError:
        why = "usage.json is missing"
    except SpecError as e:
        why = str(e)
    return UsageHistory.rebuild(spool, half_life_s, now), why

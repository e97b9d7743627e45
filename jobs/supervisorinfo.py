"""Is the supervisor up? What supervisor.json says, checked against the live process table.

jobctl (`status`, and its note on kill/restart) and the console ask the same
question, so they share this answer and its rule for a hung daemon.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .identity import process_problem
from .runstate import from_iso
from .spool import Spool

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

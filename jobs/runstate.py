"""The supervisor's record of one run (state.json), and how readers decode it."""
from __future__ import annotations

import signal as _signal
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SpecError
from .spool import dump_json, validate_service_id
from .states import JobState, check_transition
from .times import from_iso, iso  # noqa: F401  (from_iso: readers import it from here too)

_TIME_FIELDS = ("queued_at", "started_at", "finished_at", "updated_at", "not_before")


def signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stop_note(sig: int | None, killed: bool, grace_s: float | None) -> str:
    """How the supervisor's stop (kill, restart, timeout) ended an attempt, for people."""
    if killed:
        return "had to be killed (SIGKILL" + ("" if grace_s is None else f" after {grace_s:g} s") + ")"
    return f"stopped by {signal_name(sig)}" if sig is not None else "stopped"


@dataclass
class Attempt:
    """What one attempt ended with; kept so the final failure names every attempt."""
    attempt: int
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    killed: bool = False  # the supervisor's stop needed SIGKILL: SIGTERM's grace period ran out


@dataclass
class RunState:
    service_id: str
    job: str
    state: JobState = JobState.QUEUED
    reason: str = "waiting for a free slot"
    attempt: int = 1
    executor: str = "local"      # which executor runs it (local, slurm)
    executor_id: str | None = None  # the executor's own id for the attempt (Slurm job id)
    pid: int | None = None
    create_time: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    not_before: float | None = None
    # set while STOPPING: what the stop ends in (ABORTED / FAILED / QUEUED) and when to KILL
    stop_target: str | None = None
    stop_reason: str | None = None
    kill_at: float | None = None
    killed: bool = False  # this attempt's stop needed SIGKILL (signal is then 9)
    retries_used: int = 0  # automatic retries since the last start or operator restart
    history: list[Attempt] = field(default_factory=list)

    def move(self, new: JobState, reason: str, now: float) -> None:
        """The only way a state changes: checked against the transition table."""
        self.state = check_transition(self.state, new)
        self.reason = reason
        self.updated_at = now

    def stopped_how(self, grace_s: float | None) -> str | None:
        """For a run that ended by the supervisor's stop: SIGTERM was enough, or SIGKILL was needed."""
        if self.stop_target is None or not self.terminal or (self.signal is None and not self.killed):
            return None
        return stop_note(self.signal, self.killed, grace_s)

    @property
    def terminal(self) -> bool:
        from .states import TERMINAL
        return self.state in TERMINAL

    def to_json(self) -> bytes:
        d = asdict(self)
        d["state"] = self.state.value
        for k in _TIME_FIELDS:
            d[k] = iso(d[k])
        for h in d["history"]:
            h["started_at"], h["finished_at"] = iso(h["started_at"]), iso(h["finished_at"])
        return dump_json(d)

    @classmethod
    def from_dict(cls, d: Any) -> "RunState":
        """Decode and check a state.json; SpecError if it is not one of ours."""
        try:
            d = dict(d)
            d["state"] = JobState(d["state"])
            validate_service_id(d["service_id"])
            for k in _TIME_FIELDS:
                d[k] = from_iso(d.get(k))
            d["history"] = [
                Attempt(**{**h, "started_at": from_iso(h.get("started_at")), "finished_at": from_iso(h.get("finished_at"))})
                for h in d.get("history", [])
            ]
            return cls(**d)
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"state.json: malformed ({e})") from None

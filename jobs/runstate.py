"""The supervisor's record of one run (state.json), and how readers decode it."""
from __future__ import annotations

import functools
import signal as _signal
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, get_type_hints

import msgspec

from .errors import SpecError
from .spool import dump_json, validate_service_id
from .states import JobState, check_transition
from .usage import Usage
from .times import from_iso, iso  # noqa: F401  (from_iso: readers import it from here too)

_TIME_FIELDS = ("queued_at", "started_at", "finished_at", "updated_at", "not_before")
_ATTEMPT_TIMES = ("started_at", "finished_at")


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
    usage: Usage | None = None  # what it used (jobs/usage.py); None: not measured


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
    usage: Usage | None = None  # what the current (or last) attempt used, once it ended
    isolation: str | None = None  # how the attempt is confined, or "not isolated: <why>"
    cgroup: str | None = None  # the attempt's cgroup name (supervisor/cgroups.py), saved before the program starts
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
        """The state.json bytes. Its dicts are built field by field: dataclasses.asdict's deep copy was most of
        the ~75 µs a save cost, and the supervisor saves twice between a spec's arrival and its hand-over."""
        d = _fields_of(self)
        d["state"] = self.state.value
        if d["cgroup"] is None:
            del d["cgroup"]  # written only where an attempt has one: the records of before read the same
        for k in _TIME_FIELDS:
            d[k] = iso(d[k])
        d["usage"] = _fields_of(self.usage)
        d["history"] = [{**_fields_of(h), "started_at": iso(h.started_at), "finished_at": iso(h.finished_at),
                         "usage": _fields_of(h.usage)} for h in self.history]
        return dump_json(d)

    @classmethod
    def from_dict(cls, d: Any) -> "RunState":
        """Decode and check a state.json; SpecError if it is not one of ours."""
        try:
            return _from_record(msgspec.convert(d, _StateRecord))
        except msgspec.ValidationError as e:
            raise SpecError(f"state.json: malformed ({e})") from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RunState":
        """from_dict for the file's bytes, without building the dict first (the poll path's read)."""
        try:
            return _from_record(_DECODE_STATE.decode(raw))
        except msgspec.DecodeError as e:  # and ValidationError, its subclass
            raise SpecError(f"state.json: malformed ({e})") from None


def _fields_of(obj: Any) -> dict[str, Any] | None:
    """A dataclass's fields as a dict, one level deep (asdict without its copies); None stays None."""
    return None if obj is None else {name: getattr(obj, name) for name in _names(type(obj))}


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _record_type(cls: type, times: tuple[str, ...], required: tuple[str, ...] = (), **nested: type) -> type:
    """The file's shape of a dataclass, written once: the same fields, times as ISO 8601 (datetime),
    unknown ones refused, `required` ones required in the file even where the class has a default."""
    hints = get_type_hints(cls)
    spec: list[tuple] = []
    for f in fields(cls):
        kind = datetime | None if f.name in times else nested.get(f.name, hints[f.name])
        if f.name in required:
            spec.append((f.name, kind))
        elif f.default is not MISSING:
            spec.append((f.name, kind, f.default))
        elif f.default_factory is not MISSING:
            spec.append((f.name, kind, msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, kind))
    return msgspec.defstruct(f"{cls.__name__}Record", spec, forbid_unknown_fields=True)


def _timestamps(record: msgspec.Struct, times: tuple[str, ...]) -> dict[str, Any]:
    d = msgspec.structs.asdict(record)
    for k in times:
        if d[k] is not None:
            d[k] = d[k].timestamp()
    return d


def _filled(cls: type, values: dict[str, Any]) -> Any:
    """cls with every field given: its __init__ (defaults only, no __post_init__) would cost the poll path 4 us."""
    obj = cls.__new__(cls)
    obj.__dict__.update(values)
    return obj


def _from_record(rec: Any) -> RunState:
    d = _timestamps(rec, _TIME_FIELDS)
    validate_service_id(d["service_id"])
    d["history"] = [_filled(Attempt, _timestamps(h, _ATTEMPT_TIMES)) for h in d["history"]]
    return _filled(RunState, d)


_AttemptRecord = _record_type(Attempt, _ATTEMPT_TIMES)
_StateRecord = _record_type(RunState, _TIME_FIELDS, ("state",), history=list[_AttemptRecord])
_DECODE_STATE = msgspec.json.Decoder(_StateRecord)

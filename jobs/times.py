"""The one time format of the spool: ISO 8601 in UTC, microseconds always written.

Every file written in the spool (spec.json, state.json, supervisor.json, the
shim's exit.json) says times this way. Readers also accept the UNIX times that
spec.json and exit.json held before, so older spools still work.
"""
from __future__ import annotations

from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def from_iso(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def read_time(value: object) -> float | None:
    """A time as found in a spool file: ISO 8601 with an offset, or (older files) a UNIX time; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if 0 < value < 1e11 else None
    if isinstance(value, str) and len(value) <= 64:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        return dt.timestamp() if dt.tzinfo is not None else None  # a naive time would depend on the reader's zone
    return None

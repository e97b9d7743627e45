"""What jobs used, summed and put in words: per attempt, per job, and per project, user or job type over time.

The records are the supervisor's (jobs/usage.py): a job's own come with the
rows of jobs/index.py (`Row.spent`, one `Spent` per ended attempt, from
state.json), a period's from the accounting ledger (jobs/accounting.py, which
outlives the runs). This module only adds them up and words them, so the
status page, the console, jobctl and /metrics say the same figures the same way.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Iterable

from .runstate import RunState
from .usage import Usage

GROUPS = {"project": "project", "user": "username", "job": "job"}  # --by name -> row attribute
_SUMMED = ("cpu_user_s", "cpu_system_s", "io_read_bytes", "io_write_bytes", "oom_kills", "memory_limit_hits",
           "queue_wait_s", "wall_s")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Spent:
    """One ended attempt's usage, with when it ended (what a period selects on)."""
    attempt: int
    finished_at: float | None
    usage: Usage


def spent(rs: RunState) -> tuple[Spent, ...]:
    """Every ended attempt of a run that has a usage record: history's, and rs.usage for the last one.

    The supervisor saves the record in both places; an attempt's own record
    (history) wins, rs.usage covers an attempt history lacks (older files).
    """
    out = {h.attempt: Spent(h.attempt, h.finished_at, h.usage) for h in rs.history if h.usage is not None}
    if rs.usage is not None and rs.attempt not in out and rs.finished_at is not None:
        out[rs.attempt] = Spent(rs.attempt, rs.finished_at, rs.usage)
    return tuple(out[n] for n in sorted(out))


def total(usages: Iterable[Usage]) -> Usage | None:
    """The sum of several records (peak memory: the largest); a figure no record knows stays None."""
    usages = list(usages)
    if not usages:
        return None
    values: dict[str, Any] = {}
    for name in _SUMMED:
        known = [getattr(u, name) for u in usages if getattr(u, name) is not None]
        values[name] = sum(known) if known else None
    peaks = [u.memory_peak_bytes for u in usages if u.memory_peak_bytes is not None]
    values["memory_peak_bytes"] = max(peaks) if peaks else None
    values["source"] = ",".join(sorted({u.source for u in usages if u.source}))
    return Usage(**values)


def as_dict(u: Usage | None) -> dict[str, Any] | None:
    """A record for JSON readers: its fields and cpu_s, figures rounded to the millisecond."""
    if u is None:
        return None
    d = asdict(u)
    d["cpu_s"] = u.cpu_s
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


# -- words ------------------------------------------------------------------------------
def seconds(s: float | None) -> str:
    """A duration for people: 0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if s is None:
        return "unknown"
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    n = int(round(s))
    return f"{n // 60} min {n % 60:02d} s" if n < 3600 else f"{n // 3600} h {n % 3600 // 60:02d} min"


def size(n: float | None) -> str:
    """A byte count for people: 512 B, 1.5 KiB ... TiB."""
    if n is None:
        return "unknown"
    exp = 0 if n < 1024 else min(4, int(math.log(n, 1024)))
    return f"{n:.0f} B" if exp == 0 else f"{n / 1024 ** exp:.1f} {'KMGT'[exp - 1]}iB"


def facts(u: Usage) -> list[tuple[str, str]]:
    """What a record says, line by line, for pages: only the figures that are known."""
    out = []
    if u.wall_s is not None:
        out.append(("Wall time", seconds(u.wall_s)))
    if u.cpu_s is not None:
        out.append(("CPU time", f"{seconds(u.cpu_s)} (user {seconds(u.cpu_user_s)}, system {seconds(u.cpu_system_s)})"))
    if u.memory_peak_bytes is not None:
        out.append(("Peak memory", size(u.memory_peak_bytes)))
    if u.io_read_bytes is not None or u.io_write_bytes is not None:
        out.append(("Disk I/O", f"read {size(u.io_read_bytes)}, written {size(u.io_write_bytes)}"))
    if u.queue_wait_s is not None:
        out.append(("Queue wait", seconds(u.queue_wait_s)))
    if u.oom_kills:
        out.append(("Out-of-memory kills", str(u.oom_kills)))
    return out


# -- periods -------------------------------------------------------------------------------
def parse_when(text: str, now: float) -> float:
    """A period's bound: an ISO 8601 date or time (UTC unless it says), or a span back from now (7d, 12h, 2w, 30m).

    ValueError names what is accepted."""
    t = text.strip()
    m = _RELATIVE.fullmatch(t)
    if m:
        return now - float(m[1]) * _UNIT_SECONDS[m[2]]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 date or time (2026-12-01, 2026-12-01T08:00) "
                         "nor a span back from now (30m, 12h, 7d, 2w)") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


# -- the report ------------------------------------------------------------------------------
@dataclass
class Line:
    """One group of a usage report: what the attempts that ended in the period used."""
    key: str
    jobs: int = 0
    attempt_count: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    queue_wait_s: float = 0.0
    memory_peak_bytes: int | None = None   # the largest of any attempt
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    _sids: set = field(default_factory=set, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: round(v, 3) if isinstance(v, float) else v
                for f in fields(self) if not f.name.startswith("_") for v in [getattr(self, f.name)]}


def report(attempts: Iterable, by: str, since: float | None = None, until: float | None = None) -> list[Line]:
    """The attempts that ended in [since, until), grouped by project, user or job type; most CPU first.

    attempts are the ledger's records (jobs/accounting.py): anything with sid, project, username, job,
    finished_at and Usage's figures. No call per attempt in the loop: `jobctl usage` runs it over
    100,000 attempts within its second."""
    attr = GROUPS[by]
    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    lines: dict[str, Line] = {}
    for u in attempts:
        if u.finished_at is None or not lo <= u.finished_at < hi:
            continue
        key = getattr(u, attr) or "-"
        line = lines.get(key) or lines.setdefault(key, Line(key))
        line._sids.add(u.sid)
        line.attempt_count += 1
        line.cpu_s += u.cpu_s or 0.0
        line.wall_s += u.wall_s or 0.0
        line.queue_wait_s += u.queue_wait_s or 0.0
        if u.memory_peak_bytes is not None and (line.memory_peak_bytes or 0) < u.memory_peak_bytes:
            line.memory_peak_bytes = u.memory_peak_bytes
        line.io_read_bytes += u.io_read_bytes or 0
        line.io_write_bytes += u.io_write_bytes or 0
    for line in lines.values():
        line.jobs = len(line._sids)
    return sorted(lines.values(), key=lambda x: (-x.cpu_s, x.key))


def series(attempts: Iterable, bucket_s: float, since: float, until: float) -> dict[str, list[float]]:
    """CPU seconds per project in each bucket of [since, until): the console's usage over time."""
    n = max(1, int(-(-(until - since) // bucket_s)))
    out: dict[str, list[float]] = {}
    for u in attempts:
        if u.finished_at is None or not since <= u.finished_at < until:
            continue
        out.setdefault(u.project or "-", [0.0] * n)[int((u.finished_at - since) // bucket_s)] += u.cpu_s or 0.0
    return out


COLUMNS = (("key", "{by}"), ("jobs", "JOBS"), ("attempt_count", "ATTEMPTS"), ("cpu_s", "CPU"), ("wall_s", "WALL"),
           ("queue_wait_s", "QUEUE WAIT"), ("memory_peak_bytes", "PEAK MEM"), ("io_read_bytes", "READ"),
           ("io_write_bytes", "WRITTEN"))


def as_table(lines: list[Line], by: str) -> str:
    """The report for a terminal: aligned columns, figures in words, a total line."""
    head = [title.format(by=by.upper()) for _, title in COLUMNS]
    body = [_cells(x) for x in lines]
    if len(lines) > 1:
        body.append(["TOTAL", *_cells(_sum(lines))[1:]])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in [head, *body])


def _cells(x: Line) -> list[str]:
    return [x.key, str(x.jobs), str(x.attempt_count), seconds(x.cpu_s), seconds(x.wall_s), seconds(x.queue_wait_s),
            size(x.memory_peak_bytes), size(x.io_read_bytes), size(x.io_write_bytes)]


def _sum(lines: list[Line]) -> Line:
    return Line("TOTAL", sum(x.jobs for x in lines), sum(x.attempt_count for x in lines), sum(x.cpu_s for x in lines),
             sum(x.wall_s for x in lines), sum(x.queue_wait_s for x in lines),
             max((x.memory_peak_bytes for x in lines if x.memory_peak_bytes is not None), default=None),
             sum(x.io_read_bytes for x in lines), sum(x.io_write_bytes for x in lines))


def as_json(lines: list[Line], by: str, since: float | None, until: float | None) -> str:
    return json.dumps({"by": by, "since": _iso(since), "until": _iso(until),
                       "groups": [x.as_dict() for x in lines]}, indent=1)


def as_csv(lines: list[Line], by: str) -> str:
    """One header line (by, then the figures as numbers: seconds and bytes), one line per group."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([by] + [name for name, _ in COLUMNS[1:]])
    for x in lines:
        d = x.as_dict()
        w.writerow([x.key] + ["" if d[name] is None else d[name] for name, _ in COLUMNS[1:]])
    return buf.getvalue()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()

"""The console's usage view model: what each project (or user, or job type) used over a period, and per day;
the board's usage columns and the job page's attempts (hooks in console/board.py). Pages: console/usagepages.py.

The report reads the accounting ledger (jobs/accounting.py, one Reader per
spool that reads only what was appended since the last page) and sums it with
jobs/usagereport.py, as `jobctl usage` does; the board and the job page read
the index rows. Who sees what follows console/access.py: operators every
project, others their own.
"""
from __future__ import annotations

import time
from typing import Any

from jobs import accounting, usagereport

DEFAULT_SINCE = "30d"
DAY = 86400.0
MAX_BUCKETS = 366  # the chart's points: a day each, at most a year
_readers: dict[str, accounting.Reader] = {}  # spool root -> its ledger's reader, kept between pages


def view(console, user, params) -> dict[str, Any]:
    """The report and the per-day CPU series of the rows this user may see; a bad bound is named in `error`."""
    now = time.time()
    by = params.get("by") or "project"
    if by not in usagereport.GROUPS:
        by = "project"
    error = ""
    try:
        since = usagereport.parse_when(params.get("since") or DEFAULT_SINCE, now)
        until = usagereport.parse_when(params["until"], now) if params.get("until") else now
    except ValueError as e:
        error, since, until = str(e), usagereport.parse_when(DEFAULT_SINCE, now), now
    since = max(since, until - MAX_BUCKETS * DAY)
    reader = _readers.get(str(console.spool.root)) or _readers.setdefault(str(console.spool.root),
                                                                          accounting.Reader(console.spool))
    records = [r for r in reader.records(since, until) if user.may_see(r.project)]
    lines = usagereport.report(records, by, since, until)
    series = usagereport.series(records, DAY, since, until)
    return {"by": by, "since": since, "until": until, "error": error, "lines": lines,
            "series": sorted(series.items(), key=lambda kv: -sum(kv[1])),
            "params": {"by": by, "since": params.get("since") or DEFAULT_SINCE, "until": params.get("until") or ""}}


# -- the board's usage columns and the job page's attempts ---------------------------------------------------
SORTS = {"cpu": lambda j, now: j.usage.cpu_s if j.usage else None,
         "wall": lambda j, now: j.usage.wall_s if j.usage and j.usage.wall_s is not None else j.runtime(now),
         "memory": lambda j, now: j.usage.memory_peak_bytes if j.usage else None}


def sort_rows(jobs: list, sort: str, now: float) -> list:
    """The board's rows by a usage column, heaviest first, unknown figures last; as they were for any other sort."""
    key = SORTS.get(sort)
    if key is None:
        return jobs
    figures = {j.sid: key(j, now) for j in jobs}
    return sorted(jobs, key=lambda j: (figures[j.sid] is None, -(figures[j.sid] or 0)))


def attempt_usage(u) -> list[tuple[str, str]]:
    """One attempt's record in words for the job page (empty: not measured)."""
    return [] if u is None else usagereport.facts(u)

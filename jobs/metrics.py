"""What the spool says about the jobs, for Prometheus; and the health checks every server answers.

Both the façade and the console serve these (`/metrics`, `/healthz`,
`/readyz`) without importing each other: they read the spool only, through
jobs/. Everything is derived from the files, so any number of servers report
the same gauges. The counters and the run-time histogram are totals over the
runs this process has seen (a run present at start-up counts once, when first
seen); a run removed by retention keeps its counts.

`SpoolCollector` reads the spool through jobs.index.SpoolIndex (without
definitions: state.json alone), so a scrape costs what changed since the
last one, and derives its counters from the rows that changed. Scrapes are
far apart, so each one sweeps at least a tenth of the finished runs (an
operator's restart of a finished run shows within FINISHED_SLICES scrapes).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .index import Row, SpoolIndex
from .runstate import RunState, from_iso
from .spool import Spool, storage_refused
from .states import TERMINAL, JobState
from .supervisorinfo import isolation_note

FINISHED_SLICES = 10  # finished runs are re-checked at least a tenth per scrape
# run times of real jobs: seconds to a day
RUNTIME_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, float("inf"))


@dataclass
class _Seen:
    started: set[int] = field(default_factory=set)    # attempts seen started
    finished: set[int] = field(default_factory=set)   # attempts seen in a final state


@dataclass
class _Runtimes:
    buckets: list[int] = field(default_factory=lambda: [0] * len(RUNTIME_BUCKETS))
    total: float = 0.0


class SpoolCollector:
    """A prometheus_client collector (anything with collect()) over one spool."""

    def __init__(self, spool: Spool):
        self.spool = spool
        self.index = SpoolIndex(spool, None)
        self.index.cold_slices = FINISHED_SLICES
        self._lock = threading.Lock()
        self._seen_seq = 0                                  # rows changed after this are counted next
        self._seen: dict[str, _Seen] = {}                   # sid -> attempts counted
        self._started: dict[str, int] = {}                  # job -> attempts started
        self._finished: dict[tuple[str, str], int] = {}     # (job, final state) -> runs
        self._runtimes: dict[str, _Runtimes] = {}           # job -> finished runs' durations

    # -- reading the spool ---------------------------------------------------
    def refresh(self) -> None:
        """One pass of the index; count what the changed rows newly show."""
        self.index.refresh()
        rows, _ = self.index.changed_since(self._seen_seq)
        for row in rows:
            if row.removed:
                self._seen.pop(row.sid, None)  # its counts stay in the totals
            elif row.run is not None:
                self._count(row.sid, row.run)
        self._seen_seq = self.index.seq

    def _count(self, sid: str, rs: RunState) -> None:
        seen = self._seen.setdefault(sid, _Seen())
        started = {a.attempt for a in rs.history if a.started_at is not None}
        if rs.started_at is not None and rs.state != JobState.QUEUED:
            started.add(rs.attempt)
        if new := len(started - seen.started):
            self._started[rs.job] = self._started.get(rs.job, 0) + new
            seen.started |= started
        if rs.state in TERMINAL and rs.attempt not in seen.finished:
            seen.finished.add(rs.attempt)
            k = (rs.job, rs.state.value)
            self._finished[k] = self._finished.get(k, 0) + 1
            if rs.started_at is not None and rs.finished_at is not None:
                self._observe(rs.job, max(0.0, rs.finished_at - rs.started_at))

    def _observe(self, job: str, seconds: float) -> None:
        rt = self._runtimes.setdefault(job, _Runtimes())
        rt.total += seconds
        rt.buckets[next(i for i, b in enumerate(RUNTIME_BUCKETS) if seconds <= b)] += 1

    def _runs(self) -> list[Row]:
        """The runs whose state.json was read: what spoolsoap_jobs counts."""
        return [row for row in self.index.live() if row.run is not None]

    # -- the collector protocol ---------------------------------------------
    def describe(self):
        return []  # no up-front scan when registered

    def collect(self):
        with self._lock:
            self.refresh()
            by_state: dict[tuple[str, str], int] = {}
            for run in self._runs():
                by_state[(run.job, run.state)] = by_state.get((run.job, run.state), 0) + 1
            jobs = GaugeMetricFamily("spoolsoap_jobs", "Runs in the spool by job type and state", labels=["job", "state"])
            for (job, state), n in sorted(by_state.items()):
                jobs.add_metric([job, state], n)
            started = CounterMetricFamily("spoolsoap_runs_started", "Attempts seen started", labels=["job"])
            for job, n in sorted(self._started.items()):
                started.add_metric([job], n)
            finished = CounterMetricFamily("spoolsoap_runs_finished",
                                           "Runs seen ending, by final state (FAILED: the failures)",
                                           labels=["job", "state"])
            for (job, state), n in sorted(self._finished.items()):
                finished.add_metric([job, state], n)
            runtime = HistogramMetricFamily("spoolsoap_run_duration_seconds", "Finished runs' run time",
                                            labels=["job"])
            for job, rt in sorted(self._runtimes.items()):
                cumulative, total = [], 0
                for bound, n in zip(RUNTIME_BUCKETS, rt.buckets):
                    total += n
                    cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
                runtime.add_metric([job], cumulative, rt.total)
        yield from (jobs, started, finished, runtime)
        yield GaugeMetricFamily("spoolsoap_queue_length", "Jobs QUEUED (queue.json)", value=len(self.spool.read_queue()))
        yield GaugeMetricFamily("spoolsoap_incoming_specs", "Specs in incoming/ not yet claimed",
                                value=_entries(self.spool.incoming))
        yield GaugeMetricFamily("spoolsoap_supervisor_heartbeat_age_seconds",
                                "Seconds since the supervisor's last heartbeat (+Inf: no supervisor.json)",
                                value=heartbeat_age(self.spool))
        yield GaugeMetricFamily("spoolsoap_spool_free_bytes", "Free bytes for the spool's writers",
                                value=free_bytes(self.spool))


def _entries(directory) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


def heartbeat_age(spool: Spool, now: float | None = None) -> float:
    """Seconds since supervisor.json's heartbeat; +Inf if there is none (the daemon removes it on stop)."""
    info = spool.read_supervisor()
    beat = info.get("heartbeat") if isinstance(info, dict) else None
    try:
        return max(0.0, (time.time() if now is None else now) - from_iso(beat)) if isinstance(beat, str) else float("inf")
    except ValueError:
        return float("inf")


def free_bytes(spool: Spool) -> float:
    try:
        st = os.statvfs(spool.root)
    except OSError:
        return float("nan")
    return float(st.f_bavail * st.f_frsize)


def readiness(spool: Spool, reconcile_seconds: float) -> list[str]:
    """Why this server should not get traffic now (empty: ready).

    The spool must take a write (a tiny file staged in tmp/ and removed) and
    the supervisor must be alive: a heartbeat younger than three reconcile
    periods (it writes one every period).
    """
    problems = []
    try:
        spool.probe_write()
    except OSError as e:
        problems.append(f"spool not writable: {storage_refused(e) or type(e).__name__}: {e.strerror or e}")
    age, limit = heartbeat_age(spool), 3 * reconcile_seconds
    if age == float("inf"):
        problems.append("supervisor not running: no heartbeat (no supervisor.json)")
    elif age > limit:
        problems.append(f"supervisor heartbeat is {age:.1f} s old (limit {limit:g} s: 3 x RECONCILE_SECONDS)")
    return problems


class Health:
    """The answers to /healthz, /readyz and /metrics, as (status, content type, body); servers wrap them."""

    TEXT = "text/plain; charset=utf-8"

    def __init__(self, spool: Spool, reconcile_seconds: float, registry: CollectorRegistry | None = None):
        self.spool = spool
        self.reconcile_seconds = reconcile_seconds
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.registry.register(SpoolCollector(spool))

    def healthz(self) -> tuple[int, str, bytes]:
        return 200, self.TEXT, b"ok\n"

    def readyz(self) -> tuple[int, str, bytes]:
        """503 with the problems, or 200; either way a line on how jobs are confined ("jobs: not isolated: ...")."""
        problems = readiness(self.spool, self.reconcile_seconds)
        note = isolation_note(self.spool)
        details = f"jobs: {note}\n" if note else ""
        if problems:
            return 503, self.TEXT, ("not ready\n" + "".join(f"{p}\n" for p in problems) + details).encode()
        return 200, self.TEXT, ("ready\n" + details).encode()

    def metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

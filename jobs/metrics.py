"""What the spool says about the jobs, for Prometheus; and the health checks every server answers.

Both the façade and the console serve these (`/metrics`, `/healthz`,
`/readyz`) without importing each other: they read the spool only, through
jobs/. Everything is derived from the files, so any number of servers report
the same gauges. The counters and the run-time histogram are totals over the
runs this process has seen (a run present at start-up counts once, when first
seen); a run removed by retention keeps its counts.

`SpoolCollector` stays cheap with many finished runs: a state.json is parsed
again only when its inode, mtime or size changed (the supervisor replaces it
by a rename, so a change is a new inode); `runs/` is listed again only when
its mtime moved (or is under a second old: a coarse clock may not have
moved); the unfinished runs are stat'ed on every scrape, the finished ones
a tenth at a time, in turn (a finished run changes only when an operator
restarts it, so that shows within ten scrapes; everything else at once).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .errors import SpecError
from .runfiles import STATE
from .runstate import RunState, from_iso
from .spool import SERVICE_ID_RE, Spool, read_json, storage_refused
from .states import TERMINAL, JobState

# run times of real jobs: seconds to a day
FINISHED_SLICES = 10  # finished runs are re-checked a tenth per scrape
_FINAL = frozenset(s.value for s in TERMINAL)
RUNTIME_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, float("inf"))


@dataclass
class _Run:
    key: tuple[int, int, int]          # state.json's inode, mtime, size when last read
    job: str
    state: str
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
        self._runs_dir = os.fspath(spool.runs)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._started: dict[str, int] = {}                  # job -> attempts started
        self._finished: dict[tuple[str, str], int] = {}     # (job, final state) -> runs
        self._runtimes: dict[str, _Runtimes] = {}           # job -> finished runs' durations
        self._runs_key: tuple[int, int] | None = None       # runs/'s inode and mtime when last listed
        self._cursor = 0                                    # where the next slice of finished runs starts

    # -- reading the spool ---------------------------------------------------
    def refresh(self) -> None:
        """Bring the cache in step with runs/: read what changed, forget what is gone."""
        self._list_runs()
        active = [sid for sid, run in self._runs.items() if run.state not in _FINAL]
        finished = [sid for sid, run in self._runs.items() if run.state in _FINAL]
        if finished:
            step = -(-len(finished) // FINISHED_SLICES)
            start = self._cursor % len(finished)
            self._cursor = start + step
            active += finished[start:start + step] + finished[:max(0, start + step - len(finished))]
        for sid in active:
            self._check(sid)

    def _list_runs(self) -> None:
        try:
            st = os.stat(self.spool.runs)
        except FileNotFoundError:
            self._runs.clear()
            return
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._runs_key and time.time() - st.st_mtime > 1.0:
            return
        names = {name for name in os.listdir(self.spool.runs) if SERVICE_ID_RE.fullmatch(name)}
        for sid in self._runs.keys() - names:
            del self._runs[sid]
        for sid in names - self._runs.keys():
            self._check(sid)
        self._runs_key = key

    def _check(self, sid: str) -> None:
        try:
            st = os.stat(os.path.join(self._runs_dir, sid, STATE), follow_symlinks=False)
        except OSError:
            return  # being claimed or removed
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        old = self._runs.get(sid)
        if old is None or old.key != key:
            self._read(sid, key, old)

    def _read(self, sid: str, key: tuple[int, int, int], old: _Run | None) -> None:
        try:
            rs = RunState.from_dict(read_json(self.spool.files(sid).state))
        except (OSError, SpecError):
            return  # unreadable or not ours: not counted (jobctl and the supervisor report it)
        run = old or _Run(key, rs.job, rs.state.value)
        run.key, run.job, run.state = key, rs.job, rs.state.value
        started = {a.attempt for a in rs.history if a.started_at is not None}
        if rs.started_at is not None and rs.state != JobState.QUEUED:
            started.add(rs.attempt)
        if new := len(started - run.started):
            self._started[rs.job] = self._started.get(rs.job, 0) + new
            run.started |= started
        if rs.state in TERMINAL and rs.attempt not in run.finished:
            run.finished.add(rs.attempt)
            k = (rs.job, rs.state.value)
            self._finished[k] = self._finished.get(k, 0) + 1
            if rs.started_at is not None and rs.finished_at is not None:
                self._observe(rs.job, max(0.0, rs.finished_at - rs.started_at))
        self._runs[sid] = run

    def _observe(self, job: str, seconds: float) -> None:
        rt = self._runtimes.setdefault(job, _Runtimes())
        rt.total += seconds
        rt.buckets[next(i for i, b in enumerate(RUNTIME_BUCKETS) if seconds <= b)] += 1

    # -- the collector protocol ---------------------------------------------
    def describe(self):
        return []  # no up-front scan when registered

    def collect(self):
        with self._lock:
            self.refresh()
            by_state: dict[tuple[str, str], int] = {}
            for run in self._runs.values():
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
                                value=_count(self.spool.incoming))
        yield GaugeMetricFamily("spoolsoap_supervisor_heartbeat_age_seconds",
                                "Seconds since the supervisor's last heartbeat (+Inf: no supervisor.json)",
                                value=heartbeat_age(self.spool))
        yield GaugeMetricFamily("spoolsoap_spool_free_bytes", "Free bytes for the spool's writers",
                                value=free_bytes(self.spool))


def _count(directory) -> int:
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
        problems = readiness(self.spool, self.reconcile_seconds)
        if problems:
            return 503, self.TEXT, ("not ready\n" + "".join(f"{p}\n" for p in problems)).encode()
        return 200, self.TEXT, b"ready\n"

    def metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

"""What the spool says about the jobs, for Prometheus; and the health checks every server answers.

Both the façade and the console serve these (`/metrics`, `/healthz`,
`/readyz`) without importing each other: they read the spool only, through
jobs/. The spool's series (SpoolCollector) are exported by ONE server, the
console (Health(spool_series=True)), behind its gate (operators, a scraper's
token): they count every project's jobs, and a sum over servers would count
them twice. The façade's /metrics is open to anyone who reaches its port, so
it shows its own series only. Every server exports its own process's series
(ProcessCollector, BuildInfo) and counts the spool writes the storage
refuses it (CountingSpool).

The gauges come from the files. The counters and histograms are the
supervisor's own (jobs.supervisorinfo.SupervisorCounters, read from its
counters file), so they survive restarts of any process and the removal of
runs by retention, and never go backwards. Every labelled series exists from
the first scrape, at zero: each job type of the definitions in each state;
the usage counters for each project label the supervisor has given out.

`SpoolCollector` reads the spool through jobs.index.SpoolIndex (without
definitions: state.json alone), so a scrape costs what changed since the
last one. Scrapes are far apart, so each one sweeps at least a tenth of the
finished runs (an operator's restart of a finished run shows within
FINISHED_SLICES scrapes).
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .index import Row, SpoolIndex
from .runstate import from_iso
from .spool import STORAGE_ERRNOS, Spool, storage_refused
from .states import TERMINAL, JobState
from .supervisorinfo import OVERFLOW_PROJECT, REJECTED_KINDS, SECONDS_BUCKETS, SupervisorCounters, isolation_note

FINISHED_SLICES = 10  # finished runs are re-checked at least a tenth per scrape
RUNTIME_BUCKETS = SECONDS_BUCKETS
STATES = tuple(s.value for s in JobState)
FINAL_STATES = tuple(s.value for s in JobState if s in TERMINAL)
ERRNO_NAMES = tuple(sorted(storage_refused(OSError(n, "")) for n in STORAGE_ERRNOS))


class SpoolCollector:
    """A prometheus_client collector (anything with collect()) over one spool: the spool's series."""

    def __init__(self, spool: Spool, job_types: Iterable[str] = (), clock=time.time):
        self.spool = spool
        self.job_types = tuple(job_types)  # every series of each exists at zero
        self.clock = clock
        self.index = SpoolIndex(spool, None)
        self.index.cold_slices = FINISHED_SLICES
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """One pass of the index: re-read what changed since the last scrape."""
        self.index.refresh()

    def _runs(self) -> list[Row]:
        """The runs whose state.json was read: what spoolsoap_jobs counts."""
        return [row for row in self.index.live() if row.run is not None]

    # -- the collector protocol ---------------------------------------------
    def describe(self):
        return []  # no up-front scan when registered

    def collect(self):
        with self._lock:
            self.refresh()
            runs = self._runs()
        yield from self.gauges(runs)
        yield from supervisor_counts(SupervisorCounters.load(self.spool), self.job_types)

    def gauges(self, runs: list[Row]):
        """What the files say now: runs by job type and state, the queue, the supervisor, the disk."""
        by_state = {(job, state): 0 for job in self.job_types for state in STATES}
        for run in runs:
            by_state[(run.job, run.state)] = by_state.get((run.job, run.state), 0) + 1
        jobs = GaugeMetricFamily("spoolsoap_jobs", "Runs in the spool by job type and state", labels=["job", "state"])
        for (job, state), n in sorted(by_state.items()):
            jobs.add_metric([job, state], n)
        yield jobs
        waiting = [r.run.queued_at for r in runs if r.state == JobState.QUEUED.value and r.run.queued_at is not None]
        yield GaugeMetricFamily("spoolsoap_oldest_queued_age_seconds",
                                "Seconds the longest-waiting QUEUED job has waited (0: none waits)",
                                value=max(0.0, self.clock() - min(waiting)) if waiting else 0.0)
        yield GaugeMetricFamily("spoolsoap_queue_length", "Jobs QUEUED (queue.json)", value=len(self.spool.read_queue()))
        yield GaugeMetricFamily("spoolsoap_incoming_specs", "Specs in incoming/ not yet claimed",
                                value=_entries(self.spool.incoming))
        yield GaugeMetricFamily("spoolsoap_supervisor_heartbeat_age_seconds",
                                "Seconds since the supervisor's last heartbeat (+Inf: no supervisor.json)",
                                value=heartbeat_age(self.spool))
        yield GaugeMetricFamily("spoolsoap_spool_free_bytes", "Free bytes for the spool's writers",
                                value=free_bytes(self.spool))


def supervisor_counts(counts: SupervisorCounters, job_types: Iterable[str]):
    """The supervisor's cumulative counters as metric families, each job type's series at zero."""
    job_types = tuple(job_types)
    t = counts.tallies

    def counter(name: str, doc: str, tally: str, label: str, keys: Iterable[str]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=[label])
        for key in sorted({*keys, *t[tally]}):
            family.add_metric([key], t[tally].get(key, 0))
        return family

    yield counter("spoolsoap_runs_started", "Attempts the supervisor started", "started", "job", job_types)
    finished = CounterMetricFamily("spoolsoap_runs_finished",
                                   "Runs that reached a final state (FAILED: the failures)", labels=["job", "state"])
    for key in sorted({*(f"{j}/{s}" for j in job_types for s in FINAL_STATES), *t["finished"]}):
        finished.add_metric(key.split("/", 1), t["finished"].get(key, 0))
    yield finished
    yield counter("spoolsoap_retries", "Failed attempts queued again for an automatic retry", "retries", "job",
                  job_types)
    yield counter("spoolsoap_spawn_failures", "Attempts whose program could not be started", "spawn_failures", "job",
                  job_types)
    yield counter("spoolsoap_rejected", "Files the supervisor moved to rejected/: specs and operator commands",
                  "rejected", "kind", REJECTED_KINDS)
    refused = CounterMetricFamily("spoolsoap_spool_writes_refused",
                                  "Spool writes the storage refused (full, read-only, failing), by writer and errno",
                                  labels=["component", "errno"])
    for name in sorted({*ERRNO_NAMES, *t["refused_writes"]}):
        refused.add_metric(["supervisor", name], t["refused_writes"].get(name, 0))
    yield refused
    for histogram, name, doc in (("run_seconds", "spoolsoap_run_duration_seconds", "Finished runs' run time"),
                                 ("queue_wait_seconds", "spoolsoap_queue_wait_seconds",
                                  "How long attempts waited from QUEUED to their start")):
        family = HistogramMetricFamily(name, doc, labels=["job"])
        kept = counts.histograms[histogram]
        for job in sorted({*job_types, *kept}):
            h = kept.get(job) or {"buckets": [0] * len(SECONDS_BUCKETS), "sum": 0.0}
            cumulative, total = [], 0
            for bound, n in zip(SECONDS_BUCKETS, h["buckets"]):
                total += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
            family.add_metric([job], cumulative, h["sum"])
        yield family
    yield from usage_counts(counts, job_types)


def usage_counts(counts: SupervisorCounters, job_types: tuple[str, ...]):
    """What ended attempts used, by project label and job type: each label's series for each job type at zero."""
    labels = [*counts.projects, OVERFLOW_PROJECT]
    for what, doc in (("cpu_seconds", "CPU seconds (user + system; 0 where not measured) of ended attempts"),
                      ("wall_seconds", "Wall seconds of ended attempts"),
                      ("jobs", "Jobs that reached a final state")):
        kept = counts.usage[what]
        family = CounterMetricFamily(f"spoolsoap_usage_{what}", doc, labels=["project", "job"])
        for project in sorted({*labels, *kept}):
            for job in sorted({*job_types, *kept.get(project, {})}):
                family.add_metric([project, job], kept.get(project, {}).get(job, 0))
        yield family


class BuildInfo:
    """spoolsoap_build_info: the version, the Python version and the git commit (if known) of this process."""

    def collect(self):
        info = InfoMetricFamily("spoolsoap_build", "What this process runs")
        info.add_metric([], {"version": _version(), "python": platform.python_version(), "commit": git_commit()})
        yield info


def own_process_collectors(registry: CollectorRegistry) -> None:
    """This process's own series (CPU, memory, open files, start time; build information) on registry."""
    ProcessCollector(registry=registry)
    registry.register(BuildInfo())


def refused_writes(component: str, registry: CollectorRegistry | None) -> Counter:
    """spoolsoap_<component>_spool_writes_refused_total{errno}, each errno at zero (a CountingSpool's `refused`)."""
    counter = Counter(f"spoolsoap_{component}_spool_writes_refused",
                      f"The {component}'s spool writes the storage refused", ["errno"], registry=registry)
    for name in ERRNO_NAMES:
        counter.labels(name)
    return counter


class CountingSpool(Spool):
    """A server's Spool: each write the storage refuses is counted by errno in `refused`, then raised as before."""

    refused: Counter | None = None

    def _counted(self, write: Callable, *args):
        try:
            return write(*args)
        except OSError as e:
            if self.refused is not None and (name := storage_refused(e)) is not None:
                self.refused.labels(name).inc()
            raise

    def submit(self, spec_json: bytes, sid: str) -> bool:
        return self._counted(super().submit, spec_json, sid)

    def send_command(self, sid: str, verb: str, origin: str):
        return self._counted(super().send_command, sid, verb, origin)

    def append_notification(self, sid: str, message: str) -> int:
        return self._counted(super().append_notification, sid, message)

    def write_hint(self, dest, data: bytes) -> None:
        return self._counted(super().write_hint, dest, data)


def _version() -> str:
    try:
        return metadata.version("spoolsoap")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str:
    """The commit of the checkout this code runs from, or "unknown" (an installed wheel, no git)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else "unknown"


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

    def __init__(self, spool: Spool, reconcile_seconds: float, registry: CollectorRegistry | None = None,
                 job_types: Iterable[str] = (), spool_series: bool = False):
        """spool_series: whether this server exports the spool's series (the console does; see the module doc)."""
        self.spool = spool
        self.reconcile_seconds = reconcile_seconds
        self.registry = registry or CollectorRegistry(auto_describe=False)
        own_process_collectors(self.registry)
        if spool_series:
            self.registry.register(SpoolCollector(spool, job_types))

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

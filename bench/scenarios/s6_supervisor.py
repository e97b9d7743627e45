"""S6: the supervisor's CPU and memory, idle and with the fleet running (measured while S1 polls)."""
from __future__ import annotations

import statistics
import time

from ..measure import Sampler
from ..report import Figure, Target, Value
from ..system import Bench, log


def s6_idle(b: Bench) -> Sampler:
    """The supervisor's CPU and memory before any job runs: the baseline of S6."""
    log(f"S6 supervisor cost: idle baseline for {b.plan.idle_seconds:g} s (no job running)")
    with Sampler(b.supervisor.pid) as idle:
        time.sleep(b.plan.idle_seconds)
    return idle


def s6_report(b: Bench, idle: Sampler, sup: Sampler, before: dict, after: dict) -> None:
    """S6's figures: `sup` sampled while S1 polled the fleet, `before`/`after` the fleet's usage around it."""
    n = b.plan.jobs
    share, idle_share = sup.share * 100, idle.share * 100
    rss, idle_rss = statistics.median(sup.rss) / 2**20, statistics.median(idle.rss) / 2**20
    b.report.add(Figure("S6", f"supervisor CPU, {n:,} jobs running", "% of a core",
                        Value(share, share, share, f"one {sup.elapsed:.0f} s window", 1),
                        Value(idle_share, idle_share, idle_share, f"one {idle.elapsed:.0f} s window", 1),
                        "same daemon, no job", "{:.2f}"))
    b.report.add(Figure("S6", f"supervisor RSS, {n:,} jobs running", "MB",
                        Value(rss, min(sup.rss) / 2**20, max(sup.rss) / 2**20, f"min–max of {len(sup.rss)} samples",
                              len(sup.rss)),
                        Value(idle_rss, min(idle.rss) / 2**20, max(idle.rss) / 2**20, "", len(idle.rss)),
                        "same daemon, no job", "{:.1f}"))
    jobs_cpu = (after["cpu"] - before["cpu"]) / sup.elapsed * 100
    b.report.notes.append(
        f"S6: during the same window the {after['count']} job processes ({after['shims']} shims + programs) used "
        f"{jobs_cpu:.1f} % of a core together and {after['rss'] / 2**30:.2f} GiB RSS "
        f"(a shim's own memory, USS: {after['shim_uss'] / 2**20:.1f} MiB); the supervisor's share is its "
        f"process's user+system CPU over the window")
    b.report.target(Target("S6", f"supervisor CPU with {n:,} jobs running", share, 5, "<=", "% of a core",
                           f"over {sup.elapsed:.0f} s while S1 polled"))
    b.report.target(Target("S6", f"supervisor RSS with {n:,} jobs running", max(sup.rss) / 2**20, 150, "<=", "MB",
                           "largest sample"))

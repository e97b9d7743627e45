"""S11 (issue 19): fair share under a flood, the supervisor's cost with a long queue over many projects, and
`jobctl usage` over the accounting ledger.

Jobs are dropped straight into incoming/ (as S4 does) with an owner project of
their own: a job's project is its spec's owner project, and the bench's
devauth users all belong to one.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import msgspec

from jobs import accounting
from jobs.spec import JobSpec
from jobs.times import from_iso
from jobs.usage import Usage
from jobs.wait import wait_for

from ..measure import Sampler
from ..report import Figure, Target, Value, value_of, value_of_runs
from ..stack import Env
from ..stats import percentile, summary
from ..system import Bench, log
from .s4_spawn import drop_spec


USAGE_ATTEMPTS = 100_000  # the figure: `jobctl usage` over this many ended attempts
USAGE_CALLS = 4


def _spec(sid: str, project: str, hold_ms: int) -> JobSpec:
    return JobSpec(sid, "stamp", {"holdMs": hold_ms}, None, {"username": f"{project}-user", "project": project})


def _wait_ended(b: Bench, env: Env, sids: list[str], timeout: float) -> dict[str, tuple[float, float]]:
    """Every run's (started_at, finished_at) once all of them SUCCEEDED (one that ends otherwise breaks S11)."""
    left, done = list(sids), {}

    def all_done():
        while left:
            s = b.state(left[-1], env)
            if s is None or s["state"] not in ("SUCCEEDED", "FAILED", "ABORTED"):
                return False
            if s["state"] != "SUCCEEDED":
                raise RuntimeError(f"S11: {left[-1]} ended {s['state']}: {s.get('reason')}")
            done[left.pop()] = (from_iso(s["started_at"]), from_iso(s["finished_at"]))
        return True
    wait_for(all_done, timeout, 0.2, f"S11: {len(sids)} jobs SUCCEEDED")
    return done


def _span(times: list[tuple[float, float]]) -> float:
    """From the first start to the last end."""
    return max(t[1] for t in times) - min(t[0] for t in times)


def _busy(times: list[tuple[float, float]], slots: int) -> float:
    """The share of the slots' time over the span that A's attempts held (the rest: spawning, idle slots, B)."""
    return sum(end - start for start, end in times) / (_span(times) * slots)


def _flood(b: Bench, env: Env, tag: str, with_b: bool, size: int | None = None
           ) -> tuple[list[tuple[float, float]], list[float]]:
    """A floods `size` (plan.s11_flood) jobs; once they are claimed, B (when with_b) submits plan.s11_b:
    A's (started, finished) times and B's waits (drop -> started). Projects named after tag: no history."""
    plan, spool = b.plan, b.spool(env)
    a = [f"{tag}-a-{i:04d}" for i in range(size or plan.s11_flood)]
    for sid in a:
        drop_spec(spool, _spec(sid, f"{tag}-a", plan.s11_hold_ms))
    wait_for(lambda: not any(spool.incoming.iterdir()), 120, 0.05, "S11: A's flood claimed")
    dropped = {}
    if with_b:
        for i in range(plan.s11_b):
            sid = f"{tag}-b-{i:02d}"
            dropped[sid] = drop_spec(spool, _spec(sid, f"{tag}-b", plan.s11_hold_ms))
    timeout = 120 + len(a) * (plan.s11_hold_ms / 1000 + 1) / plan.s11_slots
    ended = _wait_ended(b, env, a + list(dropped), timeout)
    waits = [ended[sid][0] - t for sid, t in dropped.items()]
    return [ended[sid] for sid in a], waits


def s11_fair_share(b: Bench) -> None:
    """A floods, then B submits a few: B waits at most two slot turnovers, A's throughput is unchanged."""
    plan = b.plan
    log(f"S11 fair share: project A floods {plan.s11_flood} jobs of {plan.s11_hold_ms} ms, then B submits "
        f"{plan.s11_b}; {plan.s11_slots} slots; vs A alone, {plan.s11_blocks} interleaved block(s)")
    env = b.side_env("s11-share", MAX_PARALLEL_JOBS=plan.s11_slots)
    procs, durations, waits, tps, busy = [], [], [], {True: [], False: []}, {True: [], False: []}
    try:
        procs.append(b.stack.supervisor(env))
        # Not measured: the daemon's first flood pays its warm-up, and the first measured flood is one with B.
        _flood(b, env, "warm-up", False, plan.s11_slots * 8)
        for block in range(plan.s11_blocks):
            for with_b in ((True, False) if block % 2 == 0 else (False, True)):
                a, w = _flood(b, env, f"{'mixed' if with_b else 'alone'}{block}", with_b)
                tps[with_b].append(len(a) / _span(a))
                busy[with_b].append(_busy(a, plan.s11_slots))
                waits += w
                durations += [end - start for start, end in a] if with_b else []
    finally:
        b.stop_side(procs, [env])
    turnover = statistics.median(durations)  # every slot freed once
    ws, p95 = summary(waits), percentile(waits, 95)
    tp_mixed, tp_alone = statistics.median(tps[True]), statistics.median(tps[False])
    b.report.add(Figure("S11", f"project B's wait behind A's flood of {plan.s11_flood:,}, p50", "s",
                        value_of(ws), Value(turnover, turnover, turnover, "median attempt of A", len(durations)),
                        "one slot turnover", "{:.2f}", ratio=ws["median"] / turnover, ratio_name="wait/turnover"))
    b.report.add(Figure("S11", f"project A's throughput, {plan.s11_slots} slots, B submitting {plan.s11_b}",
                        "jobs/s", value_of_runs(tps[True], what="floods"), value_of_runs(tps[False], what="floods"),
                        "A alone", "{:.2f}",
                        ratio=tp_mixed / tp_alone, ratio_name="with B/alone"))
    b.report.notes.append("S11: slots held by A's attempts over each flood's span (the rest: spawning, idle, B): "
                          f"with B {', '.join(f'{x:.0%}' for x in busy[True])}, "
                          f"A alone {', '.join(f'{x:.0%}' for x in busy[False])}")
    b.report.target(Target("S11", "project B's wait p95 behind A's flood, in slot turnovers", p95 / turnover, 2, "<=",
                           "turnovers", f"p95 {p95:.2f} s, a turnover (every slot freed once: A's median attempt) "
                                        f"{turnover:.2f} s, {len(waits)} jobs of B"))
    b.report.target(Target("S11", "project A's throughput with B vs A alone", tp_mixed / tp_alone, 0.95, ">=", "",
                           f"{tp_mixed:.2f} vs {tp_alone:.2f} jobs/s, medians of {plan.s11_blocks} floods of "
                           f"{plan.s11_flood} jobs each; B's jobs "
                           f"took {plan.s11_b / (plan.s11_flood + plan.s11_b):.1%} of the slots"))


def s11_queue_cpu(b: Bench) -> None:
    """The supervisor's CPU with plan.s11_queued long jobs queued over plan.s11_projects projects, vs nothing queued."""
    plan = b.plan
    n, projects = plan.s11_queued, plan.s11_projects
    log(f"S11 queue cost: {n:,} jobs queued over {projects} projects behind {plan.s11_queue_slots} slot(s)")
    env = b.side_env("s11-queue", MAX_PARALLEL_JOBS=plan.s11_queue_slots)
    procs = []
    try:
        procs.append(b.stack.supervisor(env))
        with Sampler(procs[0].pid) as idle:
            time.sleep(plan.s11_cpu_seconds)
        spool, t0 = b.spool(env), time.monotonic()
        for i in range(n):  # long jobs: the slots stay busy, the rest stays queued
            drop_spec(spool, _spec(f"q-{i:05d}", f"proj-{i % projects:02d}", 600_000), durable=False)
        wait_for(lambda: not any(spool.incoming.iterdir()) and len(spool.read_queue()) >= n - plan.s11_queue_slots,
                 max(300, n * 0.05), 0.5, f"S11: {n} jobs queued")
        log(f"  {n:,} jobs dropped and queued in {time.monotonic() - t0:.1f} s")
        time.sleep(plan.s11_settle_seconds)  # the claims' last writes: the window measures the queue's steady cost
        with Sampler(procs[0].pid) as loaded:
            time.sleep(plan.s11_cpu_seconds)
        queued = len(spool.read_queue())
    finally:
        b.stop_side(procs, [env])
    share, idle_share = loaded.share * 100, idle.share * 100
    b.report.add(Figure("S11", f"supervisor CPU, {n:,} jobs queued over {projects} projects", "% of a core",
                        Value(share, share, share, f"one {loaded.elapsed:.0f} s window", 1),
                        Value(idle_share, idle_share, idle_share, f"one {idle.elapsed:.0f} s window", 1),
                        "same daemon, nothing queued", "{:.2f}"))
    b.report.target(Target("S11", f"supervisor CPU with {n:,} jobs queued over {projects} projects", share, 2, "<=",
                           "% of a core", f"over {loaded.elapsed:.0f} s from {plan.s11_settle_seconds:g} s after "
                                          f"the last claim, {queued:,} in the queue file, "
                                          f"{plan.s11_queue_slots} running"))


def s11_usage_report(b: Bench) -> None:
    """`jobctl usage` over 100,000 ended attempts in the accounting ledger: a whole process, cold (its first call)."""
    n = 5_000 if b.plan.quick else USAGE_ATTEMPTS
    env = b.side_env("s11-usage")
    spool, now = b.spool(env).ensure(), time.time()
    log(f"S11 usage report: `jobctl usage` over {n:,} attempts of {b.plan.s11_projects} projects in the ledger")
    template = accounting.record("u-0", "stamp", {}, 1, now - 70, now - 60,
                                 Usage(1.5, 0.5, 50 << 20, 4096, 8192, 0, 0, 1.0, 10.0, "cgroup"))
    ledger = accounting.Ledger(spool, 400 * 86400)
    ledger.pending = [msgspec.structs.replace(template, sid=f"u-{i:06d}", project=f"proj-{i % b.plan.s11_projects:02d}",
                                              username=f"user-{i % 200}", finished_at=now - 60 - i * 10)
                      for i in range(n)]  # ten seconds apart: 100,000 span 12 days, in one or two month files
    ledger.flush()
    command = [sys.executable, "-m", "jobctl", "--env-file", str(env.path), "usage", "--since", "400d", "--json"]
    times, cpu = [], []
    for _ in range(USAGE_CALLS):
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        answer = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(time.monotonic() - started)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    counted = sum(g["attempt_count"] for g in json.loads(answer)["groups"])
    if counted != n:
        raise RuntimeError(f"S11: jobctl usage counted {counted} attempts of {n}")
    b.report.add(Figure("S11", f"jobctl usage over {n:,} attempts, cold", "s",
                        Value(times[0], times[0], times[0], "the first call", 1),
                        value_of_runs(times[1:], what="calls"), "the calls after it", "{:.2f}"))
    b.report.notes.append(f"S11: jobctl usage over {n:,} attempts: CPU {', '.join(f'{t:.2f}' for t in cpu)} s "
                          f"(user + system of each process, the first cold)")
    b.report.target(Target("S11", f"jobctl usage over {n:,} finished attempts, cold", times[0], 1, "<=", "s",
                           f"a whole process, its first call; then {', '.join(f'{t:.2f}' for t in times[1:])} s"))

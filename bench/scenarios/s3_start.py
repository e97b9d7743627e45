"""S3: start latency, sequential and with concurrent clients, next to the tutorial waiter and the HTTP floor."""
from __future__ import annotations

import os
import signal
import statistics

import psutil

from .. import httpload, soap
from ..measure import raise_errors, sequential
from ..report import Figure, Target, value_of, value_of_runs
from ..stats import summary
from ..system import BASE_NS, HOST, MS, NOOP, Bench, log

BURSTS = 3  # of each kind: one burst of 200 starts lasts a fraction of a second, too short for one rate
PAUSED_RATE, SPAWNING_RATE = 1000.0, 600.0  # starts/s from 50 clients (issue 20)


def s3_start_latency(b: Bench) -> None:
    """startX answered (spec durable in the spool), auth cached; sequential and 50 concurrent clients.

    The concurrent bursts run BURSTS times while the supervisor spawns the jobs,
    then BURSTS times with it paused (SIGSTOP: the façade's own share, its
    claims not competing for the CPU and the disk); rates are the median burst.
    """
    plan = b.plan
    log(f"S3 start latency: {plan.start_seq} sequential, {plan.start_clients} concurrent clients")
    extra, tok = b.auth.extra(), b.token(0)

    def ours_body(sid):
        return b.ours(NOOP, soap.start_body(NOOP[0], "startBenchNoop", sid, tok, extra, []))

    def base_body(sid):
        return b.base(soap.start_body(BASE_NS, "startWaiter", sid, tok, extra, [("secondsToWait", 1)]))

    # warm the per-worker auth caches (both workers) and the connection
    httpload.batch(HOST, b.env.port, [ours_body(f"warm-{i}") for i in range(20)], 4, soap.not_fault)
    seq = sequential(HOST, b.env.port, [ours_body(f"st-seq-{i:04d}") for i in range(plan.start_seq)], _accepted)
    n_conc = plan.start_clients * plan.start_each
    bursts = 1 if plan.quick else BURSTS

    def burst(name: str, prefix: str) -> list[httpload.Result]:
        done = []
        for r in range(bursts):
            done.append(httpload.batch(HOST, b.env.port, [ours_body(f"{prefix}-{r}-{i:04d}") for i in range(n_conc)],
                                       plan.start_clients, soap.not_fault))
            raise_errors(name, done[-1])
        return done

    concs = burst("S3 concurrent starts", "st-conc")
    with ServerCpu(b.server_pids(b.floor)) as floor_cpu:
        floor = httpload.batch(HOST, b.floor_port, [ours_body(f"floor-{i}") for i in range(n_conc)],
                               plan.start_clients)
    raise_errors("S3 floor", floor)
    # the same burst with the supervisor paused: the façade's own share, without 200 spawns meanwhile
    os.kill(b.supervisor.pid, signal.SIGSTOP)
    try:
        with ServerCpu(b.server_pids(b.facade)) as start_cpu:
            alones = burst("S3 concurrent starts, supervisor paused", "st-alone")
    finally:
        os.kill(b.supervisor.pid, signal.SIGCONT)
    bseq = sequential(HOST, b.base_port, [base_body(f"bst-seq-{i:04d}") for i in range(plan.base_start_seq)],
                      _accepted)
    bconc = httpload.batch(HOST, b.base_port, [base_body(f"bst-conc-{i:04d}") for i in range(plan.base_start_clients)],
                           plan.base_start_clients, soap.not_fault)
    raise_errors("S3 baseline concurrent starts", bconc)
    s, bs, bc = summary(seq), summary(bseq), summary(bconc.latencies)
    c, al = (summary([x for r in runs for x in r.latencies]) for runs in (concs, alones))
    fl = summary(floor.latencies)
    rate, alone_rate = (statistics.median(r.rate for r in runs) for runs in (concs, alones))
    b.report.add(Figure("S3", "start latency, sequential, p50", "ms", value_of(s, scale=MS),
                        value_of(bs, scale=MS), "tutorial waiter", "{:.2f}", ratio=s["median"] / bs["median"]))
    b.report.add(Figure("S3", f"start latency, {plan.start_clients} concurrent clients, p50", "ms",
                        value_of(c, scale=MS), value_of(bc, scale=MS), "tutorial waiter", "{:.2f}",
                        ratio=c["median"] / bc["median"]))
    b.report.add(Figure("S3", f"start latency, {plan.start_clients} concurrent clients, p50, vs the HTTP floor", "ms",
                        value_of(c, scale=MS), value_of(fl, scale=MS), "no-op WSGI app, same server", "{:.2f}",
                        ratio=c["median"] / fl["median"]))
    b.report.add(Figure("S3", f"start latency, {plan.start_clients} concurrent clients, p50, supervisor paused "
                              "(the façade alone) vs the HTTP floor", "ms",
                        value_of(al, scale=MS), value_of(fl, scale=MS), "no-op WSGI app, same server", "{:.2f}",
                        ratio=al["median"] / fl["median"]))
    for runs, when in ((concs, "the supervisor spawning them"), (alones, "supervisor paused")):
        b.report.add(Figure("S3", f"starts/s, {plan.start_clients} concurrent clients, {when}", "starts/s",
                            value_of_runs([r.rate for r in runs], what="bursts"), value_of_runs([floor.rate]),
                            "no-op WSGI app, same server", "{:,.0f}",
                            ratio=statistics.median(r.rate for r in runs) / floor.rate))
    per_start, per_request = start_cpu.seconds / (n_conc * bursts), floor_cpu.seconds / n_conc
    b.report.add(Figure("S3", "façade CPU (user + system, all its processes) per start, supervisor paused", "ms",
                        value_of_runs([per_start * MS]), value_of_runs([per_request * MS]),
                        "no-op WSGI app, same server, per request", "{:.3f}",
                        ratio=per_start / per_request if per_request else None))  # --quick: below the clock tick
    b.report.notes.append(
        f"S3: {plan.start_clients} clients each send {plan.start_each} starts back to back ({n_conc} jobs, each "
        f"spawned by the supervisor meanwhile; {bursts} bursts, then {bursts} with the supervisor paused): "
        f"{rate:.0f} and {alone_rate:.0f} starts/s; the HTTP floor (a WSGI app that answers "
        f"without parsing, same server settings) does {floor.rate:.0f} requests/s with p50 "
        f"{fl['median'] * MS:.1f} ms at the same concurrency: with {plan.start_clients} requests in flight, "
        f"p50 ≈ {plan.start_clients} / throughput (Little's law)")
    b.report.target(Target("S3", "start p50, sequential (auth cached)", s["median"] * MS, 5, "<=", "ms",
                           f"p99 {s['p99'] * MS:.1f} ms"))
    # No p50 target at 50 clients: with 50 in flight p50 ≈ 50 / rate (Little's law), so the old "<= 5 ms" asked
    # for 10,000 starts/s, which the no-op floor itself does not reach; issue 20's rates below are the targets.
    b.report.target(Target("S3", f"starts/s, {plan.start_clients} concurrent clients, supervisor paused",
                           alone_rate, PAUSED_RATE, ">=", "starts/s",
                           f"median of {bursts} bursts of {n_conc}; p50 {al['median'] * MS:.1f} ms"))
    b.report.target(Target("S3", f"starts/s, {plan.start_clients} concurrent clients, the supervisor spawning them",
                           rate, SPAWNING_RATE, ">=", "starts/s",
                           f"median of {bursts} bursts of {n_conc}; p50 {c['median'] * MS:.1f} ms"))


class ServerCpu:
    """CPU seconds (user + system) the given processes use inside the block: a figure other load disturbs less
    than a rate (issue 20: starts/s needs CPU per start well under 2 ms on 2 cores)."""

    def __init__(self, procs: list[psutil.Process]):
        self.procs, self.seconds = procs, 0.0

    def _total(self) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in self.procs))

    def __enter__(self) -> "ServerCpu":
        self._start = self._total()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self._total() - self._start


def _accepted(response: bytes) -> str:
    """A start answered with HTTP 200 and no fault."""
    if httpload.status_of(response) != 200:
        raise RuntimeError(f"HTTP {httpload.status_of(response)}: {httpload.body_of(response)[:300]!r}")
    return soap.not_fault(response)

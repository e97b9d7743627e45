"""S3: start latency, sequential and with concurrent clients, next to the tutorial waiter and the HTTP floor."""
from __future__ import annotations

import os
import signal

from .. import httpload, soap
from ..measure import raise_errors, sequential
from ..report import Figure, Target, value_of
from ..stats import summary
from ..system import BASE_NS, HOST, MS, NOOP, Bench, log


def s3_start_latency(b: Bench) -> None:
    """startX answered (spec durable in the spool), auth cached; sequential and 50 concurrent clients."""
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
    conc = httpload.batch(HOST, b.env.port, [ours_body(f"st-conc-{i:04d}")
                                             for i in range(plan.start_clients * plan.start_each)],
                          plan.start_clients, soap.not_fault)
    raise_errors("S3 concurrent starts", conc)
    n_conc = plan.start_clients * plan.start_each
    floor = httpload.batch(HOST, b.floor_port, [ours_body(f"floor-{i}") for i in range(n_conc)], plan.start_clients)
    raise_errors("S3 floor", floor)
    # the same burst with the supervisor paused: the façade's own share, without 200 spawns meanwhile
    os.kill(b.supervisor.pid, signal.SIGSTOP)
    try:
        alone = httpload.batch(HOST, b.env.port, [ours_body(f"st-alone-{i:04d}") for i in range(n_conc)],
                               plan.start_clients, soap.not_fault)
    finally:
        os.kill(b.supervisor.pid, signal.SIGCONT)
    raise_errors("S3 concurrent starts, supervisor paused", alone)
    bseq = sequential(HOST, b.base_port, [base_body(f"bst-seq-{i:04d}") for i in range(plan.base_start_seq)],
                      _accepted)
    bconc = httpload.batch(HOST, b.base_port, [base_body(f"bst-conc-{i:04d}") for i in range(plan.base_start_clients)],
                           plan.base_start_clients, soap.not_fault)
    raise_errors("S3 baseline concurrent starts", bconc)
    s, c, bs, bc = summary(seq), summary(conc.latencies), summary(bseq), summary(bconc.latencies)
    fl, al = summary(floor.latencies), summary(alone.latencies)
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
    b.report.notes.append(
        f"S3: {plan.start_clients} clients each send {plan.start_each} starts back to back ({n_conc} jobs, each "
        f"spawned by the supervisor meanwhile): {conc.rate:.0f} starts/s; the HTTP floor (a WSGI app that answers "
        f"without parsing, same server settings) does {floor.rate:.0f} requests/s with p50 "
        f"{fl['median'] * MS:.1f} ms at the same concurrency: with {plan.start_clients} requests in flight, "
        f"p50 ≈ {plan.start_clients} / throughput (Little's law)")
    b.report.target(Target("S3", "start p50, sequential (auth cached)", s["median"] * MS, 5, "<=", "ms",
                           f"p99 {s['p99'] * MS:.1f} ms"))
    b.report.target(Target("S3", f"start p50, {plan.start_clients} concurrent clients (auth cached)",
                           c["median"] * MS, 5, "<=", "ms",
                           f"p99 {c['p99'] * MS:.1f} ms, {conc.rate:.0f} starts/s"))


def _accepted(response: bytes) -> str:
    """A start answered with HTTP 200 and no fault."""
    if httpload.status_of(response) != 200:
        raise RuntimeError(f"HTTP {httpload.status_of(response)}: {httpload.body_of(response)[:300]!r}")
    return soap.not_fault(response)

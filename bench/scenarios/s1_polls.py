"""S1: poll latency under realistic load (N workflows polling every 6 s), with S6 measured meanwhile."""
from __future__ import annotations

from .. import httpload
from ..fleet import fleet_usage, poll_load
from ..measure import Sampler
from ..report import Figure, Target, Value, value_of
from ..stats import percentile, summary
from ..system import MS, POLL_PERIOD, Bench, log
from .s6_supervisor import s6_report


def _windows(res: httpload.Result, seconds: float, count: int) -> list[float]:
    """p99 of each of `count` equal windows of the run (by scheduled send time)."""
    if not res.sent_at:
        return []
    t0 = min(res.sent_at)
    width = seconds / count
    buckets: list[list[float]] = [[] for _ in range(count)]
    for sent, lat in zip(res.sent_at, res.latencies):
        buckets[min(count - 1, int((sent - t0) / width))].append(lat)
    return [percentile(x, 99) for x in buckets if x]


def _floor(b: Bench, n: int, seconds: float) -> tuple[dict, Value]:
    """The no-op app through the same server under the same schedule, fleet running: what the host alone allows.

    Each poll is on a new connection, as ours, from the same client. A p99 of
    ours near this one is the host's (2,000 job processes on 2 cores, the
    client's own delays), not the façade's.
    """
    log(f"S1 poll load N={n}: the HTTP floor (no-op app, same server) for {seconds:g} s")
    res = poll_load(b, n, seconds, baseline=False, floor=True)
    s = summary(res.latencies)
    windows = _windows(res, seconds, max(1, b.plan.poll_windows // 2))
    b.report.notes.append(f"S1 N={n:,} floor: the no-op app answered {len(res.latencies)} polls, {res.errors} "
                          f"errors, p50 {s['median'] * MS:.2f} ms")
    return s, Value(s["p99"] * MS, min(windows) * MS, max(windows) * MS, f"min–max of {len(windows)} windows' p99",
                    s["n"])


def s1_and_s6(b: Bench, idle: Sampler) -> None:
    plan = b.plan
    n_small, n_large = plan.poll_ns
    results = {}
    for n, base_seconds in zip(plan.poll_ns, plan.base_poll_seconds):
        log(f"S1 poll load N={n}: ours for {plan.poll_seconds:g} s" + (" (S6 measured meanwhile)" if n == n_large else ""))
        if n == n_large:
            before = fleet_usage(b)
            with Sampler(b.supervisor.pid) as sup:
                res = poll_load(b, n, plan.poll_seconds, baseline=False)
            after = fleet_usage(b)
        else:
            res = poll_load(b, n, plan.poll_seconds, baseline=False)
        log(f"S1 poll load N={n}: tutorial baseline for {base_seconds:g} s")
        base = poll_load(b, n, base_seconds, baseline=True)
        results[n] = (res, base)
        s, bs = summary(res.latencies), summary(base.latencies)
        windows = _windows(res, plan.poll_seconds, plan.poll_windows)
        offered = n / POLL_PERIOD
        b.report.add(Figure("S1", f"poll latency p50, N={n:,} workflows every 6 s", "ms", value_of(s, scale=MS),
                            value_of(bs, scale=MS), "tutorial waiter", "{:.2f}", ratio=s["median"] / bs["median"]))
        p99 = Value(s["p99"] * MS, min(windows) * MS, max(windows) * MS, f"min–max of {len(windows)} windows' p99",
                    s["n"])
        b.report.add(Figure(
            "S1", f"poll latency p99, N={n:,} workflows every 6 s", "ms", p99,
            Value(bs["p99"] * MS, bs["p99"] * MS, bs["p99"] * MS, "", bs["n"]) if bs["n"] else None,
            "tutorial waiter", "{:.2f}", ratio=s["p99"] / bs["p99"] if bs["n"] else None))
        mix = ", ".join(f"{k} {v}" for k, v in sorted(res.kinds.items()))
        b.report.notes.append(
            f"S1 N={n:,}: offered {offered:.0f} polls/s, ours answered {len(res.latencies)} ({mix}), "
            f"{res.errors} errors, p99 of each {plan.poll_seconds / plan.poll_windows:g} s window in order "
            f"{' '.join(f'{w * MS:.1f}' for w in windows)} ms; the tutorial answered {len(base.latencies)} of "
            f"{len(base.latencies) + base.errors} in {base_seconds:g} s with {base.errors} errors; client CPU "
            f"{100 * res.client_share:.1f} % of a core; each poll on a new connection")
        if n == n_large:
            floor, floor_p99 = _floor(b, n, plan.poll_seconds / 2)
            b.report.add(Figure("S1", f"poll latency p99, N={n:,}, vs the HTTP floor under the same load", "ms", p99,
                                floor_p99, "no-op WSGI app, same server, schedule and fleet", "{:.2f}",
                                ratio=s["p99"] / floor["p99"]))
            b.report.target(Target("S1", f"poll p99 at N={n:,} (jobs running)", s["p99"] * MS, 10, "<=", "ms",
                                   f"p50 {s['median'] * MS:.2f} ms, {res.errors} errors; the HTTP floor under the "
                                   f"same schedule and fleet: p99 {floor['p99'] * MS:.2f} ms"))
            s6_report(b, idle, sup, before, after)

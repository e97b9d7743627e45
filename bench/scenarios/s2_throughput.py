"""S2: poll throughput in a closed loop, next to the tutorial waiter, the HTTP floor and the façade without its fast path."""
from __future__ import annotations

import signal
import statistics

import psutil

from .. import httpload, soap
from ..fleet import fleet_programs
from ..measure import cpu_seconds, raise_errors
from ..report import Figure, Target, value_of, value_of_runs
from ..stack import Proc, write_env
from ..stats import summary
from ..system import BASE_NS, HOST, LIGHT, MS, Bench, log


def s2_throughput(b: Bench) -> None:
    plan = b.plan
    ours = [b.ours(LIGHT, soap.status_body(LIGHT[0], sid, b.token(i))) for i, sid in enumerate(b.fleet)]
    base = [b.base(soap.status_body(BASE_NS, sid, b.token(i))) for i, sid in enumerate(b.fleet)]
    log(f"S2 throughput: ours, concurrency sweep {plan.tp_sweep}")
    best_c, _ = _sweep(b.env.port, ours, plan.tp_sweep, plan.tp_sweep_seconds, soap.status_kind)
    log(f"S2 throughput: ours and the HTTP floor in turn, {plan.tp_repeats} x {plan.tp_seconds:g} s each at "
        f"{best_c} connections")
    runs, floor_runs = [], []
    for _ in range(plan.tp_repeats):  # in turn: a shared host's load changes within a minute, the ratio less
        runs += _repeat(b, b.env.port, ours, best_c, 1, plan.tp_seconds, soap.status_kind, b.facade)
        floor_runs += _repeat(b, b.floor_port, ours, best_c, 1, plan.tp_seconds, None, b.floor)
    costs = _costs(b, ours, best_c, plan.tp_repeats, plan.tp_seconds)
    log(f"S2 throughput: tutorial baseline, concurrency sweep {plan.base_tp_sweep}")
    base_c, _ = _sweep(b.base_port, base, plan.base_tp_sweep, plan.tp_sweep_seconds, soap.not_fault)
    base_runs = _repeat(b, b.base_port, base, base_c, plan.base_tp_repeats, plan.base_tp_seconds, soap.not_fault,
                        b.baseline)
    log(f"S2 throughput: the façade with FACADE_FAST_PATH=false, {plan.tp_repeats} x {plan.tp_seconds:g} s "
        f"at {best_c} connections")
    slow_env = write_env(b.directory / "no-fast-path", SPOOL_DIR=b.env.spool, FACADE_FAST_PATH="false")
    slow = b.stack.facade(slow_env)
    try:
        slow_runs = _repeat(b, slow_env.port, ours, best_c, plan.tp_repeats, plan.tp_seconds, soap.status_kind, slow)
    finally:
        slow.stop()
        b.stack.procs.remove(slow)
    rates = [r["rate"] for r in runs]
    base_rates = [r["rate"] for r in base_runs]
    floor_rates = [r["rate"] for r in floor_runs]
    slow_rates = [r["rate"] for r in slow_runs]
    ratio = statistics.median(rates) / statistics.median(base_rates)
    paired = [r / f for r, f in zip(rates, floor_rates)]
    b.report.add(Figure("S2", f"polls/s, closed loop, {best_c} keep-alive connections (baseline {base_c})", "polls/s",
                        value_of_runs(rates), value_of_runs(base_rates), "tutorial waiter", "{:,.0f}", ratio=ratio))
    b.report.add(Figure("S2", f"polls/s vs the HTTP floor, {best_c} connections", "polls/s", value_of_runs(rates),
                        value_of_runs(floor_rates), "no-op WSGI app, same server", "{:,.0f}",
                        ratio=statistics.median(rates) / statistics.median(floor_rates)))
    b.report.add(Figure("S2", f"polls/s, fast path on vs off (FACADE_FAST_PATH=false), {best_c} connections",
                        "polls/s", value_of_runs(rates), value_of_runs(slow_rates), "every poll through spyne",
                        "{:,.0f}", ratio=statistics.median(rates) / statistics.median(slow_rates),
                        ratio_name="on/off"))
    lat = summary([x for r in runs for x in r["latencies"]])
    b.report.add(Figure("S2", "poll latency p50 at that load", "ms", value_of(lat, scale=MS), None, "", "{:.2f}"))
    kinds: dict[str, int] = {}
    for r in runs:
        for k, v in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    b.report.notes.append(
        "S2: polls over all {} running jobs in turn; answers {}; client CPU {:.0f} % of a core, façade {:.0f} %, "
        "tutorial baseline's server {:.0f} % (its devauth {:.0f} %); ours ÷ the floor run just after it: "
        "median {:.3f} [{:.3f}–{:.3f}]".format(
            len(b.fleet), ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
            statistics.median(r["client"] for r in runs) * 100, statistics.median(r["server"] for r in runs) * 100,
            statistics.median(r["server"] for r in base_runs) * 100,
            statistics.median(r["devauth"] for r in base_runs) * 100,
            statistics.median(paired), min(paired), max(paired)))
    pages = kinds.get("page", 0) / max(1, sum(kinds.values()))
    cost = statistics.median(r["server"] / r["rate"] for r in runs)
    floor_cost = statistics.median(r["server"] / r["rate"] for r in floor_runs)
    for kind, what in (("unchanged", "each poll UNCHANGED"), ("page", "each poll a page")):
        b.report.add(Figure("S2", f"façade CPU per poll, {what}, the programs stopped", "µs",
                            value_of_runs(costs[kind], scale=1e6), value_of_runs(costs["floor"], scale=1e6),
                            "no-op app, same server, per request", "{:,.0f}",
                            ratio=statistics.median(costs[kind]) / statistics.median(costs["floor"])))
    b.report.notes.append(
        "S2: where the gap is (server CPU, both workers): in the pairs above ours spent {:.0f} µs per poll at "
        "{:.0%} pages against the floor's {:.0f} µs per request; with the programs stopped, an UNCHANGED poll "
        "{:.0f} µs and a page {:.0f} µs. The 1,000 programs change their page every second, so pages come at "
        "up to 1,000/s whatever the poll rate: the slower the polls, the larger their share".format(
            cost * 1e6, pages, floor_cost * 1e6, statistics.median(costs["unchanged"]) * 1e6,
            statistics.median(costs["page"]) * 1e6))
    b.report.target(Target("S2", "poll throughput ÷ the HTTP floor run just after it (median of pairs)",
                           statistics.median(paired), 0.6, ">=", "×",
                           f"{statistics.median(rates):,.0f} vs {statistics.median(floor_rates):,.0f} polls/s"))
    b.report.target(Target("S2", "poll throughput (median of runs)", statistics.median(rates), 1500, ">=", "polls/s",
                           f"{ratio:.0f}x the tutorial baseline"))


def _costs(b: Bench, ours: list[bytes], c: int, repeats: int, seconds: float) -> dict[str, list[float]]:
    """Server CPU seconds per request with the fleet's programs stopped, so that nothing changes: ours with each
    job polled by one poller (UNCHANGED), ours with ten pollers per job in turn (facade.json keeps eight, so
    each poll is a page), and the floor. Fewer jobs for the pages: their 4,000 bodies stay in the fast path's
    cache of parsed bodies, as the 1,000 single-poller ones do."""
    jobs = b.fleet[:400]
    tokens = [b.auth.login(b.auth.users[0]) for _ in range(10)]
    rotating = [b.ours(LIGHT, soap.status_body(LIGHT[0], sid, token)) for token in tokens for sid in jobs]
    programs = fleet_programs(b)
    log(f"S2 throughput: server CPU per poll, {len(programs)} programs stopped, {repeats} x {seconds:g} s each")
    costs: dict[str, list[float]] = {"unchanged": [], "page": [], "floor": []}
    _signal(programs, signal.SIGSTOP)
    try:
        for reqs in (ours, rotating):  # every body parsed once; each job's page as its programs stopped, sent
            httpload.closed_loop(HOST, b.env.port, reqs, c, 2, soap.status_kind, warmup=0.3)
        for _ in range(repeats):
            for kind, port, reqs, server in (("unchanged", b.env.port, ours, b.facade),
                                             ("page", b.env.port, rotating, b.facade),
                                             ("floor", b.floor_port, ours, b.floor)):
                run = _repeat(b, port, reqs, c, 1, seconds, None if kind == "floor" else soap.status_kind, server)[0]
                costs[kind].append(run["server"] / run["rate"])
                share = run["kinds"].get(kind, 0) / max(1, sum(run["kinds"].values())) if kind != "floor" else 1
                if share < 0.8:  # a run starts where the last one started: a few of its pollers are still kept
                    raise RuntimeError(f"S2 costs: expected {kind} answers, got {run['kinds']}")
    finally:
        _signal(programs, signal.SIGCONT)
    return costs


def _signal(procs, sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _sweep(port: int, reqs: list[bytes], levels, seconds: float, check) -> tuple[int, dict]:
    rates = {}
    for c in levels:
        res = httpload.closed_loop(HOST, port, reqs, c, seconds, check, warmup=0.3)
        raise_errors(f"throughput at {c} connections", res)
        rates[c] = res.rate
        log(f"  {c:3d} connections: {res.rate:,.0f} polls/s")
    return max(rates, key=rates.get), rates


def _repeat(b: Bench, port: int, reqs, c: int, repeats: int, seconds: float, check, server: Proc) -> list[dict]:
    runs = []
    servers = b.server_pids(server)
    auth_procs = b.server_pids(b.auth.proc)
    for _ in range(repeats):
        s0, a0 = cpu_seconds(servers), cpu_seconds(auth_procs)
        res = httpload.closed_loop(HOST, port, reqs, c, seconds, check, warmup=0.3)
        raise_errors("throughput run", res)
        el = res.elapsed + 0.3
        runs.append({"rate": res.rate, "latencies": res.latencies, "kinds": res.kinds, "client": res.client_share,
                     "server": (cpu_seconds(servers) - s0) / el, "devauth": (cpu_seconds(auth_procs) - a0) / el})
        log(f"  {res.rate:,.0f} polls/s")
    return runs

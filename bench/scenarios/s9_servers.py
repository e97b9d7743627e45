"""S9: slow clients, and the façade's server (granian) against the one it replaced (gunicorn gthread)."""
from __future__ import annotations

import socket
import statistics
import time

from .. import httpload, soap
from ..fleet import schedule
from ..measure import raise_errors
from ..report import Figure, Target, Value, value_of_runs
from ..stats import percentile
from ..system import HOST, LIGHT, MS, Bench, log


def _hold_slow(port: int, path: str, count: int) -> list[socket.socket]:
    """`count` connections that send half a request (headers or body) or nothing, and wait."""
    half_headers = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Ty".encode()
    half_body = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n<soapenv:Env".encode()
    held = []
    for i in range(count):
        s = socket.create_connection((HOST, port))
        s.sendall((half_headers, half_body, b"")[i % 3])
        held.append(s)
    return held


def _paced_polls(port: int, body: bytes, seconds: float, period: float = 0.05, timeout: float = 5.0):
    """One poll every `period` on a new connection; a poll with no answer within `timeout` is an error."""
    latencies, errors = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=timeout) as c:
                c.sendall(body)
                data = b""
                while b"</soap11env:Envelope>" not in data and b"</soapenv:Envelope>" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            if b" 200 " not in data[:20]:
                raise OSError(data[:40])
            latencies.append(time.perf_counter() - t0)
        except OSError:
            errors += 1
        time.sleep(max(0.0, period - (time.perf_counter() - t0)))
    return latencies, errors


def _slow_clients(b: Bench, port: int, sid: str) -> tuple[list[float], int, list[float], int]:
    """Paced polls without, then with plan.slow_conns slow connections held: (latencies, errors) twice."""
    path = f"{b.env.context_root}/{LIGHT[1]}"
    req = httpload.post(HOST, port, path, soap.status_body(LIGHT[0], sid, b.token(0)), keep_alive=False)
    _paced_polls(port, req, 0.3)  # warm-up: the workers' first token validation
    free = _paced_polls(port, req, b.plan.slow_seconds)
    held = _hold_slow(port, path, b.plan.slow_conns)
    try:
        time.sleep(0.5)
        slow = _paced_polls(port, req, b.plan.slow_seconds)
    finally:
        for c in held:
            c.close()
    return (*free, *slow)


def s9_server_choice(b: Bench) -> None:
    """The façade's server against the one it replaced (gunicorn gthread): same app, same spool, interleaved."""
    plan, n = b.plan, b.plan.slow_conns
    gproc, gport = b.stack.gunicorn_facade(b.env)
    servers = {"granian": b.env.port, "gunicorn": gport}
    path = f"{b.env.context_root}/{LIGHT[1]}"
    sids = b.fleet[:plan.poll_ns[1]]
    slow, rates, sched = {}, {k: [] for k in servers}, {k: [] for k in servers}
    try:
        for name, port in servers.items():
            log(f"S9 slow clients: {name}, polls for {plan.slow_seconds:g} s without, then with {n} held")
            slow[name] = _slow_clients(b, port, sids[0])
            log(f"  p99 {_p99ms(slow[name][0]):.1f} ms without, {_p99ms(slow[name][2]):.1f} ms with "
                f"({slow[name][3]} polls without an answer)")
        for r in range(plan.server_rounds):
            for name, port in servers.items():
                keep = [httpload.post(HOST, port, path, soap.status_body(LIGHT[0], sid, b.token(i)))
                        for i, sid in enumerate(sids)]
                tp = httpload.closed_loop(HOST, port, keep, 16, plan.slow_seconds, soap.status_kind, warmup=0.3)
                raise_errors(f"S9 closed loop on {name}", tp)
                rates[name].append(tp.rate)
                bodies = [httpload.post(HOST, port, path, soap.status_body(LIGHT[0], sid, b.token(i)), keep_alive=False)
                          for i, sid in enumerate(sids)]
                res = httpload.open_loop(HOST, port, schedule(bodies, plan.slow_seconds * 2, r), soap.status_kind)
                sched[name].append(res)
                log(f"  round {r + 1} {name}: {tp.rate:,.0f} polls/s closed loop; S1 schedule at N={len(sids):,}: "
                    f"p99 {_p99ms(res.latencies):.1f} ms, {res.errors} errors")
    finally:
        gproc.stop()
        b.stack.procs.remove(gproc)

    def one(value: float, count: int) -> Value:
        return Value(value, value, value, "", count)
    (gf, _, gs, gerr), (uf, _, us, uerr) = slow["granian"], slow["gunicorn"]
    b.report.add(Figure("S9", f"poll p99 with {n} slow connections held, granian (ours)", "ms",
                        one(_p99ms(gs), len(gs)), one(_p99ms(gf), len(gf)), "same server, none held", "{:.2f}",
                        ratio=_p99ms(gs) / _p99ms(gf)))
    b.report.add(Figure("S9", f"poll p99 with {n} slow connections held, gunicorn gthread (previous)", "ms",
                        one(_p99ms(us), len(us)), one(_p99ms(uf), len(uf)), "same server, none held", "{:.2f}",
                        ratio=_p99ms(us) / _p99ms(uf) if us else None))
    b.report.add(Figure("S9", "polls/s, closed loop, 16 keep-alive connections", "polls/s",
                        value_of_runs(rates["granian"]), value_of_runs(rates["gunicorn"]),
                        "gunicorn gthread (previous)", "{:,.0f}",
                        ratio=statistics.median(rates["granian"]) / statistics.median(rates["gunicorn"])))
    p99 = {k: statistics.median(_p99ms(r.latencies) for r in v) for k, v in sched.items()}
    b.report.add(Figure("S9", f"poll p99 under the S1 schedule, N={len(sids):,} (median of rounds)", "ms",
                        one(p99["granian"], plan.server_rounds),
                        one(p99["gunicorn"], plan.server_rounds), "gunicorn gthread (previous)", "{:.2f}",
                        ratio=p99["granian"] / p99["gunicorn"]))
    b.report.notes.append(
        f"S9: paced polls (one every 50 ms, each on a new connection, 5 s timeout) with {n} connections held "
        f"(a third half headers, a third half a body, a third nothing): granian answered {len(gs)} "
        f"({gerr} without an answer), gunicorn gthread (2 workers x 8 threads, the façade's previous server) "
        f"{len(us)} ({uerr} without an answer); then {plan.server_rounds} interleaved rounds of a closed loop and "
        f"of the S1 schedule on each server; spyne runs on 8 threads per worker under both, so an abortService "
        f"wait holds one thread under either")
    b.report.target(Target("S9", f"polls without an answer with {n} slow connections held", gerr, 0, "<=",
                           "polls", f"gunicorn gthread: {uerr} of {len(us) + uerr}"))
    b.report.target(Target("S9", f"poll p99 with {n} slow connections held", _p99ms(gs), 100, "<=", "ms",
                           f"{_p99ms(gf):.1f} ms with none held"))


def _p99ms(latencies) -> float:
    return percentile(latencies, 99) * MS if latencies else float("nan")

"""S10: the operator console with the fleet running and 20 browsers' event streams open.

Asks of the console only what a browser uses: the `/login` form (its CSRF
token, then a POST as the bench's devauth user) and the server-sent events at
`/events`. A change in
the spool is a job's state change: a BenchNoop job (`true`) is started and
ends at once; its delay is from the mtime of its SUCCEEDED state.json (the
supervisor's write) to the first event naming the job and SUCCEEDED on each
stream. Meanwhile the console's CPU; and S1-like polls and the supervisor's
CPU with and without the console, in interleaved blocks.
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import queue
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from jobs.wait import wait_for

from .. import httpload, soap
from ..fleet import poll_load
from ..measure import Sampler, cpu_seconds
from ..report import Figure, Target, Value, value_of
from ..stack import PROJECT, free_port, wait_http
from ..stats import percentile, summary
from ..system import HOST, MS, NOOP, Bench, log

BROWSERS = 20
NO_WORSE = 1.25  # on/off ratio; on this shared machine same-code blocks differ by far more


def console_installed() -> str | None:
    """None if the console can run, else why not."""
    try:
        if importlib.util.find_spec("console.app") is None:
            return "the console is not installed (console.app not found)"
    except ImportError as e:
        return f"the console is not installed ({e})"
    return None


class Stream(threading.Thread):
    """One logged-in browser: its /events stream; reports the first event saying a job SUCCEEDED."""

    def __init__(self, number: int, base: str, user: str, out):
        super().__init__(daemon=True)
        self.number, self.out = number, out
        self.session = requests.Session()
        page = self.session.get(f"{base}/login", timeout=30).text  # the form carries the CSRF token
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        r = self.session.post(f"{base}/login", data={"username": user, "password": f"{user}-pw", "project": PROJECT,
                                                     "csrf_token": token.group(1) if token else ""},
                              timeout=30, allow_redirects=False)
        if r.status_code >= 400:
            raise RuntimeError(f"console login as {user}: HTTP {r.status_code}: {r.text[:200]}")
        self.url, self.halt = f"{base}/events", threading.Event()
        self.response = None
        self.finished: set[str] = set()

    def record(self, at: float, data: str) -> None:
        try:
            rows = json.loads(data)
        except ValueError:
            return
        for row in rows if isinstance(rows, list) else rows.get("jobs", ()) if isinstance(rows, dict) else ():
            if not isinstance(row, dict) or row.get("state") != "SUCCEEDED":
                continue
            sid = str(row.get("service_id"))
            if sid not in self.finished:
                self.finished.add(sid)
                self.out.put(("seen", self.number, sid, at))

    def run(self) -> None:
        try:
            with self.session.get(self.url, stream=True, timeout=(10, None),
                                  headers={"Accept": "text/event-stream"}) as r:
                self.response = r
                if r.status_code != 200:
                    raise RuntimeError(f"/events: HTTP {r.status_code}")
                event = ""
                for line in r.iter_lines(chunk_size=65536, decode_unicode=True):
                    if self.halt.is_set():
                        return
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event in ("jobs", "snapshot"):  # a state is in a row
                        self.record(time.time(), line[5:])
                    elif not line:
                        event = ""
        except Exception as e:  # noqa: BLE001 - reported by the scenario
            if not self.halt.is_set():
                self.out.put(("error", self.number, f"{type(e).__name__}: {e}"))

    def close(self) -> None:
        self.halt.set()
        if self.response is not None:
            self.response.close()


def _browse(base: str, users: list[str], out, stop) -> None:
    """The browsers' process: log in, follow the streams until told to stop."""
    try:
        streams = [Stream(i, base, users[i % len(users)], out) for i in range(BROWSERS)]
    except Exception as e:  # noqa: BLE001 - reported by the parent
        out.put(("ready", f"{type(e).__name__}: {e}"))
        return
    for s in streams:
        s.start()
    out.put(("ready", None))
    stop.wait()
    for s in streams:
        s.close()


class Browsers:
    """BROWSERS logged-in event streams in a process of their own, as browsers are elsewhere: their
    threads must not share the load generator's interpreter (its GIL), or they would slow the polls
    this scenario measures."""

    def __init__(self, base: str, users: list[str]):
        ctx = multiprocessing.get_context("spawn")
        self._out, self._stop = ctx.Queue(), ctx.Event()
        self._proc = ctx.Process(target=_browse, args=(base, users, self._out, self._stop), daemon=True)
        self._proc.start()
        self.seen: dict[tuple[int, str], float] = {}  # (stream, serviceID) -> first event saying SUCCEEDED
        self.errors: list[str] = []
        kind, *rest = self._out.get(timeout=120)
        while kind != "ready":
            self._take(kind, rest)
            kind, *rest = self._out.get(timeout=120)
        if rest[0]:
            self.close()
            raise RuntimeError(f"S10 browsers: {rest[0]}")

    def _take(self, kind: str, rest: list) -> None:
        if kind == "seen":
            self.seen.setdefault((rest[0], rest[1]), rest[2])
        elif kind == "error":
            self.errors.append(f"stream {rest[0]}: {rest[1]}")

    def first(self, number: int, sid: str) -> float | None:
        while True:
            try:
                kind, *rest = self._out.get_nowait()
            except queue.Empty:
                break
            self._take(kind, rest)
        return self.seen.get((number, sid))

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def _console(b: Bench, idle_seconds: float = 0):
    """The console, and BROWSERS streams opened on it (after idle_seconds: what it costs before that)."""
    port = free_port()
    env = {"ENV_FILE": str(b.env.path), "CONSOLE_HOST": HOST, "CONSOLE_PORT": str(port),
           "AUTH_MANAGERS": b.auth.wsdl}
    proc = b.stack._start("console", [sys.executable, "-m", "console"], b.env.path.parent / "console.log", env)
    base = f"http://{HOST}:{port}"
    wait_http(f"{base}/healthz", proc)
    if idle_seconds:
        time.sleep(2)  # its first pass
        procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        t0, cpu0 = time.monotonic(), cpu_seconds(procs)
        time.sleep(idle_seconds)
        share = (cpu_seconds(procs) - cpu0) / (time.monotonic() - t0) * 100
        b.report.add(Figure("S10", f"console CPU, nobody watching (no stream open), {len(b.fleet):,} jobs running",
                            "% of a core", Value(share, share, share, "one window", 1), None, "", "{:.2f}"))
    return proc, Browsers(base, list(b.auth.users))


def _stop(b: Bench, proc, browsers: Browsers) -> None:
    browsers.close()
    proc.stop()
    b.stack.procs.remove(proc)


def _delays(b: Bench, browsers: Browsers, samples: int) -> list[float]:
    """Start a job that ends at once; how long until each stream names it as SUCCEEDED."""
    delays = []
    for i in range(samples):
        sid = f"s10-{i:03d}-{time.time_ns() % 10**9}"
        httpload.request_once(HOST, b.env.port, b.ours(NOOP, _start_body(b, sid, i)))
        state = Path(b.files(sid).state)

        def done():
            s = b.state(sid)
            return s is not None and s.get("state") == "SUCCEEDED"
        wait_for(done, 30, 0.005, f"{sid} SUCCEEDED")
        changed = state.stat().st_mtime
        deadline = time.time() + 10
        for number in range(BROWSERS):
            while time.time() < deadline:
                hit = browsers.first(number, sid)
                if hit is not None:
                    delays.append(max(0.0, hit - changed))
                    break
                time.sleep(0.01)
        time.sleep(0.3)
    return delays


def _start_body(b: Bench, sid: str, i: int) -> bytes:
    return soap.start_body(NOOP[0], "startBenchNoop", sid, b.token(i), b.auth.extra(), [])


def s10_console(b: Bench) -> None:
    why = console_installed()
    if why:
        b.report.skipped.append(f"S10 console: skipped: {why}")
        return
    plan = b.plan
    samples, pairs, seconds = (5, 2, 1.5) if plan.quick else (30, 12, 5.0)
    log(f"S10 console: {BROWSERS} event streams, {samples} state changes, {len(b.fleet)} jobs running")
    proc, browsers = _console(b, idle_seconds=3 if plan.quick else 15)
    try:
        procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        t0, cpu0 = time.monotonic(), cpu_seconds(procs)
        delays = _delays(b, browsers, samples)
        console_share = (cpu_seconds(procs) - cpu0) / (time.monotonic() - t0) * 100
        broken = browsers.errors
        if not broken and delays:
            _with_and_without(b, procs, pairs, seconds)
    finally:
        _stop(b, proc, browsers)
    expected = samples * BROWSERS
    if broken or not delays:
        raise RuntimeError(f"S10: {len(delays)} of {expected} events seen; stream errors: {broken[:3]}")
    d = summary(delays)
    b.report.add(Figure("S10", f"spool change → event on {BROWSERS} open streams, p50", "ms",
                        value_of(d, scale=MS), None, "", "{:.1f}"))
    b.report.add(Figure("S10", f"spool change → event on {BROWSERS} open streams, p95", "ms",
                        Value(percentile(delays, 95) * MS, d["p75"] * MS, d["max"] * MS, "p75–max", d["n"]),
                        None, "", "{:.1f}"))
    b.report.add(Figure("S10", f"console CPU, {BROWSERS} streams, {len(b.fleet):,} jobs running, jobs starting",
                        "% of a core", Value(console_share, console_share, console_share, "one window", 1), None, "",
                        "{:.2f}"))
    b.report.target(Target("S10", "spool change → event, p95 (the console's promise: on screen within 1 s)",
                           percentile(delays, 95) * MS, 1000, "<=", "ms", f"{len(delays)} of {expected} events seen"))
    b.report.notes.append(f"S10: {len(delays)} of {expected} events seen (a BenchNoop job's SUCCEEDED state.json → "
                          f"the first event naming it, on each of {BROWSERS} logged-in streams)")


def _with_and_without(b: Bench, console: list[psutil.Process], pairs: int, seconds: float) -> None:
    """The façade's polls and the supervisor's CPU with the console running and with it stopped (SIGSTOP).

    Short blocks in ABBA order, many of them, so that the drift of a shared
    machine's load falls on both sides alike; stopping the process rather than
    restarting it keeps its start-up and the logins out of every block.
    """
    n = b.plan.poll_ns[1]
    lat = {True: [], False: []}
    blocks = {True: {"p50": [], "p99": [], "cpu": []}, False: {"p50": [], "p99": [], "cpu": []}}
    busy = {True: 0.0, False: 0.0}
    for block, running in enumerate([False, True, True, False] * (pairs // 2)):
        if not running:
            for p in console:
                p.suspend()
        try:
            time.sleep(1)  # the console catches up (or has stopped) before the block begins
            cpu0 = cpu_seconds(console)
            with Sampler(b.supervisor.pid) as sup:
                res = poll_load(b, n, seconds, baseline=False)
            busy[running] += cpu_seconds(console) - cpu0
        finally:
            for p in console:
                p.resume()
        into = blocks[running]
        one = summary(res.latencies)
        lat[running] += res.latencies
        into["p50"].append(one["median"] * MS)
        into["p99"].append(one["p99"] * MS)
        into["cpu"].append(sup.share * 100)
        log(f"  block {block + 1} console {'on' if running else 'off'}: poll p50 {into['p50'][-1]:.2f} ms, "
            f"p99 {into['p99'][-1]:.2f} ms, supervisor {into['cpu'][-1]:.2f} % of a core")
    on, off = summary(lat[True]), summary(lat[False])
    how = f"{len(blocks[True]['p99'])} blocks of {seconds:g} s each way, ABBA order"
    for key, name in (("median", "p50"), ("p99", "p99")):
        b.report.add(Figure("S10", f"poll {name}, N={n:,}, all blocks, console running", "ms",
                            Value(on[key] * MS, min(blocks[True][name]), max(blocks[True][name]),
                                  "min–max of blocks", len(blocks[True][name])),
                            Value(off[key] * MS, min(blocks[False][name]), max(blocks[False][name]),
                                  "min–max of blocks", len(blocks[False][name])),
                            "console stopped (SIGSTOP), interleaved", "{:.2f}", ratio=on[key] / off[key],
                            ratio_name="on/off"))
    sup_on, sup_off = statistics.median(blocks[True]["cpu"]), statistics.median(blocks[False]["cpu"])
    b.report.add(Figure("S10", "supervisor CPU, console running", "% of a core",
                        Value(sup_on, min(blocks[True]["cpu"]), max(blocks[True]["cpu"]), "min–max of blocks",
                              len(blocks[True]["cpu"])),
                        Value(sup_off, min(blocks[False]["cpu"]), max(blocks[False]["cpu"]), "min–max of blocks",
                              len(blocks[False]["cpu"])),
                        "console stopped (SIGSTOP), interleaved", "{:.2f}", ratio=sup_on / sup_off if sup_off else None,
                        ratio_name="on/off"))
    share = busy[True] / (len(blocks[True]["cpu"]) * seconds) * 100
    b.report.add(Figure("S10", f"console CPU in those blocks, {BROWSERS} streams", "% of a core",
                        Value(share, share, share, "all blocks", 1), None, "", "{:.2f}"))
    b.report.target(Target("S10", "façade poll p99 with the console running ÷ without (no worse, within the noise)",
                           on["p99"] / off["p99"], NO_WORSE, "<=", "×", f"all polls of {how}"))
    b.report.target(Target("S10", "supervisor CPU with the console running minus without", sup_on - sup_off, 1.0,
                           "<=", "% of a core", f"medians of {how}"))

"""The scenarios of the benchmark, each measured next to its baseline in the same run.

    S1 poll latency under realistic load   S5 exit -> COMPLETED visible
    S2 poll throughput                      S6 supervisor cost with 1,000 jobs
    S3 start latency                        S7 spool size independence
    S4 spool -> spawn                       S8 spool -> running on Slurm (optional)

They share one real stack (devauth, supervisor, façade under granian, the
baseline under the same server settings) and run in an order that keeps
the quiet measurements (S4, S5, S3) before the machine is loaded with
1,000 running jobs (S6, S1, S2). S7 uses two small stacks of its own.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jobs.definitions import load_definitions
from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.spool import Spool, dump_json, fsync_dir
from jobs.states import JobState
from jobs.wait import wait_for

from . import httpload, soap
from .report import Figure, Report, Target, Value, value_of, value_of_runs
from .stack import BENCH_DEFINITIONS, PROJECT, DevAuth, Env, Proc, Stack, write_env
from .stats import percentile, summary

HOST = "127.0.0.1"
MS = 1000.0
POLL_PERIOD = 6.0
LIGHT, STAMP, NOOP = ("bench.light", "BenchLight"), ("bench.stamp", "BenchStamp"), ("bench.noop", "BenchNoop")
BASE_NS = "waiter.sintef.no"


@dataclass(frozen=True)
class Plan:
    """How much of everything: the full run (< 10 min) or the smoke test's --quick."""
    quick: bool = False
    users: int = 10
    spawn_samples: int = 30
    exit_samples: int = 15
    start_seq: int = 100
    start_clients: int = 50
    start_each: int = 4
    base_start_seq: int = 30
    base_start_clients: int = 50
    s7_finished: int = 10_000
    s7_running: int = 20
    s7_blocks: int = 5
    s7_polls: int = 400
    idle_seconds: float = 10
    jobs: int = 1000
    poll_ns: tuple[int, int] = (100, 1000)
    poll_seconds: float = 60
    poll_windows: int = 6
    base_poll_seconds: tuple[float, float] = (30, 12)
    tp_sweep: tuple[int, ...] = (4, 8, 16, 32)
    tp_sweep_seconds: float = 3
    tp_repeats: int = 5
    tp_seconds: float = 5
    base_tp_sweep: tuple[int, ...] = (4, 16)
    base_tp_repeats: int = 3
    base_tp_seconds: float = 4
    slow_conns: int = 500
    slow_seconds: float = 8
    server_rounds: int = 3

    @classmethod
    def quick_plan(cls) -> "Plan":
        return cls(quick=True, users=3, spawn_samples=5, exit_samples=3, start_seq=20, start_clients=10,
                   start_each=1, base_start_seq=5, base_start_clients=5, s7_finished=300, s7_running=4,
                   s7_blocks=2, s7_polls=60, idle_seconds=2, jobs=40, poll_ns=(10, 40), poll_seconds=6,
                   poll_windows=3, base_poll_seconds=(4, 3), tp_sweep=(8,), tp_sweep_seconds=1, tp_repeats=2,
                   tp_seconds=1, base_tp_sweep=(4,), base_tp_repeats=1, base_tp_seconds=1,
                   slow_conns=60, slow_seconds=1.5, server_rounds=1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Bench:
    """The running system and what the scenarios share."""
    plan: Plan
    directory: Path
    report: Report
    stack: Stack = None
    auth: DevAuth = None
    env: Env = None
    supervisor: Proc = None
    facade: Proc = None
    baseline: Proc = None
    base_port: int = 0
    floor: Proc = None
    floor_port: int = 0
    base_logs: Path = None
    defs: dict = None
    fleet: list[str] = field(default_factory=list)
    floor_exit: list[float] = field(default_factory=list)
    spawn: dict = field(default_factory=dict)

    # -- set-up ----------------------------------------------------------------
    def up(self) -> None:
        self.stack = Stack(self.directory)
        self.defs = load_definitions(BENCH_DEFINITIONS)
        log(f"starting devauth, supervisor, façade and baseline in {self.directory}")
        self.auth = self.stack.devauth(self.plan.users)
        for u in self.auth.users:
            self.auth.token(u)
        self.env = write_env(self.directory / "main")
        self.supervisor = self.stack.supervisor(self.env)
        self.facade = self.stack.facade(self.env)
        self.base_logs = self.directory / "baseline-logs"
        self.baseline, self.base_port = self.stack.baseline(self.env, self.base_logs, self.auth.wsdl, ["true"])
        self.floor, self.floor_port = self.stack.floor(self.env)

    def down(self) -> None:
        if self.stack is not None:
            self.stack.close()

    # -- helpers ---------------------------------------------------------------
    def token(self, i: int) -> str:
        return self.auth.token(self.auth.users[i % len(self.auth.users)])

    def ours(self, service: tuple[str, str], body: bytes, env: Env | None = None) -> bytes:
        env = env or self.env
        return httpload.post(HOST, env.port, f"{env.context_root}/{service[1]}", body)

    def base(self, body: bytes) -> bytes:
        return httpload.post(HOST, self.base_port, "/", body)

    def state(self, sid: str, env: Env | None = None) -> dict | None:
        return Spool((env or self.env).spool).read_state(sid)

    def attempt_file(self, sid: str, name: str, env: Env | None = None) -> Path:
        return (env or self.env).spool / "runs" / sid / "attempts" / "1" / name

    def server_pids(self, proc: Proc) -> list[psutil.Process]:
        """A server master and its workers."""
        p = psutil.Process(proc.pid)
        return [p] + p.children()


def _read_float(path: Path, timeout: float = 30.0) -> float:
    def ready():
        try:
            text = path.read_text()
            return text and float(text)
        except (FileNotFoundError, ValueError):
            return None
    return wait_for(ready, timeout, 0.001, str(path))


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


# == S4 spool -> spawn, and the floor ==================================================

def s4_spool_to_spawn(b: Bench) -> None:
    """From the spec's arrival in incoming/ to the program's first line, vs subprocess.Popen of it."""
    plan, spool = b.plan, Spool(b.env.spool)
    d = b.defs["stamp"]
    floor_root = b.directory / "floor"
    ours, floor, ours_total = [], [], []
    log(f"S4 spool->spawn: {plan.spawn_samples} samples, interleaved with the Popen floor")
    for i in range(plan.spawn_samples + 2):
        sid = f"spawn-{i:04d}"
        staged = spool._stage(JobSpec(sid, "stamp", {"holdMs": 0}).to_json())  # staged and fsynced like the façade
        t0 = time.time()
        os.link(staged, spool.incoming_path(sid))  # the façade's create_atomic: link, unlink, fsync dir
        os.unlink(staged)
        fsync_dir(spool.incoming)
        first = _read_float(b.attempt_file(sid, "first.txt"))
        wait_for(lambda: (s := b.state(sid)) and s["state"] == "SUCCEEDED", 30, 0.002, f"{sid} SUCCEEDED")
        total = time.time() - t0

        fdir = floor_root / str(i)
        fdir.mkdir(parents=True)
        argv = d.render_argv({"holdMs": 0}, fdir, fdir, sid, 1)
        f0 = time.time()
        p = subprocess.Popen(argv, cwd=fdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.wait()
        f1 = time.time()
        if i < 2:
            continue  # warm-up: page cache, first spawn of each kind
        ours.append(first - t0)
        ours_total.append(total)
        floor.append(float((fdir / "first.txt").read_text()) - f0)
        b.floor_exit.append(f1 - float((fdir / "last.txt").read_text()))
    so, sf = summary(ours), summary(floor)
    b.spawn = {"ours": so, "floor": sf}
    b.report.add(Figure("S4", "spool → program's first line, p50", "ms", value_of(so, scale=MS),
                        value_of(sf, scale=MS), "Popen floor", "{:.1f}",
                        ratio=so["median"] / sf["median"]))
    b.report.add(Figure("S4", "spool → program's first line, p90", "ms",
                        Value(so["p90"] * MS, so["p90"] * MS, so["p90"] * MS, "", so["n"]),
                        Value(sf["p90"] * MS, sf["p90"] * MS, sf["p90"] * MS, "", sf["n"]), "Popen floor", "{:.1f}"))
    over = (so["median"] - sf["median"]) * MS
    b.report.target(Target("S4", "spool→spawn p50 minus Popen floor p50", over, 10, "<=", "ms",
                           f"ours {so['median'] * MS:.1f} ms, floor {sf['median'] * MS:.1f} ms"))


# == S5 exit -> COMPLETED ==========================================================

def s5_exit_to_completed(b: Bench) -> None:
    """From the program's last line to the first getServiceStatus that answers COMPLETED."""
    plan = b.plan
    log(f"S5 exit->COMPLETED: {plan.exit_samples} jobs polled every 5 ms")
    session = httpload.Session(HOST, b.env.port)
    lat, periods = [], []
    try:
        for i in range(plan.exit_samples):
            sid, tok = f"exit-{i:04d}", b.token(i)
            soap.not_fault(session.request(b.ours(STAMP, soap.start_body(
                STAMP[0], "startBenchStamp", sid, tok, b.auth.extra(), [("holdMs", 300)]))))
            poll = b.ours(STAMP, soap.status_body(STAMP[0], sid, tok))
            deadline, last_sent = time.monotonic() + 30, None
            while True:
                sent = time.time()
                kind = soap.status_kind(session.request(poll))
                seen = time.time()
                if kind == "completed":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sid}: no COMPLETED within 30 s")
                last_sent = sent
                time.sleep(0.005)
            exited = float(b.attempt_file(sid, "last.txt").read_text())
            lat.append(seen - exited)
            if last_sent is not None:
                periods.append(sent - last_sent)
            if i == 0:
                answer = soap.zeep_spot_check(f"http://{HOST}:{b.env.port}{b.env.context_root}/{STAMP[1]}?wsdl",
                                              "getServiceStatus", sid, tok)
                b.report.notes.append(f"zeep spot check (S5): getServiceStatus of a finished job parses against "
                                      f"the WSDL: status_base64={answer.status_base64!r}, last={answer.last!r}")
    finally:
        session.close()
    s, f = summary(lat), summary(b.floor_exit)
    b.report.add(Figure("S5", "program exit → COMPLETED visible, p50", "ms", value_of(s, scale=MS),
                        value_of(f, scale=MS), "parent's waitpid", "{:.1f}"))
    b.report.target(Target("S5", "exit→COMPLETED (worst of the samples)", s["max"] * MS, 200, "<=", "ms",
                           f"p50 {s['median'] * MS:.1f} ms; poll period {statistics.median(periods) * MS:.1f} ms"
                           if periods else ""))


# == S3 start latency =============================================================

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
    seq = _sequential(HOST, b.env.port, [ours_body(f"st-seq-{i:04d}") for i in range(plan.start_seq)])
    conc = httpload.batch(HOST, b.env.port, [ours_body(f"st-conc-{i:04d}")
                                             for i in range(plan.start_clients * plan.start_each)],
                          plan.start_clients, soap.not_fault)
    _raise_errors("S3 concurrent starts", conc)
    n_conc = plan.start_clients * plan.start_each
    floor = httpload.batch(HOST, b.floor_port, [ours_body(f"floor-{i}") for i in range(n_conc)], plan.start_clients)
    _raise_errors("S3 floor", floor)
    # the same burst with the supervisor paused: the façade's own share, without 200 spawns meanwhile
    os.kill(b.supervisor.pid, signal.SIGSTOP)
    try:
        alone = httpload.batch(HOST, b.env.port, [ours_body(f"st-alone-{i:04d}") for i in range(n_conc)],
                               plan.start_clients, soap.not_fault)
    finally:
        os.kill(b.supervisor.pid, signal.SIGCONT)
    _raise_errors("S3 concurrent starts, supervisor paused", alone)
    bseq = _sequential(HOST, b.base_port, [base_body(f"bst-seq-{i:04d}") for i in range(plan.base_start_seq)])
    bconc = httpload.batch(HOST, b.base_port, [base_body(f"bst-conc-{i:04d}") for i in range(plan.base_start_clients)],
                           plan.base_start_clients, soap.not_fault)
    _raise_errors("S3 baseline concurrent starts", bconc)
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


def _sequential(host: str, port: int, requests: list[bytes]) -> list[float]:
    session = httpload.Session(host, port)
    lat = []
    try:
        for data in requests:
            t = time.perf_counter()
            response = session.request(data)
            lat.append(time.perf_counter() - t)
            if httpload.status_of(response) != 200:
                raise RuntimeError(f"HTTP {httpload.status_of(response)}: {httpload.body_of(response)[:300]!r}")
            soap.not_fault(response)
    finally:
        session.close()
    return lat


def _raise_errors(what: str, res: httpload.Result) -> None:
    if res.errors:
        raise RuntimeError(f"{what}: {res.errors} errors, e.g. {res.error_samples[:2]}")


# == S7 spool size independence ===================================================

def s7_spool_size(b: Bench) -> None:
    """Poll latency of running jobs with 10,000 finished runs in the spool vs 10 (two stacks, interleaved)."""
    plan = b.plan
    sizes = (("small", 10), ("large", plan.s7_finished))
    log(f"S7 spool size: stacks with {sizes[0][1]} and {sizes[1][1]} finished runs, "
        f"{plan.s7_running} running jobs each")
    envs, procs = {}, []
    try:
        for label, count in sizes:
            env = write_env(b.directory / f"s7-{label}")
            t = time.monotonic()
            _populate_finished(env.spool, count, b.auth)
            log(f"  {label}: {count} finished runs written in {time.monotonic() - t:.1f} s")
            procs.append(b.stack.supervisor(env))
            procs.append(b.stack.facade(env))
            envs[label] = env
        for label, env in envs.items():
            bodies = [b.ours(LIGHT, soap.start_body(LIGHT[0], "startBenchLight", f"s7-{i:03d}", b.token(i),
                                                    b.auth.extra(), [("seconds", 3600)]), env)
                      for i in range(plan.s7_running)]
            _raise_errors("S7 starts", httpload.batch(HOST, env.port, bodies, 4, soap.not_fault))
        for env in envs.values():
            wait_for(lambda env=env: all(b.attempt_file(f"s7-{i:03d}", "status.txt", env).exists()
                                         for i in range(plan.s7_running)), 60, 0.1, "S7 jobs running")
        polls = {label: [b.ours(LIGHT, soap.status_body(LIGHT[0], f"s7-{i:03d}", b.token(i)), env)
                         for i in range(plan.s7_running)] for label, env in envs.items()}
        for label, env in envs.items():  # warm both workers' caches
            httpload.batch(HOST, env.port, polls[label] * 2, 2, soap.status_kind)
        p50s, p99s = {k: [] for k in envs}, {k: [] for k in envs}
        for block in range(plan.s7_blocks):
            order = list(envs) if block % 2 == 0 else list(reversed(envs))
            for label in order:
                reqs = (polls[label] * (plan.s7_polls // len(polls[label]) + 1))[:plan.s7_polls]
                lat = _sequential_polls(HOST, envs[label].port, reqs)
                p50s[label].append(statistics.median(lat))
                p99s[label].append(percentile(lat, 99))
    finally:
        for proc in reversed(procs):
            proc.stop()
            b.stack.procs.remove(proc)
        for label in envs:
            b.stack.kill_jobs(str(b.directory / f"s7-{label}"))
    small, large = statistics.median(p50s["small"]), statistics.median(p50s["large"])
    label_large = f"{plan.s7_finished:,}"
    b.report.add(Figure("S7", f"poll latency p50, {label_large} finished runs in the spool", "ms",
                        value_of_runs(p50s["large"], MS, "blocks"), value_of_runs(p50s["small"], MS, "blocks"),
                        "10 finished runs", "{:.2f}", ratio=large / small, ratio_name="large/small"))
    b.report.add(Figure("S7", f"poll latency p99, {label_large} finished runs in the spool", "ms",
                        value_of_runs(p99s["large"], MS, "blocks"), value_of_runs(p99s["small"], MS, "blocks"),
                        "10 finished runs", "{:.2f}",
                        ratio=statistics.median(p99s["large"]) / statistics.median(p99s["small"]),
                        ratio_name="large/small"))
    b.report.target(Target("S7", f"poll p50 ratio, {label_large} vs 10 finished runs", large / small, 1.2, "<=", "",
                           f"{large * MS:.2f} ms vs {small * MS:.2f} ms, {plan.s7_blocks} interleaved blocks of "
                           f"{plan.s7_polls} sequential polls"))


def _sequential_polls(host: str, port: int, requests: list[bytes]) -> list[float]:
    session = httpload.Session(host, port)
    lat = []
    try:
        for data in requests:
            t = time.perf_counter()
            response = session.request(data)
            lat.append(time.perf_counter() - t)
            soap.status_kind(response)
    finally:
        session.close()
    return lat


def _populate_finished(spool_dir: Path, count: int, auth: DevAuth) -> None:
    """`count` SUCCEEDED runs written straight into runs/, as the supervisor leaves them."""
    spool = Spool(spool_dir).ensure()
    now = time.time()
    for i in range(count):
        sid = f"done-{i:05d}"
        run = spool.runs / sid
        attempt = run / "attempts" / "1"
        attempt.mkdir(parents=True)
        started, finished = now - 3600 + i * 0.01, now - 60 + i * 0.001
        spec = JobSpec(sid, "light", {"seconds": 60}, auth.wsdl, {"username": auth.users[0], "project": PROJECT},
                       submitted_at=started - 1)
        rs = RunState(sid, "light", JobState.SUCCEEDED, "exit code 0", 1, pid=100000 + i, create_time=started,
                      exit_code=0, queued_at=started - 1, started_at=started, finished_at=finished,
                      updated_at=finished, history=[Attempt(1, started, finished, 0, None, "exit code 0")])
        (run / "spec.json").write_bytes(spec.to_json())
        (run / "state.json").write_bytes(rs.to_json())
        (attempt / "stdout.log").write_text("".join(f"tick {k}\n" for k in range(60)))
        (attempt / "stderr.log").write_text("")
        (attempt / "status.txt").write_text("100")
        (attempt / "result.txt").write_text("FINISHED")
        (attempt / "exit.json").write_bytes(dump_json({"exit_code": 0, "signal": None, "pid": 100000 + i,
                                                       "started_at": started, "ended_at": finished}))


# == S6 (idle part), the fleet of running jobs =====================================

class Sampler(threading.Thread):
    """CPU seconds and RSS of one process, sampled every second in the background."""

    def __init__(self, pid: int, period: float = 1.0):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.period = period
        self.rss: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.rss.append(self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.halt.wait(self.period)

    def __enter__(self) -> "Sampler":
        self.t0, self.cpu0 = time.monotonic(), _cpu([self.proc])
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.join()
        self.elapsed = time.monotonic() - self.t0
        self.cpu = _cpu([self.proc]) - self.cpu0

    @property
    def share(self) -> float:
        return self.cpu / self.elapsed


def s6_idle(b: Bench) -> Sampler:
    log(f"S6 supervisor cost: idle baseline for {b.plan.idle_seconds:g} s (no job running)")
    with Sampler(b.supervisor.pid) as idle:
        time.sleep(b.plan.idle_seconds)
    return idle


def start_fleet(b: Bench) -> None:
    """Start plan.jobs light jobs through the façade (16 clients) and wait until they all run."""
    n = b.plan.jobs
    log(f"starting {n} light jobs (perl, status every second) through the façade")
    b.fleet = [f"job-{i:04d}" for i in range(n)]
    bodies = [b.ours(LIGHT, soap.start_body(LIGHT[0], "startBenchLight", sid, b.token(i), b.auth.extra(),
                                            [("seconds", 3600)])) for i, sid in enumerate(b.fleet)]
    t0 = time.monotonic()
    res = httpload.batch(HOST, b.env.port, bodies, 16, soap.not_fault)
    _raise_errors("fleet starts", res)
    accepted = time.monotonic() - t0
    status_files = [b.attempt_file(sid, "status.txt") for sid in b.fleet]

    def all_running():
        return all(p.exists() for p in status_files)
    wait_for(all_running, max(120, n * 0.3), 0.25, f"{n} jobs running")
    running = time.monotonic() - t0
    b.base_logs.mkdir(parents=True, exist_ok=True)
    for sid in b.fleet:  # the tutorial reads <log folder>/<sid>/status.txt: the same files as ours
        (b.base_logs / sid).symlink_to(b.env.spool / "runs" / sid / "attempts" / "1")
    b.report.notes.append(f"fleet: {n} jobs accepted in {accepted:.1f} s ({n / accepted:.0f} starts/s, "
                          f"16 clients), all running after {running:.1f} s")
    log(f"  accepted in {accepted:.1f} s, all running after {running:.1f} s")
    tok = b.token(0)
    answer = soap.zeep_spot_check(f"http://{HOST}:{b.env.port}{b.env.context_root}/{LIGHT[1]}?wsdl",
                                  "getServiceStatus", b.fleet[0], tok)
    base_answer = soap.zeep_spot_check(f"http://{HOST}:{b.base_port}/?wsdl", "getServiceStatus", b.fleet[0], tok)
    b.report.notes.append(
        f"zeep spot check (fleet): ours answers a page of {len(answer.status_base64)} base64 characters, "
        f"result={answer.result!r}; the tutorial baseline a page of {len(base_answer.status_base64)}, "
        f"result={base_answer.result!r}")
    return True


def fleet_usage(b: Bench) -> dict:
    """CPU seconds and memory of every job process (shims and programs) right now."""
    programs = b.stack.job_processes(str(b.directory / "main"))
    procs, seen = list(programs), {p.pid for p in programs}
    for p in programs:  # a shim started as a spare has no attempt directory in its argv: take the parents
        try:
            parent = p.parent()
        except psutil.Error:
            continue
        if parent is not None and parent.pid not in seen and "shim.py" in " ".join(_cmdline(parent) or []):
            procs.append(parent)
            seen.add(parent.pid)
    shims = [p for p in procs if "shim.py" in " ".join(_cmdline(p) or [])]
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    uss = []
    for p in random.Random(4).sample(shims, min(10, len(shims))):
        try:
            uss.append(p.memory_full_info().uss)
        except psutil.Error:
            pass
    return {"processes": procs, "count": len(procs), "shims": len(shims), "cpu": _cpu(procs), "rss": rss,
            "shim_uss": statistics.median(uss) if uss else float("nan")}


def _cmdline(p: psutil.Process) -> list[str] | None:
    try:
        return p.cmdline()
    except psutil.Error:
        return None


# == S1 poll latency under realistic load (and S6 measured meanwhile) =============

def _schedule(bodies: list[bytes], seconds: float, seed: int) -> list[tuple[float, bytes]]:
    """Every workflow polls every 6 s from a random phase, like N workflow managers' timers."""
    rnd = random.Random(seed)
    out = []
    for body in bodies:
        t = rnd.uniform(0, POLL_PERIOD)
        while t < seconds:
            out.append((t, body))
            t += POLL_PERIOD
    out.sort(key=lambda x: x[0])
    return out


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


def poll_load(b: Bench, n: int, seconds: float, baseline: bool) -> httpload.Result:
    sids = b.fleet[:n]
    if baseline:
        bodies = [b.base(soap.status_body(BASE_NS, sid, b.token(i))) for i, sid in enumerate(sids)]
        port, check = b.base_port, soap.not_fault
    else:
        bodies = [b.ours(LIGHT, soap.status_body(LIGHT[0], sid, b.token(i))) for i, sid in enumerate(sids)]
        port, check = b.env.port, soap.status_kind
    return httpload.open_loop(HOST, port, _schedule(bodies, seconds, n), check)


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
        b.report.add(Figure(
            "S1", f"poll latency p99, N={n:,} workflows every 6 s", "ms",
            Value(s["p99"] * MS, min(windows) * MS, max(windows) * MS, f"min–max of {len(windows)} windows' p99",
                  s["n"]),
            Value(bs["p99"] * MS, bs["p99"] * MS, bs["p99"] * MS, "", bs["n"]) if bs["n"] else None,
            "tutorial waiter", "{:.2f}", ratio=s["p99"] / bs["p99"] if bs["n"] else None))
        mix = ", ".join(f"{k} {v}" for k, v in sorted(res.kinds.items()))
        b.report.notes.append(
            f"S1 N={n:,}: offered {offered:.0f} polls/s, ours answered {len(res.latencies)} ({mix}), "
            f"{res.errors} errors; the tutorial answered {len(base.latencies)} of "
            f"{len(base.latencies) + base.errors} in {base_seconds:g} s with {base.errors} errors; client CPU "
            f"{100 * res.client_share:.1f} % of a core; each poll on a new connection")
        if n == n_large:
            b.report.target(Target("S1", f"poll p99 at N={n:,} (jobs running)", s["p99"] * MS, 20, "<=", "ms",
                                   f"p50 {s['median'] * MS:.2f} ms, {res.errors} errors"))
            _s6_report(b, idle, sup, before, after)


def _s6_report(b: Bench, idle: Sampler, sup: Sampler, before: dict, after: dict) -> None:
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


# == S2 poll throughput ===========================================================

def s2_throughput(b: Bench) -> None:
    plan = b.plan
    ours = [b.ours(LIGHT, soap.status_body(LIGHT[0], sid, b.token(i))) for i, sid in enumerate(b.fleet)]
    base = [b.base(soap.status_body(BASE_NS, sid, b.token(i))) for i, sid in enumerate(b.fleet)]
    log(f"S2 throughput: ours, concurrency sweep {plan.tp_sweep}")
    best_c, _ = _sweep(b.env.port, ours, plan.tp_sweep, plan.tp_sweep_seconds, soap.status_kind)
    log(f"S2 throughput: ours, {plan.tp_repeats} x {plan.tp_seconds:g} s at {best_c} connections")
    runs = _repeat(b, b.env.port, ours, best_c, plan.tp_repeats, plan.tp_seconds, soap.status_kind, b.facade)
    log(f"S2 throughput: tutorial baseline, concurrency sweep {plan.base_tp_sweep}")
    base_c, _ = _sweep(b.base_port, base, plan.base_tp_sweep, plan.tp_sweep_seconds, soap.not_fault)
    base_runs = _repeat(b, b.base_port, base, base_c, plan.base_tp_repeats, plan.base_tp_seconds, soap.not_fault,
                        b.baseline)
    log(f"S2 throughput: HTTP floor, {plan.base_tp_repeats} x {plan.base_tp_seconds:g} s at {best_c} connections")
    floor_runs = _repeat(b, b.floor_port, ours, best_c, plan.base_tp_repeats, plan.base_tp_seconds, None, b.floor)
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
        "tutorial baseline's server {:.0f} % (its devauth {:.0f} %)".format(
            len(b.fleet), ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
            statistics.median(r["client"] for r in runs) * 100, statistics.median(r["server"] for r in runs) * 100,
            statistics.median(r["server"] for r in base_runs) * 100,
            statistics.median(r["devauth"] for r in base_runs) * 100))
    b.report.target(Target("S2", "poll throughput (median of runs)", statistics.median(rates), 1500, ">=", "polls/s",
                           f"{ratio:.0f}x the tutorial baseline"))


def _sweep(port: int, reqs: list[bytes], levels, seconds: float, check) -> tuple[int, dict]:
    rates = {}
    for c in levels:
        res = httpload.closed_loop(HOST, port, reqs, c, seconds, check, warmup=0.3)
        _raise_errors(f"throughput at {c} connections", res)
        rates[c] = res.rate
        log(f"  {c:3d} connections: {res.rate:,.0f} polls/s")
    return max(rates, key=rates.get), rates


def _repeat(b: Bench, port: int, reqs, c: int, repeats: int, seconds: float, check, server: Proc) -> list[dict]:
    runs = []
    servers = b.server_pids(server)
    auth_procs = b.server_pids(b.auth.proc)
    for _ in range(repeats):
        s0, a0 = _cpu(servers), _cpu(auth_procs)
        res = httpload.closed_loop(HOST, port, reqs, c, seconds, check, warmup=0.3)
        _raise_errors("throughput run", res)
        el = res.elapsed + 0.3
        runs.append({"rate": res.rate, "latencies": res.latencies, "kinds": res.kinds, "client": res.client_share,
                     "server": (_cpu(servers) - s0) / el, "devauth": (_cpu(auth_procs) - a0) / el})
        log(f"  {res.rate:,.0f} polls/s")
    return runs


# == S9 slow clients, and the server choice =======================================

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
                _raise_errors(f"S9 closed loop on {name}", tp)
                rates[name].append(tp.rate)
                bodies = [httpload.post(HOST, port, path, soap.status_body(LIGHT[0], sid, b.token(i)), keep_alive=False)
                          for i, sid in enumerate(sids)]
                res = httpload.open_loop(HOST, port, _schedule(bodies, plan.slow_seconds * 2, r), soap.status_kind)
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

# == S8 Slurm (optional) ============================================================

def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def s8_slurm(b: Bench) -> None:
    try:
        from .slurm_latency import measure_spool_to_running
    except ImportError:
        b.report.skipped.append("S8 spool → running on Slurm: bench/slurm_latency.py not present")
        return
    if not slurm_up():
        b.report.skipped.append("S8 spool → running on Slurm: skipped: no Slurm cluster (sinfo does not answer)")
        return
    log("S8 spool->running on Slurm")
    from .stack import ROOT
    env = write_env(b.directory / "slurm", EXECUTOR="slurm", DEFINITIONS_DIR=str(ROOT / "jobs" / "definitions"))
    proc = b.stack.supervisor(env)
    try:
        r = measure_spool_to_running(env.spool, samples=3 if b.plan.quick else 5)
    finally:
        proc.stop()
        b.stack.procs.remove(proc)
    running = [x["running"] for x in r["samples"]]
    floor = b.spawn.get("ours")
    b.report.add(Figure("S8", "spool → shim running on a Slurm node, p50", "ms", value_of_runs(running, MS, "jobs"),
                        value_of(floor, scale=MS) if floor else None, "local executor (S4)", "{:.0f}"))


SCENARIOS = ("S4", "S5", "S3", "S7", "S6", "S1", "S2", "S9", "S10", "S8")


def run_all(b: Bench, only: set[str] | None = None) -> None:
    """Every scenario in order; one that breaks is reported as an error and the others go on."""
    want = lambda *names: only is None or any(n in only for n in names)  # noqa: E731

    def attempt(name: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported in the table's output, run continues
            import traceback
            traceback.print_exc()
            b.report.errors.append(f"{name}: {type(e).__name__}: {e}")
            return None

    b.up()
    if want("S4", "S5"):
        attempt("S4", s4_spool_to_spawn, b)
    if want("S5"):
        attempt("S5", s5_exit_to_completed, b)
    if want("S3"):
        attempt("S3", s3_start_latency, b)
    if want("S7"):
        attempt("S7", s7_spool_size, b)
    if want("S1", "S2", "S6", "S9", "S10"):
        idle = attempt("S6", s6_idle, b)
        if attempt("fleet", start_fleet, b) and idle is not None:
            if want("S1", "S6"):
                attempt("S1/S6", s1_and_s6, b, idle)
            if want("S2"):
                attempt("S2", s2_throughput, b)
            if want("S9"):
                attempt("S9", s9_server_choice, b)
            if want("S10"):
                from .console import s10_console  # it uses this module's helpers
                attempt("S10", s10_console, b)
    if want("S8"):
        attempt("S8", s8_slurm, b)

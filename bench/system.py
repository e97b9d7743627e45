"""The running system every scenario shares (Bench), what it measures with (Plan), and how it logs.

Bench starts devauth, the supervisor, the façade under granian, the
tutorial baseline and the HTTP floor once; the scenarios address them
through it. Run files are found through jobs/runfiles.py (Spool.files).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jobs.definitions import load_definitions
from jobs.runfiles import RunFiles
from jobs.spool import Spool

from . import httpload
from .measure import settle
from .report import Report
from .stack import BENCH_DEFINITIONS, DevAuth, Env, Proc, Stack, write_env

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
    s11_flood: int = 500
    s11_b: int = 5
    s11_slots: int = 8
    s11_hold_ms: int = 300
    s11_blocks: int = 2
    s11_queued: int = 10_000
    s11_projects: int = 50
    s11_queue_slots: int = 2
    s11_cpu_seconds: float = 10
    s11_settle_seconds: float = 6

    @classmethod
    def quick_plan(cls) -> "Plan":
        return cls(quick=True, users=3, spawn_samples=5, exit_samples=3, start_seq=20, start_clients=10,
                   start_each=1, base_start_seq=5, base_start_clients=5, s7_finished=300, s7_running=4,
                   s7_blocks=2, s7_polls=60, idle_seconds=2, jobs=40, poll_ns=(10, 40), poll_seconds=6,
                   poll_windows=3, base_poll_seconds=(4, 3), tp_sweep=(8,), tp_sweep_seconds=1, tp_repeats=2,
                   tp_seconds=1, base_tp_sweep=(4,), base_tp_repeats=1, base_tp_seconds=1,
                   slow_conns=60, slow_seconds=1.5, server_rounds=1, s11_flood=16, s11_b=2, s11_slots=2,
                   s11_hold_ms=100, s11_blocks=1, s11_queued=200, s11_projects=5, s11_queue_slots=1,
                   s11_cpu_seconds=2, s11_settle_seconds=0.5)


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
        self.settle("the stack")

    def settle(self, what: str) -> None:
        """Let the stack's processes finish starting (the façade's workers import for a second or two) before a
        scenario times anything: S4 once ran while they did, and both it and its floor were 3 ms slower."""
        waited, share = settle([p.pid for p in self.stack.procs])
        if share >= 0.05:
            log(f"{what} still used {share:.0%} of a core after {waited:.0f} s; measuring anyway")

    def down(self) -> None:
        if self.stack is not None:
            self.stack.close()

    def side_env(self, name: str, **overrides) -> Env:
        """The env file of a scenario's own supervisor (and façade): its own spool under directory/name."""
        return write_env(self.directory / name, **overrides)

    def stop_side(self, procs: list[Proc], envs) -> None:
        """Stop a scenario's own servers, then the jobs left in their directories."""
        for proc in reversed(procs):
            proc.stop()
            self.stack.procs.remove(proc)
        for env in envs:
            self.stack.kill_jobs(str(env.path.parent))

    # -- helpers ---------------------------------------------------------------
    def token(self, i: int) -> str:
        return self.auth.token(self.auth.users[i % len(self.auth.users)])

    def ours(self, service: tuple[str, str], body: bytes, env: Env | None = None) -> bytes:
        env = env or self.env
        return httpload.post(HOST, env.port, f"{env.context_root}/{service[1]}", body)

    def base(self, body: bytes) -> bytes:
        return httpload.post(HOST, self.base_port, "/", body)

    def spool(self, env: Env | None = None) -> Spool:
        return Spool((env or self.env).spool)

    def state(self, sid: str, env: Env | None = None) -> dict | None:
        return self.spool(env).read_state(sid)

    def files(self, sid: str, env: Env | None = None) -> RunFiles:
        """Where run sid's files live (jobs/runfiles.py, through the spool)."""
        return Spool((env or self.env).spool).files(sid)

    def attempt_file(self, sid: str, name: str, env: Env | None = None) -> Path:
        """A file of the run's first attempt (every bench job runs once)."""
        return Path(self.files(sid, env).attempt(1).work) / name

    def server_pids(self, proc: Proc) -> list[psutil.Process]:
        """A server master and its workers."""
        p = psutil.Process(proc.pid)
        return [p] + p.children()

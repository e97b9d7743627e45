"""Start and stop the real components of the system for tests."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from jobs.wait import wait_for  # noqa: F401 - the tests import it from here

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ARTIFACTS = ROOT / "test-artifacts"


PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999): no outgoing connection takes one
_given: set[int] = set()


def free_port() -> int:
    """A loopback port free now, for a child to listen on; never the same twice in one test process.

    Under pytest-xdist each worker draws from its own slice of PORTS, so two
    workers never pick the same port in the moment before its child binds it.
    """
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    width = len(PORTS) // max(count, 1)
    mine = range(PORTS.start + index * width, PORTS.start + (index + 1) * width)
    for port in random.sample(mine, len(mine)):
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {mine}")


def write_env(directory: Path, **overrides) -> Path:
    """An env file for one test: its own spool under `directory`, fast reconcile, its devauth allowed."""
    devauth_port = free_port()
    values = {
        "CONTEXT_ROOT": "/demo-waiter",
        "SPOOL_DIR": str(directory / "spool"),
        "DEFINITIONS_DIR": str(ROOT / "jobs" / "definitions"),
        "MAX_PARALLEL_JOBS": "4",
        "RETENTION_DAYS": "7",
        "RECONCILE_SECONDS": "1",
        "LOG_LEVEL": "debug",
        "FACADE_HOST": "127.0.0.1",
        "FACADE_PORT": str(free_port()),
        "FACADE_WORKERS": "2",
        "DEVAUTH_HOST": "127.0.0.1",
        "DEVAUTH_PORT": str(devauth_port),
        "DEVAUTH_USERS_FILE": str(directory / "devauth" / "users.json"),
        "AUTH_MANAGERS": f"http://127.0.0.1:{devauth_port}/authManager/AuthManager?wsdl",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    path = directory / "env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


class Managed:
    """A real child process with its output in a log file, stopped at teardown."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.argv, self.log_path = argv, log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def start_supervisor(env_file: Path, log: Path, **extra_env) -> Managed:
    """The real supervisor daemon, ready once it has written supervisor.json with its pid."""
    from jobs import config
    cfg = config.load(env_file, {})
    m = Managed([sys.executable, "-m", "supervisor.daemon"], log, {"ENV_FILE": str(env_file), **extra_env})
    sup = cfg.spool_dir / "supervisor.json"

    def ready():
        if not m.alive():
            raise AssertionError(f"supervisor exited early:\n{m.output()}")
        try:
            import json
            return json.loads(sup.read_text()).get("pid") == m.pid
        except (OSError, ValueError):
            return False
    wait_for(ready, 15, what="supervisor start")
    return m


def processes_with_arg(fragment: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line or working directory contains `fragment` (a
    confined program names its files relative to its work/); `.argv` holds the command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(
                    fragment in a for a in (p.info["cmdline"] or []) + [p.info["cwd"] or ""]):
                p.argv = p.info["cmdline"]  # as seen now: the process may be gone when the caller looks
                found.append(p)
        except psutil.Error:
            pass
    return found


def kill_leftovers(directory: Path) -> None:
    """Kill every process whose command line mentions directory (a test's programs)."""
    for p in processes_with_arg(str(directory)):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                p.kill()
            except psutil.Error:
                pass


class Stack:
    """One spool, its env file (definitions: the waiter and tests/programs) and the daemon serving it."""

    def __init__(self, tmp: Path, extra_definitions: dict[str, str] | None = None, **env):
        programs = ROOT / "tests" / "programs"
        defs = tmp / "definitions"
        defs.mkdir(exist_ok=True)
        (defs / "waiter.toml").write_text((ROOT / "jobs" / "definitions" / "waiter.toml").read_text())
        for toml in programs.glob("*.toml"):
            (defs / toml.name).write_text(toml.read_text().replace("{here}", str(programs)))
        for name, text in (extra_definitions or {}).items():
            (defs / name).write_text(text)
        from jobs import config
        from jobs.spool import Spool
        self.tmp = tmp
        self.env = write_env(tmp, DEFINITIONS_DIR=defs, **env)
        self.cfg = config.load(self.env, {})
        self.spool = Spool(self.cfg.spool_dir).ensure()
        self.daemon: Managed | None = None
        self.starts = 0

    def start(self, **extra_env) -> Managed:
        self.starts += 1
        self.daemon = start_supervisor(self.env, self.tmp / f"supervisor-{self.starts}.log", **extra_env)
        return self.daemon

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()
            self.daemon = None

    def submit(self, sid: str, job: str = "waiter", **inputs) -> None:
        from jobs.spec import JobSpec
        assert self.spool.submit(JobSpec(sid, job, inputs).to_json(), sid)

    def state(self, sid: str) -> dict:
        return self.spool.read_state(sid) or {}

    def wait_state(self, sid: str, *states: str, timeout: float = 30) -> dict:
        wait_for(lambda: self.state(sid).get("state") in states, timeout, what=f"{sid} in {states}")
        return self.state(sid)

    def attempt_dir(self, sid: str, attempt: int = 1) -> Path:
        return self.spool.attempt_dir(sid, attempt)

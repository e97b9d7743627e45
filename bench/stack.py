"""The real system for the benchmark: devauth, supervisor, façade and the baseline, as processes.

Each component is started the way an operator starts it (`python -m ...`),
configured only by an env file, on free loopback ports, with its spool in
the benchmark's temporary directory. `Stack.close()` stops what it started:
the servers by their pids, then every job process group whose command line
names the benchmark's directory (jobs run in their own sessions).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jobs.wait import wait_for
from supervisor.isolation import remove_spool_cgroups

ROOT = Path(__file__).resolve().parent.parent
BENCH_DEFINITIONS = Path(__file__).resolve().parent / "definitions"
AUTH_PATH = "/authManager/AuthManager"
PROJECT = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]):
        self.name, self.log_path = name, log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **env}, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    def ready():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
        return _http_ok(url)
    wait_for(ready, timeout, 0.05, f"{proc.name} at {url}")


def wait_http_post(port: int, proc: Proc, timeout: float = 60) -> None:
    import urllib.request

    def ready():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"<x/>"),
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    wait_for(ready, timeout, 0.05, f"{proc.name} on port {port}")


@dataclass
class Env:
    """One env file (façade + supervisor of one spool)."""
    path: Path
    values: dict[str, str]

    @property
    def spool(self) -> Path:
        return Path(self.values["SPOOL_DIR"])

    @property
    def port(self) -> int:
        return int(self.values["FACADE_PORT"])

    @property
    def context_root(self) -> str:
        return self.values["CONTEXT_ROOT"]


def write_env(directory: Path, **overrides) -> Env:
    directory.mkdir(parents=True, exist_ok=True)
    devauth_port = free_port()
    values = {
        "CONTEXT_ROOT": "/bench-soap",
        "SPOOL_DIR": str(directory / "spool"),
        "DEFINITIONS_DIR": str(BENCH_DEFINITIONS),
        "MAX_PARALLEL_JOBS": "5000",
        "RETENTION_DAYS": "7",
        "RECONCILE_SECONDS": "5",
        "LOG_LEVEL": "info",
        "FACADE_HOST": "127.0.0.1",
        "FACADE_PORT": str(free_port()),
        "FACADE_WORKERS": "2",
        "DEVAUTH_HOST": "127.0.0.1",
        "DEVAUTH_PORT": str(devauth_port),
        "DEVAUTH_USERS_FILE": str(directory / "users.json"),
        "AUTH_MANAGERS": f"http://127.0.0.1:{devauth_port}{AUTH_PATH}?wsdl",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    path = directory / "env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return Env(path, values)


@dataclass
class Stack:
    """Everything the benchmark started, so that close() can stop exactly that."""
    directory: Path
    procs: list[Proc] = field(default_factory=list)
    auth_wsdl: str = ""  # the benchmark's devauth, once started: every façade allows it

    # -- components --------------------------------------------------------
    def devauth(self, users: int) -> "DevAuth":
        d = self.directory / "devauth"
        env = write_env(d)
        users_file = d / "users.json"
        names = [f"user{i:02d}" for i in range(users)]
        for name in names:
            subprocess.run([sys.executable, "-m", "devauth", "adduser", name, "--project", PROJECT,
                            "--password-stdin", "--replace", "--users-file", str(users_file)],
                           input=f"{name}-pw\n", text=True, env={**os.environ, "ENV_FILE": str(env.path)},
                           cwd=ROOT, check=True, capture_output=True)
        port = free_port()
        proc = self._start("devauth", [sys.executable, "-m", "devauth", "serve", "--host", "127.0.0.1",
                                       "--port", str(port), "--users-file", str(users_file)],
                           d / "devauth.log", {"ENV_FILE": str(env.path), "LOG_LEVEL": "warning"})
        auth = DevAuth(proc, port, names)
        wait_http(auth.wsdl, proc)
        self.auth_wsdl = auth.wsdl
        return auth

    def supervisor(self, env: Env) -> Proc:
        proc = self._start("supervisor", [sys.executable, "-m", "supervisor.daemon"],
                           env.path.parent / "supervisor.log", {"ENV_FILE": str(env.path)})
        heartbeat = env.spool / "supervisor.json"

        def ready():
            if not proc.alive():
                raise RuntimeError(f"supervisor exited early:\n{proc.output()}")
            try:
                return json.loads(heartbeat.read_text()).get("pid") == proc.pid
            except (OSError, ValueError):
                return False
        wait_for(ready, 120, 0.05, "supervisor start")
        return proc

    def facade(self, env: Env, service: str = "BenchLight") -> Proc:
        allowed = {"AUTH_MANAGERS": self.auth_wsdl} if self.auth_wsdl else {}
        proc = self._start("facade", [sys.executable, "-m", "facade"], env.path.parent / "facade.log",
                           {"ENV_FILE": str(env.path), **allowed})
        wait_http(f"http://127.0.0.1:{env.port}{env.context_root}/{service}?wsdl", proc)
        return proc

    def baseline(self, env: Env, log_folder: Path, auth_wsdl: str, program: list[str]) -> tuple[Proc, int]:
        port = free_port()
        log_folder.mkdir(parents=True, exist_ok=True)
        proc = self._start("baseline", [sys.executable, "-m", "bench.servers", "--app", "waiter", "--port", str(port),
                                        "--log-folder", str(log_folder)],
                           env.path.parent / "baseline.log",
                           {"ENV_FILE": str(env.path), "BASELINE_AUTH_WSDL": auth_wsdl,
                            "BASELINE_PROGRAM": json.dumps(program)})
        wait_http(f"http://127.0.0.1:{port}/?wsdl", proc)
        return proc, port

    def floor(self, env: Env) -> tuple[Proc, int]:
        """The HTTP floor: a no-op WSGI app served like the façade."""
        port = free_port()
        proc = self._start("floor", [sys.executable, "-m", "bench.servers", "--app", "floor", "--port", str(port)],
                           env.path.parent / "floor.log", {"ENV_FILE": str(env.path)})
        wait_http_post(port, proc)
        return proc, port

    def gunicorn_facade(self, env: Env, service: str = "BenchLight") -> tuple[Proc, int]:
        """The façade's own app under the server it used before granian (S9's comparison)."""
        port = free_port()
        proc = self._start("facade-gunicorn", [sys.executable, "-m", "bench.servers", "--app", "facade",
                                               "--server", "gunicorn", "--port", str(port)],
                           env.path.parent / "facade-gunicorn.log",
                           {"ENV_FILE": str(env.path), "AUTH_MANAGERS": self.auth_wsdl})
        wait_http(f"http://127.0.0.1:{port}{env.context_root}/{service}?wsdl", proc)
        return proc, port

    def _start(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, log, env)
        self.procs.append(proc)
        return proc

    # -- teardown ------------------------------------------------------------
    def job_processes(self, mark: str | None = None) -> list[psutil.Process]:
        """Live processes whose command line or working directory names our directory, or `mark` (shims
        and programs: a program runs in its attempt's work/ and names its files relative to it)."""
        mark = mark or str(self.directory)
        found = []
        for p in psutil.process_iter(["cmdline", "cwd", "status"]):
            try:
                if p.info["status"] != psutil.STATUS_ZOMBIE and any(
                        mark in a for a in (p.info["cmdline"] or []) + [p.info["cwd"] or ""]):
                    found.append(p)
            except psutil.Error:
                pass
        return [p for p in found if p.pid not in {x.pid for x in self.procs}]

    def kill_jobs(self, mark: str | None = None) -> int:
        killed = 0
        for p in self.job_processes(mark):
            try:
                os.killpg(p.pid, signal.SIGKILL)  # a shim leads its job's group; a program falls to kill()
                killed += 1
            except (ProcessLookupError, PermissionError):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        return killed

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        for _ in range(3):
            if not self.kill_jobs():
                break
            time.sleep(0.2)
        # the supervisors stopped and left their jobs' cgroups to successors that never come
        remove_spool_cgroups(self.directory.glob("*/spool"))


@dataclass
class DevAuth:
    proc: Proc
    port: int
    users: list[str]
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def wsdl(self) -> str:
        return f"http://127.0.0.1:{self.port}{AUTH_PATH}?wsdl"

    def token(self, user: str) -> str:
        """The user's session token (one login per user for the whole run)."""
        if user not in self._tokens:
            self._tokens[user] = self.login(user)
        return self._tokens[user]

    def login(self, user: str) -> str:
        """A new session token of the user: one more poller in the façade's eyes."""
        from suds.cache import NoCache
        from suds.client import Client
        client = Client(self.wsdl, cache=NoCache(), timeout=30)
        return str(client.service.getSessionToken(user, f"{user}-pw", PROJECT))

    def extra(self) -> str:
        """extraParameters as the workflow manager sends them."""
        return f"gss=http://gss.example/gss?wsdl=1,auth={self.wsdl},WFM=http://wfm.example/wfm,"

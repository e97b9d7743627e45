"""./bin/up after its virtual environment is ready: check, start, show, watch, stop.

Nothing is started unless it can work: a stack already up on this spool or a
port held by another process is reported (with who holds it) and ./bin/up
exits 1, instead of starting services that die at once. A service that exits
during start-up or later stops the others and ./bin/up with it (exit 1).
The operator console is started too when it is installed (console.app).
Ctrl-C (or TERM, or HUP: the terminal closed, ssh dropped) stops the services
and says which jobs keep running: they run in their own sessions and the next
supervisor adopts them. The services never outlive ./bin/up: each is told by
the kernel (PR_SET_PDEATHSIG) to stop when it ends, even by SIGKILL.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import signal
import importlib.util
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs import config as config_mod  # noqa: E402
from jobs.definitions import load_definitions  # noqa: E402
from jobs.errors import JobsError  # noqa: E402
from jobs.ports import port_holder  # noqa: E402
from jobs.spool import Spool  # noqa: E402
from jobs.supervisorinfo import isolation_note  # noqa: E402

READY_SECONDS = 30
STOP_SECONDS = 15
ACTIVE = ("RUNNING", "STOPPING")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived."""


def _stop(signum, frame):
    raise Stop()


def say(text: str = "", err: bool = False) -> None:
    try:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
    except OSError:
        pass  # the terminal is gone (SIGHUP): stopping the services matters more than saying so


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_clash(ports: list[tuple[str, str, int]]) -> str | None:
    """Two of our services set to one port (granian would let both bind it and split the connections)."""
    for i, (key, host, port) in enumerate(ports):
        for other, other_host, other_port in ports[:i]:
            if port == other_port and port != 0:
                return f"{other} and {key} are both {port} ({other_host} and {host}): one port cannot serve both"
    return None


def supervisor_running(env: dict) -> str | None:
    """`jobctl status` says whether a supervisor runs on this spool: its first line if it does."""
    done = subprocess.run([str(Path(sys.executable).parent / "jobctl"), "status"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    first = (done.stdout.strip().splitlines() or ["a supervisor runs"])[0]
    return " ".join(first.split()) if done.returncode in (0, 1) else None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            r.read()
        return True
    except OSError:
        return False


def active_jobs(spool_dir: Path) -> list[str]:
    """serviceIDs whose state.json says RUNNING or STOPPING."""
    runs = spool_dir / "runs"
    if not runs.is_dir():
        return []
    spool, found = Spool(spool_dir), []
    for sid in sorted(os.listdir(runs)):
        try:
            state = spool.read_state(sid)
        except (OSError, JobsError):
            continue
        if isinstance(state, dict) and state.get("state") in ACTIVE:
            found.append(sid)
    return found


def console_present() -> bool:
    """The operator console is optional: started when its package is installed."""
    try:
        return importlib.util.find_spec("console.app") is not None
    except ImportError:
        return False


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join("        " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


DEV_JOB_USER = "spoolsoap-job"
# prints the first file the user running it cannot read (or run), then fails
_FIRST_UNREADABLE = 'for f; do test -r "$f" || { echo "$f"; exit 1; }; done'


def unreadable_for_others(files: list[str]) -> str | None:
    """The first of `files` that a user of no group (nobody) cannot read, or None."""
    done = subprocess.run(["/bin/sh", "-c", _FIRST_UNREADABLE, "sh", *files], user="nobody", cwd="/",
                          capture_output=True, text=True)
    return (done.stdout.strip() or "?") if done.returncode else None


def dev_job_user(cfg, definitions) -> tuple[str | None, str]:
    """As root, with JOB_ISOLATION on and neither JOB_USER nor PROJECT_USERS set: run the jobs as the
    development user spoolsoap-job (created if missing) when any user can read their programs. Returns
    the user (None: the configuration stays as it is) and what to tell the operator."""
    if os.geteuid() != 0 or cfg.job_isolation == "off" or cfg.job_user or cfg.project_users:
        return None, ""
    files = sorted({f for d in definitions.values() for f in d.program_files()})
    blocked = unreadable_for_others(files)
    if blocked:
        hint = (" (rm -rf .venv; PYTHON=/usr/bin/python3 ./bin/up builds it from a system Python)"
                if blocked == sys.executable else "")
        return None, (f"./bin/up would run jobs as {DEV_JOB_USER}, but other users cannot read {blocked}; "
                      f"put the programs and their interpreter where they can{hint}, or set JOB_USER")
    created = ""
    if subprocess.run(["getent", "passwd", DEV_JOB_USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               DEV_JOB_USER], capture_output=True, text=True)
        if made.returncode != 0:
            return None, f"could not create the job user {DEV_JOB_USER}: {made.stderr.strip() or made.returncode}"
        created = ", created by ./bin/up"
    return DEV_JOB_USER, f"the development job user{created}; set JOB_USER to choose another"


_libc = ctypes.CDLL(None, use_errno=True)


def _stop_with_parent(parent: int):
    """In the child before exec: SIGTERM when ./bin/up ends, however it ends."""
    def arm():
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it ended before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


class Service:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            # a process group of its own: the terminal's SIGINT/SIGHUP reach only ./bin/up, which stops the
            # services in order (granian would take a hangup as "respawn the workers" and race the stop)
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         process_group=0, preexec_fn=_stop_with_parent(os.getpid()))

    def exited(self) -> int | None:
        return self.proc.poll()


def stop_all(services: list[Service]) -> None:
    for s in services:
        if s.exited() is None:
            s.proc.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for s in services:
        try:
            s.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


def main() -> int:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    try:
        cfg = config_mod.load()
        definitions = load_definitions(cfg.definitions_dir)
    except JobsError as e:
        say(f"up: {e}", err=True)
        return 2
    facade = f"http://{url_host(cfg.facade_host)}:{cfg.facade_port}"
    services = {d.service: f"{facade}{cfg.context_root}/{d.service}?wsdl" for d in definitions.values()}
    auth_wsdl = f"http://{url_host(cfg.devauth_host)}:{cfg.devauth_port}/authManager/AuthManager?wsdl"
    console_host, console_port = getattr(cfg, "console_host", "127.0.0.1"), getattr(cfg, "console_port", 8082)
    console = f"http://{url_host(console_host)}:{console_port}" if console_present() else None
    log_dir = cfg.spool_dir.parent / "log"
    creds = cfg.devauth_users_file.parent / "demo-credentials.txt"
    # the façade asks only AUTH_MANAGERS: unless the env file names some, the auth manager started here
    env = {**os.environ, "AUTH_MANAGERS": " ".join(cfg.auth_managers) or auth_wsdl}

    # -- is anything in the way? -------------------------------------------------
    running = supervisor_running(env)
    if running:
        what = f"{running}; the façade answers at {facade}" if answers(next(iter(services.values()))) else running
        say(f"up: the system is already up on spool {cfg.spool_dir} ({what}).\n"
            "    Use it, or stop it first (Ctrl-C in the terminal of the ./bin/up that started it).", err=True)
        return 1
    ports = [("FACADE_PORT", cfg.facade_host, cfg.facade_port), ("DEVAUTH_PORT", cfg.devauth_host, cfg.devauth_port)]
    ports += [("CONSOLE_PORT", console_host, console_port)] if console else []
    clash = port_clash(ports)
    if clash:
        say(f"up: {clash}.\n    Give each service its own port in {cfg.env_file or 'an env file (./env)'}.", err=True)
        return 2
    for key, host, port in ports:
        holder = port_holder(host, port)
        if holder:
            say(f"up: start-up failed: port {port} ({key}) on {host} is in use by {holder}.\n"
                f"    Stop that process or set {key} in {cfg.env_file or 'an env file (./env)'}.", err=True)
            return 1

    # -- start and wait until everything answers ----------------------------------
    job_user, job_user_note = dev_job_user(cfg, definitions)
    if job_user:
        env["JOB_USER"] = job_user
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    try:
        modules = [("devauth", ["devauth", "serve", "--demo"]), ("supervisor", ["supervisor.daemon"]),
                   ("facade", ["facade"])] + ([("console", ["console"])] if console else [])
        for name, module in modules:
            started.append(Service(name, [sys.executable, "-m", *module], log_dir / f"{name}.log", env))
        deadline = time.monotonic() + READY_SECONDS
        for url in [*services.values(), auth_wsdl] + ([f"{console}/healthz"] if console else []):
            while not answers(url):
                dead = next((s for s in started if s.exited() is not None), None)
                if dead is not None:
                    say(f"up: start-up failed: the {dead.name} exited with code {dead.exited()}; "
                        f"the end of {dead.log}:\n{tail(dead.log)}", err=True)
                    stop_all(started)
                    return 1
                if time.monotonic() > deadline:
                    say(f"up: start-up failed: no answer from {url} after {READY_SECONDS} s; see {log_dir}/*.log",
                        err=True)
                    stop_all(started)
                    return 1
                time.sleep(0.2)

        say("\n  The system is up.")
        say("    Services (point the workflow manager or a client at a WSDL):")
        for d in definitions.values():
            say(f"        {d.service:<16} {services[d.service]}")
        say(f"    Development auth manager (extraParameters: auth=<this>,):\n        {auth_wsdl}")
        if creds.exists():
            say("    Demo user:\n" + "\n".join("        " + line for line in creds.read_text().splitlines()))
        if console:
            say(f"    Operator console (log in as the demo user):\n        {console}/")
        say(f"    Health: {facade}/readyz, metrics: {facade}/metrics" + (f" and {console}/metrics" if console else ""))
        isolation = isolation_note(Spool(cfg.spool_dir)) or "the supervisor did not say"
        say(f"    Jobs: {isolation}" + (f"\n        ({job_user_note})" if job_user_note else ""))
        say(f"    Logs: {log_dir}/{{{','.join(name for name, _ in modules)}}}.log")
        say("    Spool: jobctl list   (in another terminal: source .venv/bin/activate)")
        if "waiter" in definitions:
            say("\n  Try it (another terminal):\n    .venv/bin/waiter-client run --seconds 20 --user demo "
                f"--project demo --password-stdin < <(sed -n 's/^password=//p' {shlex.quote(str(creds))})")
        say("\n  Ctrl-C stops the services; running jobs keep running.")

        while True:
            dead = next((s for s in started if s.exited() is not None), None)
            if dead is not None:
                say(f"up: the {dead.name} exited with code {dead.exited()}; stopping the others. "
                    f"The end of {dead.log}:\n{tail(dead.log)}", err=True)
                stop_all(started)
                return 1
            time.sleep(0.5)
    except Stop:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        say("\nstopping services (running jobs keep running)...")
        stop_all(started)
        jobs = active_jobs(cfg.spool_dir)
        if jobs:
            listed = ", ".join(jobs[:10]) + (f" and {len(jobs) - 10} more" if len(jobs) > 10 else "")
            say(f"{len(jobs)} job{'s' if len(jobs) > 1 else ''} still running: {listed}.\n"
                "The next ./bin/up adopts them (jobctl list shows them; jobctl kill ID stops one).")
        else:
            say("No job was running.")
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""./bin/up with real processes: its own env file (ENV_FILE) on free ports.

Why: ./bin/up is the first thing a new user runs. It used to wait 30 s and
exit 0 when a port was taken, report "The system is up." while its own
services died because the stack was already up, stay silent on Ctrl-C, and
list only the Waiter.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from facade_harness import definitions_dir
from harness import ROOT, free_port, kill_leftovers, wait_for, write_env

UP = ROOT / "bin" / "up"


class Up:
    """One ./bin/up process in its own process group, as a terminal would run it."""

    def __init__(self, env_file: Path, out: Path):
        self.out_path = out
        self._out = open(out, "wb")
        self.proc = subprocess.Popen([str(UP)], stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "ENV_FILE": str(env_file)}, start_new_session=True)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._out.close()


@pytest.fixture
def env_file(tmp_path):
    path = write_env(tmp_path, DEFINITIONS_DIR=definitions_dir(tmp_path), LOG_LEVEL="info", CONSOLE_PORT=free_port())
    yield path
    kill_leftovers(tmp_path)


def env_value(env_file: Path, key: str) -> str:
    return next(line.split("=", 1)[1] for line in env_file.read_text().splitlines() if line.startswith(key + "="))


def test_up_lists_every_service_refuses_a_second_run_and_reports_running_jobs_on_ctrl_c(env_file, tmp_path):
    """The banner names every definition's WSDL; a second ./bin/up while it is up exits 1 saying so (and the
    first stack keeps serving); Ctrl-C prints the stopping line and names the job still running."""
    up = Up(env_file, tmp_path / "up.out")
    try:
        wait_for(lambda: "The system is up." in up.output() or up.proc.poll() is not None, 90,
                 what="./bin/up banner")
        banner = up.output()
        assert "The system is up." in banner, banner
        port = env_value(env_file, "FACADE_PORT")
        for service in ("Waiter", "Tree", "ExitWith"):
            assert f"http://127.0.0.1:{port}/demo-waiter/{service}?wsdl" in banner, banner

        second = Up(env_file, tmp_path / "up2.out")
        assert 1 == second.wait(60), second.output()
        assert "already up" in second.output(), second.output()
        assert up.proc.poll() is None, up.output()

        env = {**os.environ, "ENV_FILE": str(env_file)}
        jobctl = str(Path(sys.executable).parent / "jobctl")
        sid = subprocess.run([jobctl, "submit", "waiter", "secondsToWait=60"], env=env, capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
        state = tmp_path / "spool" / "runs" / sid / "state.json"
        wait_for(lambda: state.exists() and json.loads(state.read_text())["state"] == "RUNNING", 30,
                 what=f"{sid} RUNNING")

        os.killpg(up.proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        assert 0 == up.wait(60), up.output()
        after = up.output()[len(banner):]
        assert "stopping services" in after, after
        assert f"1 job still running: {sid}" in after, after
    finally:
        up.kill()


def test_up_with_the_facade_port_taken_exits_1_naming_the_port_and_its_holder(env_file, tmp_path):
    """Another process listening on FACADE_PORT: ./bin/up starts nothing, exits 1 at once, names port and pid."""
    port = int(env_value(env_file, "FACADE_PORT"))
    with socket.create_server(("127.0.0.1", port)):
        up = Up(env_file, tmp_path / "up.out")
        started = time.monotonic()
        try:
            code = up.wait(60)
        finally:
            up.kill()
    out = up.output()
    assert 1 == code, out
    assert time.monotonic() - started < 25, out
    assert f"port {port} (FACADE_PORT) on 127.0.0.1 is in use by pid {os.getpid()}" in out, out
    assert not (tmp_path / "log" / "supervisor.log").exists()


def test_up_refuses_the_facade_and_the_console_on_one_port(tmp_path):
    """FACADE_PORT equal to CONSOLE_PORT: ./bin/up starts nothing and names both settings."""
    port = free_port()
    env_file = write_env(tmp_path, DEFINITIONS_DIR=definitions_dir(tmp_path), FACADE_PORT=port, CONSOLE_PORT=port)
    up = Up(env_file, tmp_path / "up.out")
    try:
        code = up.wait(60)
    finally:
        up.kill()
    assert 2 == code, up.output()
    assert f"FACADE_PORT and CONSOLE_PORT are both {port}" in up.output(), up.output()
    assert not (tmp_path / "log").exists()


def test_a_hangup_stops_every_service_and_a_second_server_refuses_a_served_port(env_file, tmp_path):
    """While up, a second façade or console on the same port exits at once naming the holder; SIGHUP (the
    terminal closed) stops ./bin/up and every service it started."""
    up = Up(env_file, tmp_path / "up.out")
    try:
        wait_for(lambda: "The system is up." in up.output() or up.proc.poll() is not None, 90,
                 what="./bin/up banner")
        assert "The system is up." in up.output(), up.output()
        services = psutil.Process(up.proc.pid).children(recursive=True)
        assert len(services) >= 4, services
        env = {**os.environ, "ENV_FILE": str(env_file)}
        for module, key in (("facade", "FACADE_PORT"), ("console", "CONSOLE_PORT")):
            done = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=30)
            port = env_value(env_file, key)
            assert 2 == done.returncode, done.stderr
            assert f"port {port} ({key}) on 127.0.0.1 is already in use by pid" in done.stderr, done.stderr

        os.killpg(up.proc.pid, signal.SIGHUP)  # the terminal's hangup reaches the whole foreground group
        assert 0 == up.wait(60), up.output()
        gone, alive = psutil.wait_procs(services, timeout=30)
        assert [] == alive, [p.cmdline() for p in alive]
    finally:
        up.kill()


def test_services_print_help_and_exit_without_serving(tmp_path):
    """`--help` of the façade and the console prints their usage and exits 0; nothing is served."""
    env_file = write_env(tmp_path, DEFINITIONS_DIR=definitions_dir(tmp_path))
    for module, prog in (("facade", "spoolsoap-facade"), ("console", "spoolsoap-console")):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "ENV_FILE": str(env_file)}, timeout=30)
        assert (0, "") == (done.returncode, done.stderr), done.stderr
        assert done.stdout.startswith(f"usage: {prog}") and "ENV_FILE" in done.stdout, done.stdout


def waiter_beside_its_program(directory: Path, mode: int) -> None:
    """The waiter's definition in `directory` (given `mode`), its program beside it, run by the system Python."""
    shutil.copy(ROOT / "jobs" / "programs" / "wait_a_while.py", directory)
    waiter = (ROOT / "jobs" / "definitions" / "waiter.toml").read_text()
    (directory / "waiter.toml").write_text(waiter.replace('"{python}", "{project}/jobs/programs/wait_a_while.py"',
                                                          '"/usr/bin/python3", "{here}/wait_a_while.py"'))
    for f in directory.iterdir():
        f.chmod(0o644)
    directory.chmod(mode)


def test_as_root_jobs_run_as_the_development_job_user_and_the_banner_says_how_jobs_are_confined(tmp_path):
    """As root with no JOB_USER, ./bin/up runs the jobs as spoolsoap-job (created if missing) when other users
    can read their programs, and the banner says so; where they cannot (definitions in a private
    directory), the banner says "not isolated" and names the file. Before, ./bin/up ran every job as root
    and said nothing."""
    if os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root (useradd, switching users) and a system /usr/bin/python3")
    public = Path(tempfile.mkdtemp(prefix="up-defs-", dir="/tmp"))
    try:
        waiter_beside_its_program(public, 0o755)
        env_file = write_env(tmp_path, DEFINITIONS_DIR=str(public), LOG_LEVEL="info", CONSOLE_PORT=free_port())
        up = Up(env_file, tmp_path / "up.out")
        try:
            wait_for(lambda: "The system is up." in up.output() or up.proc.poll() is not None, 90,
                     what="./bin/up banner")
            banner = up.output()
            assert "    Jobs: isolated: jobs run as spoolsoap-job (uid " in banner, banner
            env = {**os.environ, "ENV_FILE": str(env_file)}
            jobctl = str(Path(sys.executable).parent / "jobctl")
            sid = subprocess.run([jobctl, "submit", "waiter", "secondsToWait=1"], env=env, capture_output=True,
                                 text=True, check=True, timeout=30).stdout.strip()
            state = tmp_path / "spool" / "runs" / sid / "state.json"
            wait_for(lambda: state.exists() and json.loads(state.read_text())["state"] in ("SUCCEEDED", "FAILED"),
                     60, what=f"{sid} finished")
            record = json.loads(state.read_text())
            assert ("SUCCEEDED", True) == (record["state"], record["isolation"].startswith(
                "isolated: runs as spoolsoap-job")), record
        finally:
            up.kill()
            kill_leftovers(tmp_path)
    finally:
        shutil.rmtree(public)

    private = tmp_path / "private"
    private.mkdir()
    waiter_beside_its_program(private, 0o700)
    env_file = write_env(private, DEFINITIONS_DIR=str(private), CONSOLE_PORT=free_port())
    up = Up(env_file, tmp_path / "up2.out")
    try:
        wait_for(lambda: "The system is up." in up.output() or up.proc.poll() is not None, 90,
                 what="./bin/up banner")
        banner = up.output()
        assert "    Jobs: not isolated: no JOB_USER configured" in banner, banner
        assert "./bin/up would run jobs as spoolsoap-job, but other users cannot read " in banner, banner
    finally:
        up.kill()
        kill_leftovers(private)

"""The wheel, installed into a fresh virtual environment outside the repository, works on its own.

Why: a new user's `pip install` gave commands that failed (`No module named
'clfpy'`, `jobctl` looking for `env` inside site-packages, the waiter's
program missing from the wheel) and a wheel holding an untracked file. Here the
wheel is built from the tracked files only, installed into a new venv, and
devauth + supervisor + façade run from that venv in a directory with its own
`env` (found as ./env, no ENV_FILE) until a waiter job completes over SOAP.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from facade_harness import new_sid, suds_client, zeep_client
from harness import ROOT, free_port, kill_leftovers, wait_for

CLFPY = "clfpy==1.3.2"


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the wheel is built from the tracked files only")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, list[str]]:
    """A wheel built from a clean export: the tracked files as they are in the work tree."""
    base = tmp_path_factory.mktemp("wheel")
    files = tracked_files()
    src = base / "src"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    pip("wheel", "--no-deps", "-w", str(base / "dist"), str(src))
    return next((base / "dist").glob("spoolsoap-*.whl")), files


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no pip of its own) with the wheel and its dependencies, without clfpy."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=60)
    pip("--python", str(target / "bin" / "python"), "install", str(wheel[0]))
    return target


def test_wheel_holds_tracked_files_and_the_waiters_program(wheel):
    """Nothing but tracked files' content (no stray definition), the waiter's program and definition, and the
    Slurm executor's batch script."""
    path, tracked = wheel
    wheel = zipfile.ZipFile(path)
    names = [n for n in wheel.namelist() if ".dist-info/" not in n]
    assert {"jobs/programs/wait_a_while.py", "jobs/definitions/waiter.toml", "supervisor/shim.py",
            "slurm/job.sh"} <= set(names)
    assert [] == [n for n in names if n not in tracked]
    assert wheel.getinfo("slurm/job.sh").external_attr >> 16 & 0o111  # sbatch runs it: executable


def test_installed_wheel_runs_a_waiter_job_outside_the_repo(venv, tmp_path):
    """Every service prints its --help; without clfpy the façade, the console and waiter-client name the install
    command; with it, devauth, supervisor and façade from the venv, configured by ./env in a temporary directory,
    run a waiter job to COMPLETED."""
    bin_dir = venv / "bin"
    work = tmp_path / "site"
    work.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    def run(*argv, **kw):
        kw.setdefault("env", env)
        return subprocess.run([str(a) for a in argv], cwd=work, capture_output=True, text=True, timeout=60, **kw)

    for command in ("spool-supervisor", "spoolsoap-facade", "spoolsoap-console", "devauth"):
        done = run(bin_dir / command, "--help")  # help, never a service started (nor clfpy needed for it)
        assert (0, f"usage: {command}") == (done.returncode, done.stdout[:7 + len(command)]), done
    for argv in (["waiter-client", "--help"], ["spoolsoap-facade"], ["spoolsoap-console"]):
        done = run(bin_dir / argv[0], *argv[1:])
        assert 2 == done.returncode, done.stderr
        assert "pip install --no-deps clfpy==1.3.2" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    pip("--python", str(bin_dir / "python"), "install", "--no-deps", CLFPY)
    assert 0 == run(bin_dir / "waiter-client", "--help").returncode
    found = run(bin_dir / "python", "-c", "import os; from supervisor.slurm import JOB_SCRIPT as s; "
                "print(s, os.access(s, os.X_OK))")
    assert found.stdout.strip().endswith("site-packages/slurm/job.sh True"), found  # EXECUTOR=slurm finds it

    # no env file anywhere: the definitions shipped in the package, the spool in systemd's StateDirectory
    empty = run(bin_dir / "python", "-c", "from jobs import config; c = config.load(); "
                "print(c.definitions_dir); print(c.spool_dir)", env={**env, "STATE_DIRECTORY": str(tmp_path / "st")})
    definitions, spool = empty.stdout.split()
    assert definitions.startswith(str(venv)) and definitions.endswith("jobs/definitions"), empty
    assert str(tmp_path / "st" / "spool") == spool

    facade_port, devauth_port = free_port(), free_port()
    auth_wsdl = f"http://127.0.0.1:{devauth_port}/authManager/AuthManager?wsdl"
    (work / "env").write_text(
        f"FACADE_PORT={facade_port}\nFACADE_WORKERS=1\nDEVAUTH_PORT={devauth_port}\n"
        f"SPOOL_DIR=var/spool\nDEVAUTH_USERS_FILE=var/devauth/users.json\nAUTH_MANAGERS={auth_wsdl}\n"
        "RECONCILE_SECONDS=1\n")
    assert 0 == run(bin_dir / "devauth", "adduser", "alice", "--project", "demo", "--password-stdin",
                    input="alice-pw-1\n").returncode
    procs = []
    try:
        for argv in (["devauth", "serve"], ["spool-supervisor"], ["spoolsoap-facade"]):
            log = open(tmp_path / f"{argv[0]}.log", "wb")
            procs.append(subprocess.Popen([str(bin_dir / argv[0]), *argv[1:]], cwd=work, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
        wsdl = f"http://127.0.0.1:{facade_port}/demo-waiter/Waiter?wsdl"
        for url in (auth_wsdl, wsdl):
            def answers(url=url):
                assert all(p.poll() is None for p in procs), [p.args for p in procs if p.poll() is not None]
                try:
                    return requests.get(url, timeout=2).status_code == 200
                except requests.RequestException:
                    return False
            wait_for(answers, 60, 0.2, what=url)

        token = str(suds_client(auth_wsdl).service.getSessionToken("alice", "alice-pw-1", "demo"))
        client = zeep_client(wsdl)
        sid = new_sid("installed")
        client.service.startWaiter(sid, token, f"auth={auth_wsdl},", 1)
        answer = wait_for(lambda: (r := client.service.getServiceStatus(sid, token)).status_base64 == "COMPLETED"
                          and r, 60, 0.5, what=f"{sid} COMPLETED")
        assert "FINISHED" == answer.result
        assert (work / "var" / "spool" / "runs" / sid / "state.json").is_file()  # relative to ./env
        listed = run(bin_dir / "jobctl", "list", "--all")
        assert 0 == listed.returncode and sid in listed.stdout, listed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        kill_leftovers(tmp_path)

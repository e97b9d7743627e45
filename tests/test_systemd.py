"""The systemd units in deploy/systemd pass `systemd-analyze verify` and keep the supervisor's jobs alive.

Why: a unit with a typo is silently half-applied by systemd (it logs and goes
on), and the supervisor's unit must stop only the daemon (KillMode=process):
with systemd's default every restart would kill every running job, which the
next daemon is meant to adopt. `systemd-analyze` comes from Debian's
`systemd` (.ci/run installs it); outside CI the test is skipped without it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import ROOT

UNITS = ROOT / "deploy" / "systemd"
VENV_BIN = "/opt/spoolsoap/venv/bin/"


def settings(unit: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", ["spoolsoap-supervisor.service", "spoolsoap-facade.service",
                                  "spoolsoap-console.service"])
def test_unit_passes_systemd_analyze_verify(name, tmp_path):
    """No warning at all from `systemd-analyze verify` (its exit status ignores unknown keys and bad values);
    ExecStart points at this venv's console script of the same name, so that it is checked too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (.ci/run installs Debian's systemd)")
        pytest.skip("needs systemd-analyze (apt-get install systemd)")
    text = (UNITS / name).read_text()
    assert VENV_BIN in text
    (tmp_path / name).write_text(text.replace(VENV_BIN, str(Path(sys.executable).parent) + "/"))
    done = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    assert 0 == done.returncode and "" == done.stderr.strip() + done.stdout.strip(), done.stderr + done.stdout


def test_units_run_as_a_user_from_the_env_file_restart_on_failure_and_leave_jobs_running():
    """All: User=, ENV_FILE=/etc/spoolsoap/env, Restart=on-failure; the supervisor's KillMode=process."""
    sup, fac, con = (settings(UNITS / f"spoolsoap-{n}.service") for n in ("supervisor", "facade", "console"))
    for unit, command in ((sup, "spool-supervisor"), (fac, "spoolsoap-facade"), (con, "spoolsoap-console")):
        assert ["spoolsoap"] == unit["User"]
        assert ["ENV_FILE=/etc/spoolsoap/env"] == unit["Environment"]
        assert ["on-failure"] == unit["Restart"]
        assert [VENV_BIN + command] == unit["ExecStart"]
    assert ["process"] == sup["KillMode"]
    assert "PrivateTmp" not in sup  # the jobs outlive the daemon's namespace


def test_supervisor_unit_delegates_its_cgroup_survives_a_jobs_oom_and_bounds_its_tasks():
    """Delegate=yes with a writable /sys/fs/cgroup (no ProtectControlGroups=), OOMPolicy=continue, a TasksMax number;
    no RestrictSUIDSGID=, which would refuse the shim's set-group-ID work/ directory."""
    sup = settings(UNITS / "spoolsoap-supervisor.service")
    assert (["yes"], ["continue"]) == (sup["Delegate"], sup["OOMPolicy"])
    assert "ProtectControlGroups" not in sup and "RestrictSUIDSGID" not in sup
    assert 4096 <= int(sup["TasksMax"][0]) <= 4_194_304  # not the 15 % default, not infinity


def test_the_units_capabilities_let_the_shim_confine_a_program_that_keeps_none(tmp_path):
    """Under the unit's User= and AmbientCapabilities= (as systemd sets them, here through setpriv), the real
    shim gives work/ to the job's user, switches to it, and the program it starts holds no capability at all."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to take the unit's user and capabilities")
    python = "/usr/bin/python3"  # not the venv's: its interpreter may sit in root's home
    if not os.access(python, os.X_OK):
        pytest.skip(f"needs {python}")
    sup = settings(UNITS / "spoolsoap-supervisor.service")
    caps = sup["AmbientCapabilities"][0].split()
    assert caps == sup["CapabilityBoundingSet"][0].split() and "CAP_SETUID" in caps and "CAP_SETGID" in caps
    names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    supervisor_uid, job_uid = 61234, 65534
    attempt = Path(tempfile.mkdtemp(prefix="spoolsoap-unit-"))  # not under tmp_path: root's 0700 parents
    try:
        os.chown(attempt, supervisor_uid, supervisor_uid)
        where = [attempt / n for n in ("work", "stdout.log", "stderr.log", "exit.json", "notifications.txt")]
        done = subprocess.run(["setpriv", f"--reuid={supervisor_uid}", f"--regid={supervisor_uid}", "--clear-groups",
                               "--no-new-privs", f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}",
                               python, "-S", str(ROOT / "supervisor" / "shim.py"), *map(str, where),
                               f"uid={job_uid}", f"gid={job_uid}", "no_new_privs=1", "log_bytes=65536", "--",
                               "grep", "-E", "^(Uid|Cap)", "/proc/self/status"],
                              capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"})
        stderr = where[2].read_text() if where[2].exists() else ""
        assert 0 == done.returncode, done.stderr + stderr
        assert 0 == json.loads(where[3].read_text())["exit_code"], stderr
        status = dict(line.split(":", 1) for line in where[1].read_text().splitlines())
        work = where[0].stat()
    finally:
        shutil.rmtree(attempt)
    assert [str(job_uid)] * 4 == status["Uid"].split()
    assert {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0} == \
        {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")}
    assert (job_uid, supervisor_uid, 0o2750) == (work.st_uid, work.st_gid, work.st_mode & 0o7777)

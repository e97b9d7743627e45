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


def test_the_units_capabilities_stay_with_the_supervisor_and_never_reach_a_program():
    """Under the unit's User= and AmbientCapabilities= (as systemd sets them, here through setpriv), the shim's
    confined spawn may switch to the job's user, and the program it starts holds no capability at all."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to take the unit's user and capabilities")
    sup = settings(UNITS / "spoolsoap-supervisor.service")
    caps = sup["AmbientCapabilities"][0].split()
    assert caps == sup["CapabilityBoundingSet"][0].split() and "CAP_SETUID" in caps and "CAP_SETGID" in caps
    names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    probe = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from supervisor import confine\n"
        "def caps(text):\n"
        "    return {l.split(':')[0]: int(l.split()[1], 16) for l in text.splitlines() if l.startswith('Cap')}\n"
        "r, w = os.pipe()\n"
        "null = os.open('/dev/null', os.O_RDONLY)\n"
        "stdio = [os.dup(null), os.dup(w), os.dup(w)]\n"
        "pid = confine.spawn(['cat', '/proc/self/status'], {'PATH': '/usr/bin:/bin'}, stdio,\n"
        "                    confine.Plan(uid=65534, gid=65534))\n"
        "for fd in (w, null, *stdio): os.close(fd)\n"
        "out = b''.join(iter(lambda: os.read(r, 65536), b'')).decode()\n"
        "os.waitpid(pid, 0)\n"
        "import json\n"
        "print(json.dumps([caps(open('/proc/self/status').read()), caps(out), os.getuid(),\n"
        "                  int(out.split('Uid:')[1].split()[0])]))\n"
    )
    python = "/usr/bin/python3"  # not the venv's: its interpreter may sit in root's home
    if not os.access(python, os.X_OK):
        pytest.skip(f"needs {python}")
    done = subprocess.run(["setpriv", "--reuid=61234", "--regid=61234", "--clear-groups", "--no-new-privs",
                           f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}", python, "-S", "-c", probe],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert 0 == done.returncode, done.stderr
    shim, program, shim_uid, program_uid = json.loads(done.stdout)
    assert (61234, 65534) == (shim_uid, program_uid)
    assert shim["CapAmb"] != 0 and shim["CapEff"] == shim["CapAmb"]  # the supervisor's side has them
    assert {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0} == {k: program[k] for k in
                                                                     ("CapInh", "CapPrm", "CapEff", "CapAmb")}

"""The systemd units in deploy/systemd pass `systemd-analyze verify` and keep the supervisor's jobs alive.

Why: a unit with a typo is silently half-applied by systemd (it logs and goes
on), and the supervisor's unit must stop only the daemon (KillMode=process):
with systemd's default every restart would kill every running job, which the
next daemon is meant to adopt. `systemd-analyze` comes from Debian's
`systemd` (.ci/run installs it); outside CI the test is skipped without it.
"""
from __future__ import annotations

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

"""jobctl, the operator CLI, as a real subprocess against the real supervisor daemon and waiter program."""
from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import jobctl
from jobctl.context import PENDING
from jobctl.formatting import hms
from jobs.cli import FAILED
from tests.harness import ROOT, Stack, kill_leftovers, processes_with_arg, wait_for


class Ops(Stack):
    """A Stack with jobctl pointed at it."""

    def jobctl(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobctl", *args], cwd=ROOT, text=True,
                              capture_output=True, timeout=timeout,
                              env={**os.environ, "ENV_FILE": str(self.env), **env})

    def submit(self, *args: str) -> str:
        r = self.jobctl("submit", "waiter", *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def row(self, sid: str) -> dict:
        r = self.jobctl("list", "--all", "--json")
        assert r.returncode == 0, r.stderr
        return next((j for j in json.loads(r.stdout) if j["service_id"] == sid), {})

    def wait_listed(self, sid: str, state: str, timeout: float = 30) -> dict:
        return wait_for(lambda: (lambda j: j if j.get("state") == state else None)(self.row(sid)),
                        timeout, interval=0.2, what=f"jobctl list showing {sid} {state}")

    def stdout_log(self, sid: str, attempt: int = 1) -> Path:
        return self.spool.attempt_dir(sid, attempt) / "stdout.log"


@pytest.fixture
def ops(tmp_path):
    o = Ops(tmp_path)
    yield o
    o.stop()
    kill_leftovers(tmp_path)  # never leave waiter programs behind


@pytest.fixture
def running(ops):
    ops.start()
    return ops


def log_contains(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


# -- the normal life of a job ----------------------------------------------------

def test_submitted_job_is_listed_running_then_succeeded(running):
    """A job submitted with jobctl shows in `list` as RUNNING with progress, then as SUCCEEDED."""
    sid = running.submit("secondsToWait=3")
    assert sid.startswith("manual-")
    row = running.wait_listed(sid, "RUNNING")
    assert ("waiter", 1) == (row["job"], row["attempt"])
    assert isinstance(row["pid"], int)
    wait_for(lambda: running.row(sid).get("progress") is not None, 10, interval=0.2, what="progress shown")
    table = running.jobctl("list")
    assert table.returncode == 0 and sid in table.stdout and "RUNNING" in table.stdout
    assert "%" in table.stdout
    done = running.wait_listed(sid, "SUCCEEDED")
    assert done["runtime_seconds"] >= 2.5
    assert "SUCCEEDED" in running.jobctl("list", "--state", "SUCCEEDED").stdout
    assert sid not in running.jobctl("list", "--state", "RUNNING").stdout


def test_submit_uses_the_given_id_and_refuses_a_taken_one(running):
    """`submit --id` names the job; a second submit with the same id is refused with exit 1."""
    assert "mine-1" == running.submit("--id", "mine-1", "secondsToWait=1")
    again = running.jobctl("submit", "waiter", "--id", "mine-1")
    assert 1 == again.returncode
    assert "already exists" in again.stderr


def test_show_prints_spec_state_history_and_paths(running):
    """`show` gives inputs, final state, the attempt history and where the files are."""
    sid = running.submit("secondsToWait=1")
    running.wait_state(sid, "SUCCEEDED")
    r = running.jobctl("show", sid)
    assert 0 == r.returncode, r.stderr
    assert "secondsToWait=1" in r.stdout
    assert "SUCCEEDED" in r.stdout
    assert "history" in r.stdout and "exit code 0" in r.stdout
    assert str(running.stdout_log(sid)) in r.stdout
    data = json.loads(running.jobctl("show", sid, "--json").stdout)
    assert ("SUCCEEDED", 1) == (data["state"]["state"], data["spec"]["inputs"]["secondsToWait"])


def test_logs_prints_the_programs_output(running):
    """`logs` prints the current attempt's stdout; `--stderr` the (empty) stderr."""
    sid = running.submit("secondsToWait=1")
    running.wait_state(sid, "SUCCEEDED")
    r = running.jobctl("logs", sid)
    assert 0 == r.returncode
    assert "waiting 1 s" in r.stdout and "100% done" in r.stdout
    err = running.jobctl("logs", sid, "--stderr")
    assert (0, "") == (err.returncode, err.stdout)


def test_logs_follow_ends_when_the_job_is_done(running):
    """`logs --follow` streams the log while the job runs and exits 0 once it has ended."""
    sid = running.submit("secondsToWait=3")
    running.wait_state(sid, "RUNNING")
    r = running.jobctl("logs", sid, "--follow", timeout=60)
    assert 0 == r.returncode, r.stderr
    assert "waiting 3 s" in r.stdout
    assert r.stdout.rstrip().endswith("100% done")
    assert "SUCCEEDED" == running.state(sid)["state"]


# -- operator commands -------------------------------------------------------------

def test_kill_ends_a_running_job_aborted(running):
    """`kill` stops a running job, waits for it, reports ABORTED; a second kill is refused."""
    sid = running.submit("secondsToWait=60")
    running.wait_state(sid, "RUNNING")
    wait_for(lambda: log_contains(running.stdout_log(sid), "waiting 60 s"), 10, what="program started")
    r = running.jobctl("kill", sid)
    assert 0 == r.returncode, r.stderr
    assert f"{sid}: ABORTED" in r.stdout
    st = running.state(sid)
    assert ("ABORTED", 15, 143, False) == (st["state"], st["signal"], st["exit_code"], st["killed"])
    assert (15, False) == (st["history"][0]["signal"], st["history"][0]["killed"])
    assert "stop        stopped by SIGTERM" in running.jobctl("show", sid).stdout
    assert "ABORTED" == running.row(sid)["state"]
    again = running.jobctl("kill", sid)
    assert 1 == again.returncode
    assert "nothing to kill" in again.stderr


def test_list_shows_who_stopped_a_job_and_how_far_it_got(running):
    """`list` has a REASON column (in words, cut to the terminal's width) and the last progress of a finished job."""
    sid = running.submit("secondsToWait=60")
    running.wait_state(sid, "RUNNING")
    wait_for(lambda: (running.row(sid).get("progress") or 0) > 0, 15, interval=0.2, what="progress above 0 %")
    assert 0 == running.jobctl("kill", sid).returncode
    row = running.row(sid)
    assert "ABORTED" == row["state"] and row["progress"] is not None and row["progress"] > 0
    wide = running.jobctl("list", COLUMNS="250")
    header, line = wide.stdout.splitlines()[0], next(x for x in wide.stdout.splitlines() if x.startswith(sid))
    assert header.split()[-1] == "REASON"
    assert line.endswith(f"stopped by an operator (jobctl, user {getpass.getuser()})")
    assert f"{row['progress']:.0f}%" in line.split()
    narrow = running.jobctl("list", COLUMNS="110")
    line = next(x for x in narrow.stdout.splitlines() if x.startswith(sid))
    assert len(line) <= 110 and line.endswith("…")
    assert f"(stopped by an operator (jobctl, user {getpass.getuser()}))" in running.jobctl("show", sid).stdout


def test_spool_times_are_iso_8601_utc_and_old_unix_times_still_read(running):
    """spec.json and the shim's exit.json say ISO 8601 UTC like state.json; a spec with a UNIX time still runs."""
    from datetime import datetime, timedelta
    sid = running.submit("secondsToWait=0")
    running.wait_state(sid, "SUCCEEDED")
    spec = json.loads((running.spool.run_dir(sid) / "spec.json").read_text())
    exit_rec = json.loads((running.spool.attempt_dir(sid, 1) / "exit.json").read_text())
    for value in (spec["submitted_at"], exit_rec["started_at"], exit_rec["ended_at"]):
        assert isinstance(value, str) and datetime.fromisoformat(value).utcoffset() == timedelta(0), value
    assert datetime.fromisoformat(exit_rec["started_at"]) <= datetime.fromisoformat(exit_rec["ended_at"])
    old = {"schema_version": 1, "service_id": "old-spec", "job": "waiter", "inputs": {"secondsToWait": 0},
           "submitted_at": 1_700_000_000.5}
    assert running.spool.submit(json.dumps(old).encode(), "old-spec")
    running.wait_state("old-spec", "SUCCEEDED")
    assert datetime.fromtimestamp(1_700_000_000.5).astimezone().strftime("%Y-%m-%d %H:%M:%S") in \
        running.jobctl("show", "old-spec").stdout


def test_restart_runs_attempt_two_and_keeps_attempt_ones_logs(running):
    """`restart` of a running job stops it and starts attempt 2; attempt 1's logs stay readable."""
    sid = running.submit("secondsToWait=60")
    running.wait_state(sid, "RUNNING")
    wait_for(lambda: log_contains(running.stdout_log(sid), "waiting 60 s"), 10, what="program started")
    r = running.jobctl("restart", sid)
    assert 0 == r.returncode, r.stderr
    assert "attempt 2" in r.stdout
    row = running.wait_listed(sid, "RUNNING")
    assert 2 == row["attempt"]
    first = running.jobctl("logs", sid, "--attempt", "1")
    assert 0 == first.returncode
    assert "aborted after" in first.stdout
    wait_for(lambda: log_contains(running.stdout_log(sid, 2), "waiting 60 s"), 10, what="attempt 2 output")
    assert "restarted by an operator (jobctl, user" in running.jobctl("show", sid).stdout
    assert 0 == running.jobctl("kill", sid).returncode


def test_queued_job_cannot_be_restarted_but_can_be_killed(tmp_path):
    """With every slot busy a job waits QUEUED: restart is refused, kill aborts it."""
    o = Ops(tmp_path, MAX_PARALLEL_JOBS=1)
    try:
        o.start()
        busy = o.submit("secondsToWait=60")
        o.wait_state(busy, "RUNNING")
        waiting = o.submit("secondsToWait=1")
        o.wait_listed(waiting, "QUEUED")
        r = o.jobctl("restart", waiting)
        assert 1 == r.returncode
        assert "still QUEUED" in r.stderr
        k = o.jobctl("kill", waiting)
        assert 0 == k.returncode, k.stderr
        assert "ABORTED" == o.state(waiting)["state"]
        assert 0 == o.jobctl("kill", busy).returncode
    finally:
        o.stop()
        for p in processes_with_arg(str(tmp_path)):
            p.kill()


def test_kill_while_supervisor_is_down_is_applied_when_it_starts(running):
    """With the daemon stopped, kill is queued (exit 3, clear message) and done at its next start."""
    sid = running.submit("secondsToWait=120")
    running.wait_state(sid, "RUNNING")
    wait_for(lambda: log_contains(running.stdout_log(sid), "waiting 120 s"), 10, what="program started")
    running.stop()
    r = running.jobctl("kill", sid)
    assert PENDING == r.returncode
    assert "supervisor is not running; the command is queued and will run when it starts" in r.stderr
    assert 1 == len(list(running.spool.commands.iterdir()))
    assert "RUNNING" == running.state(sid)["state"]  # the job outlives its supervisor
    running.start()
    running.wait_state(sid, "ABORTED")
    assert [] == list(running.spool.commands.iterdir())
    assert log_contains(running.stdout_log(sid), "aborted after")


def test_status_reports_the_daemon_and_counts(running):
    """`status` exits 0 with the daemon's pid while it runs, 3 with NOT RUNNING once it is stopped."""
    sid = running.submit("secondsToWait=1")
    running.wait_state(sid, "SUCCEEDED")
    r = running.jobctl("status")
    assert 0 == r.returncode
    assert f"pid {running.daemon.pid}" in r.stdout
    assert "SUCCEEDED 1" in r.stdout
    running.stop()
    down = running.jobctl("status")
    assert PENDING == down.returncode
    assert "NOT RUNNING" in down.stdout


def test_status_reports_a_hung_daemon(running):
    """A daemon that is alive but makes no progress (SIGSTOP) is reported HUNG with exit 1 once its
    heartbeat is older than 3 reconcile periods (at least 5 s)."""
    os.kill(running.daemon.pid, signal.SIGSTOP)
    try:
        r = wait_for(lambda: (lambda r: r if r.returncode != 0 else None)(running.jobctl("status")),
                     20, interval=0.5, what="status noticing the stopped daemon")
        assert FAILED == r.returncode
        assert f"HUNG, pid {running.daemon.pid}" in r.stdout and "hung" in r.stdout
        data = json.loads(running.jobctl("status", "--json").stdout)
        assert (True, True) == (data["supervisor"]["running"], data["supervisor"]["hung"])
    finally:
        os.kill(running.daemon.pid, signal.SIGCONT)
    wait_for(lambda: running.jobctl("status").returncode == 0, 15, interval=0.5, what="status healthy again")


# -- errors ---------------------------------------------------------------------------

def test_unknown_id_exits_1_with_a_message(ops):
    """An ID that names no job gives exit 1 and says so, for every command taking an ID."""
    for cmd in ("show", "kill", "restart", "logs"):
        r = ops.jobctl(cmd, "no-such-job")
        assert 1 == r.returncode, cmd
        assert "unknown serviceID 'no-such-job'" in r.stderr
        assert "Traceback" not in r.stderr


def test_malformed_id_is_a_usage_error(ops):
    """A path-like ID such as ../x is refused with exit 2 and the rule it breaks."""
    r = ops.jobctl("kill", "../x")
    assert 2 == r.returncode
    assert "serviceID '../x' is invalid" in r.stderr
    assert [] == list(ops.spool.commands.iterdir())


def test_bad_inputs_name_the_field(ops, capsys):
    """submit checks inputs against the definition and names the bad field."""
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "secondsToWait=soon"])
    assert "secondsToWait: must be an integer" in capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "secondsToWait=-5"])
    assert "secondsToWait: must be >= 0" in capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "colour=blue"])
    assert "colour: not an input" in capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "nosuchjob"])
    assert "unknown job 'nosuchjob'; known jobs: exit_with, flaky, tree, waiter" in capsys.readouterr().err
    assert [] == list(ops.spool.incoming.iterdir())


def test_submit_without_daemon_queues_the_spec(ops, capsys):
    """With no daemon, submit still drops the spec and the job is listed as SUBMITTED."""
    assert 0 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "--id", "early", "secondsToWait=1"])
    captured = capsys.readouterr()
    assert "early\n" == captured.out
    assert "supervisor is not running" in captured.err
    assert 0 == jobctl.main(["--env-file", str(ops.env), "list", "--json"])
    assert [("early", "SUBMITTED")] == [(j["service_id"], j["state"]) for j in json.loads(capsys.readouterr().out)]


def test_config_error_is_one_line(tmp_path):
    """A missing env file is reported in one line with exit 2, no traceback."""
    r = subprocess.run([sys.executable, "-m", "jobctl", "list"], cwd=ROOT, text=True, capture_output=True,
                       env={**os.environ, "ENV_FILE": str(tmp_path / "missing")}, timeout=30)
    assert 2 == r.returncode
    assert 1 == len(r.stderr.strip().splitlines())
    assert "configuration file not found" in r.stderr


def test_usage_error_is_one_line(capsys):
    """Bad arguments exit 2 with one line and a pointer to --help."""
    with pytest.raises(SystemExit) as e:
        jobctl.main(["kill"])
    assert 2 == e.value.code
    err = capsys.readouterr().err
    assert 1 == len(err.strip().splitlines())
    assert "--help" in err


def test_runtime_formatting():
    """Runtimes are shown as h:mm:ss."""
    assert ["-", "0:00:00", "0:01:05", "26:00:01"] == [hms(None), hms(0.4), hms(65), hms(93601)]

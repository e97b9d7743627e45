"""jobctl, the operator CLI: as a real subprocess against the real supervisor daemon and waiter program, and
in process (`jobctl.main`) over a spool whose supervisor is stepped by hand, for its rules."""
from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jobctl
from jobctl.context import PENDING
from jobctl.formatting import hms
from jobs.cli import FAILED
from jobs.definitions import load_definitions
from jobs.spool import Spool, parse_command_name
from supervisor.daemon import Supervisor
from test_submit import SoapStart
from test_supervisor_rules import FakeExecutor
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
    assert f"{sid}: ABORTED (stopped by an operator (jobctl, user " in r.stdout  # worded as `list` words it
    assert "stopped by an operator (jobctl, user " in running.jobctl("list", "--all").stdout
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
    narrow = running.jobctl("list", COLUMNS="130")
    line = next(x for x in narrow.stdout.splitlines() if x.startswith(sid))
    assert len(line) <= 130 and line.endswith("…")
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


@pytest.mark.fast
def test_bad_inputs_name_the_field(ops, capsys):
    """submit reads and checks inputs as the SOAP start does (jobs.submit) and names the bad field."""
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "secondsToWait=soon"])
    assert ("jobctl: invalid request: element 'secondsToWait': 'soon' is not a valid value of the atomic type "
            "'xs:integer'.\n") == capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "secondsToWait=-5"])
    assert "jobctl: invalid input secondsToWait: must be >= 0, got -5\n" == capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "waiter", "colour=blue"])
    assert "colour: not an input" in capsys.readouterr().err
    assert 2 == jobctl.main(["--env-file", str(ops.env), "submit", "nosuchjob"])
    assert "unknown job 'nosuchjob'; known jobs: exit_with, flaky, tree, waiter" in capsys.readouterr().err
    assert [] == list(ops.spool.incoming.iterdir())


@pytest.mark.fast
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


@pytest.mark.fast
def test_usage_error_is_one_line(capsys):
    """Bad arguments exit 2 with one line and a pointer to --help."""
    with pytest.raises(SystemExit) as e:
        jobctl.main(["kill"])
    assert 2 == e.value.code
    err = capsys.readouterr().err
    assert 1 == len(err.strip().splitlines())
    assert "--help" in err


@pytest.mark.fast
def test_runtime_formatting():
    """Runtimes are shown as h:mm:ss."""
    assert ["-", "0:00:00", "0:01:05", "26:00:01"] == [hms(None), hms(0.4), hms(65), hms(93601)]


# -- in process: jobctl.main over a spool whose supervisor is stepped by hand -----------------

class Stepped:
    """jobctl.main called in this process on a Stack's spool; the supervisor is step(now) with a fake executor."""

    def __init__(self, tmp: Path, capsys):
        self.stack = Stack(tmp)
        self.ex = FakeExecutor()
        self.sup = Supervisor(self.stack.cfg, load_definitions(self.stack.cfg.definitions_dir),
                              executors={"local": self.ex, "slurm": self.ex})
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """jobctl's exit code, stdout and stderr."""
        code = jobctl.main(["--env-file", str(self.stack.env), *args])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def step(self) -> None:
        self.sup.step(time.time())

    def rows(self) -> dict[str, dict]:
        code, out, err = self("list", "--all", "--json")
        assert (0, "") == (code, err)
        return {j["service_id"]: j for j in json.loads(out)}


@pytest.fixture
def stepped(tmp_path, capsys) -> Stepped:
    return Stepped(tmp_path, capsys)


@pytest.mark.fast
def test_list_and_show_follow_a_job_from_submitted_to_running(stepped):
    """`list` and `show` read the spool's index: SUBMITTED before the claim, then RUNNING with pid and progress."""
    code, out, err = stepped("submit", "waiter", "--id", "in-1", "secondsToWait=3")
    assert (0, "in-1\n") == (code, out)
    assert {"service_id": "in-1", "job": "waiter", "state": "SUBMITTED", "attempt": None, "pid": None,
            "runtime_seconds": None, "progress": None,
            "reason": "waiting for the supervisor to claim it", "cpu_seconds": None, "wall_seconds": None,
            "memory_peak_bytes": None} == stepped.rows()["in-1"]
    stepped.step()
    (stepped.stack.attempt_dir("in-1") / "work").mkdir(parents=True)  # the program's working directory
    (stepped.stack.attempt_dir("in-1") / "work" / "status.txt").write_text("42")
    row = stepped.rows()["in-1"]
    assert ("RUNNING", 1, stepped.ex.next_pid, 42.0) == (row["state"], row["attempt"], row["pid"], row["progress"])
    code, out, _ = stepped("list")
    assert ["SERVICE", "ID", "JOB", "STATE", "PID", "RUNTIME", "PROGRESS", "ATTEMPT", "CPU", "WALL", "MEM",
            "REASON"] == out.splitlines()[0].split()
    assert out.splitlines()[1].split()[:6] == ["in-1", "waiter", "RUNNING", str(stepped.ex.next_pid), "0:00:00", "42%"]
    code, out, _ = stepped("show", "in-1")
    assert 0 == code
    assert "inputs      secondsToWait=3" in out and "state       RUNNING" in out and "progress    42%" in out
    assert f"owner       jobctl:{getpass.getuser()} (project -)" in out
    code, out, _ = stepped("show", "in-1", "--json")
    data = json.loads(out)
    assert json.loads((stepped.stack.spool.run_dir("in-1") / "spec.json").read_text()) == data["spec"]
    assert ("RUNNING", str(stepped.stack.attempt_dir("in-1") / "stdout.log")) == (data["state"]["state"],
                                                                                 data["paths"]["stdout"])
    code, out, _ = stepped("status", "--json")
    assert {"RUNNING": 1} == json.loads(out)["counts"]


@pytest.mark.fast
def test_kill_is_queued_for_the_supervisor_and_shown_once_applied(stepped):
    """`kill` drops a command (exit 3 with the daemon down, 0 with --wait 0); the next steps end the job ABORTED."""
    stepped("submit", "waiter", "--id", "in-2", "secondsToWait=60")
    code, _, err = stepped("restart", "in-2")
    assert (1, "jobctl: in-2 is still SUBMITTED and has not run yet: nothing to restart\n") == (code, err)
    stepped.step()
    stepped.stack.spool.supervisor_file.unlink()  # the daemon is down
    code, _, err = stepped("kill", "in-2")
    assert 3 == code and "supervisor is not running; the command is queued and will run when it starts" in err
    assert [("in-2", "kill")] == [parse_command_name(p.name) for p in stepped.stack.spool.commands.iterdir()]
    assert "RUNNING" == stepped.rows()["in-2"]["state"]
    stepped.step()  # the daemon applies the command at its next pass
    assert [("in-2", 15)] == stepped.ex.signals
    assert "STOPPING" == stepped.rows()["in-2"]["state"]
    stepped.ex.exit("in-2", None, 15)
    stepped.step()
    row = stepped.rows()["in-2"]
    assert ("ABORTED", f"aborted by jobctl:{getpass.getuser()}") == (row["state"], row["reason"])
    assert stepped("list")[1].splitlines()[1].endswith(f"stopped by an operator (jobctl, user {getpass.getuser()})")
    code, _, err = stepped("kill", "in-2", "--wait", "0")
    assert (1, "jobctl: in-2 already ended (ABORTED): nothing to kill\n") == (code, err)
    stepped.sup.write_heartbeat(time.time())  # the daemon (this process) is running again
    code, out, _ = stepped("restart", "in-2", "--wait", "0")
    assert 0 == code and out.startswith("restart of in-2 queued (")


@pytest.mark.fast
@pytest.mark.parametrize("text", ["٣", "99999999999999999999"])
def test_submit_refuses_text_as_the_soap_start_refuses_it(stepped, tmp_path, text):
    """An Arabic-Indic digit and an integer out of range: exit 2 and the SOAP start's own faultstring, one line."""
    waiter = load_definitions(stepped.stack.cfg.definitions_dir)["waiter"]
    verdict, fault = SoapStart(waiter, Spool(tmp_path / "soap").ensure())({"secondsToWait": text})
    assert "refused" == verdict
    code, out, err = stepped("submit", "waiter", f"secondsToWait={text}")
    assert (2, "", f"jobctl: {fault}\n") == (code, out, err)
    assert [] == list(stepped.stack.spool.incoming.iterdir())

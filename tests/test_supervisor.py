"""The supervisor daemon as a real subprocess, driving real programs through the spool."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from jobs.spec import JobSpec
from tests.harness import ROOT, Stack, kill_leftovers, wait_for, write_env

PROGRAMS = ROOT / "tests" / "programs"


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.stop()
    kill_leftovers(tmp_path)  # never leave programs behind


def waiter_processes(stack: Stack) -> list[psutil.Process]:
    """The waiter programs themselves (not their shims) running on this stack's spool."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "wait_a_while.py" in cmd and "shim.py" not in cmd and (p.info["cwd"] or "").startswith(str(stack.spool.runs)):
            found.append(p)  # its files are named relative to its working directory, the attempt's work/
    return found


def test_full_lifecycle(stack):
    """A waiter job goes QUEUED -> RUNNING -> SUCCEEDED and leaves every file in its place."""
    stack.start()
    stack.submit("life-1", secondsToWait=2)
    running = stack.wait_state("life-1", "RUNNING", timeout=10)
    assert running["pid"] and running["attempt"] == 1
    done = stack.wait_state("life-1", "SUCCEEDED")
    assert done["exit_code"] == 0 and done["finished_at"]
    a = stack.attempt_dir("life-1")
    assert (a / "work" / "result.txt").read_text() == "FINISHED"
    assert (a / "work" / "status.txt").read_text() == "100"
    assert json.loads((a / "exit.json").read_text())["exit_code"] == 0
    assert "100% done" in (a / "stdout.log").read_text()
    assert not list(stack.spool.incoming.iterdir())
    assert stack.daemon.alive()


def test_parallel_limit_is_never_exceeded(stack, tmp_path):
    """20 jobs with a limit of 4 never run more than 4 at once, and all finish."""
    stack.env = write_env(tmp_path, DEFINITIONS_DIR=tmp_path / "definitions", MAX_PARALLEL_JOBS=4)
    stack.start()
    for i in range(20):
        stack.submit(f"par-{i:02d}", secondsToWait=1)
    peak = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peak = max(peak, len(waiter_processes(stack)))
        if all(stack.state(f"par-{i:02d}").get("state") == "SUCCEEDED" for i in range(20)):
            break
        time.sleep(0.05)
    states = [stack.state(f"par-{i:02d}") for i in range(20)]
    assert all(s["state"] == "SUCCEEDED" for s in states)
    assert 1 <= peak <= 4
    # the recorded intervals agree: at no start time were more than 4 running
    intervals = [(s["history"][0]["started_at"], s["history"][0]["finished_at"]) for s in states]
    for start, _ in intervals:
        assert sum(1 for s, f in intervals if s <= start < f) <= 4


def test_jobs_survive_supervisor_kill(stack):
    """kill -9 of the daemon: jobs keep running, are adopted once, and every exit code is right."""
    stack.start()
    stack.submit("surv-long", secondsToWait=4)
    stack.submit("surv-short", secondsToWait=1)
    stack.submit("surv-fail", "exit_with", seconds=1, code=3)
    for sid in ("surv-long", "surv-short", "surv-fail"):
        wait_for(lambda: stack.state(sid).get("pid"), 10, what=f"{sid} spawned")
    pids = {sid: stack.state(sid)["pid"] for sid in ("surv-long", "surv-short", "surv-fail")}
    stack.daemon.stop(signal.SIGKILL)
    time.sleep(2.0)  # surv-short and surv-fail end while no daemon runs
    assert stack.state("surv-short")["state"] == "RUNNING"  # nobody has looked yet
    assert len(waiter_processes(stack)) == 1
    stack.start()
    assert stack.wait_state("surv-short", "SUCCEEDED")["exit_code"] == 0
    failed = stack.wait_state("surv-fail", "FAILED")
    assert failed["exit_code"] == 3 and "exit code 3" in failed["reason"]
    assert stack.state("surv-long")["state"] == "RUNNING"
    assert stack.state("surv-long")["pid"] == pids["surv-long"]
    assert len(waiter_processes(stack)) == 1  # adopted, not started again
    done = stack.wait_state("surv-long", "SUCCEEDED")
    assert done["attempt"] == 1 and done["exit_code"] == 0


def test_an_exit_record_whose_rename_a_power_cut_took_is_taken_from_its_reserved_name(stack):
    """The shim fsyncs its exit record and the record's reserved name, not the rename to exit.json: after a
    power cut that took the rename, the next daemon puts the filled record in place (not "vanished")."""
    stack.start()
    stack.submit("cut-1", "exit_with", seconds=1, code=3)
    a = stack.attempt_dir("cut-1")
    wait_for(lambda: (a / "stdout.log").exists(), 10, what="cut-1's shim at work")  # it got its job
    shim = psutil.Process(stack.state("cut-1")["pid"])
    stack.daemon.stop(signal.SIGKILL)
    wait_for(lambda: not shim.is_running() or shim.status() == psutil.STATUS_ZOMBIE, 10, what="the shim's end")
    os.rename(a / "exit.json", a / ".exit.json.tmp")  # the rename the cut took
    stack.start()
    failed = stack.wait_state("cut-1", "FAILED")
    assert (3, "exit code 3") == (failed["exit_code"], failed["reason"])
    assert 3 == json.loads((a / "exit.json").read_text())["exit_code"]


def test_job_is_adopted_when_its_recorded_start_is_a_second_off(stack):
    """psutil's create time moves with /proc/stat's boot time (whole seconds, shifted by clock steps):
    a live job recorded a second off is still the same job for the next daemon, not a vanished one."""
    stack.start()
    stack.submit("skew-1", secondsToWait=4)
    wait_for(lambda: (stack.attempt_dir("skew-1") / "stdout.log").exists(), 10, what="skew-1 started")
    stack.daemon.stop(signal.SIGKILL)
    state_file = stack.spool.run_dir("skew-1") / "state.json"
    st = json.loads(state_file.read_text())
    st["create_time"] += 1.0
    state_file.write_text(json.dumps(st))
    stack.start()
    done = stack.wait_state("skew-1", "SUCCEEDED", "FAILED")
    assert (done["state"], done["attempt"], done["exit_code"]) == ("SUCCEEDED", 1, 0), done["reason"]


def test_crash_between_state_write_and_spawn_requeues(stack):
    """A RUNNING state without a pid and without a process (crash before spawn) is run, not lost."""
    stack.start()
    stack.submit("window-1", secondsToWait=0)
    stack.wait_state("window-1", "SUCCEEDED")
    stack.daemon.stop()
    state_file = stack.spool.run_dir("window-1") / "state.json"
    st = json.loads(state_file.read_text())
    st.update(state="RUNNING", pid=None, create_time=None, exit_code=None, finished_at=None, history=[])
    shutil.rmtree(stack.attempt_dir("window-1"))
    state_file.write_text(json.dumps(st))
    stack.start()
    done = stack.wait_state("window-1", "SUCCEEDED")
    assert done["attempt"] == 1 and done["exit_code"] == 0
    assert (stack.attempt_dir("window-1") / "work" / "result.txt").read_text() == "FINISHED"


def test_spare_shim_that_never_got_its_job_requeues(stack):
    """RUNNING with a recorded pid that is gone and an empty attempt (a spare never handed its job) runs again."""
    stack.start()
    stack.submit("spare-1", secondsToWait=0)
    stack.wait_state("spare-1", "SUCCEEDED")
    stack.daemon.stop()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state_file = stack.spool.run_dir("spare-1") / "state.json"
    st = json.loads(state_file.read_text())
    st.update(state="RUNNING", pid=gone.pid, create_time=1.0, exit_code=None, finished_at=None, history=[])
    shutil.rmtree(stack.attempt_dir("spare-1"))
    stack.attempt_dir("spare-1").mkdir(parents=True)
    state_file.write_text(json.dumps(st))
    stack.start()
    done = stack.wait_state("spare-1", "SUCCEEDED")
    assert done["attempt"] == 1 and done["exit_code"] == 0 and done["pid"] != gone.pid


def test_jobs_outlive_a_clean_supervisor_stop(stack):
    """SIGTERM stops the daemon cleanly and leaves running jobs running for the next one."""
    stack.start()
    stack.submit("term-1", secondsToWait=3)
    pid = stack.wait_state("term-1", "RUNNING")["pid"]
    assert stack.daemon.stop(signal.SIGTERM) == 0
    assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    stack.start()
    assert stack.wait_state("term-1", "SUCCEEDED")["exit_code"] == 0


def test_requeue_on_stop_reruns_jobs_after_restart(tmp_path):
    """SUPERVISOR_ON_STOP=requeue (containers): SIGTERM stops jobs gracefully as QUEUED, the next daemon reruns them."""
    s = Stack(tmp_path, SUPERVISOR_ON_STOP="requeue")
    try:
        s.start()
        s.submit("rq-1", secondsToWait=3)
        wait_for(lambda: s.state("rq-1").get("pid"), 10, what="rq-1 spawned")
        assert s.daemon.stop(signal.SIGTERM) == 0
        st = s.state("rq-1")
        assert (st["state"], st["attempt"]) == ("QUEUED", 2)
        assert "shutting down" in st["history"][0]["reason"]
        assert not waiter_processes(s)
        s.start()
        done = s.wait_state("rq-1", "SUCCEEDED")
        assert done["attempt"] == 2 and done["exit_code"] == 0
    finally:
        s.stop()


def test_abort_kills_the_grandchildren(stack):
    """kill sends TERM to the whole group and KILL after the grace period: the grandchild dies too."""
    stack.start()
    stack.submit("tree-1", "tree")
    stack.wait_state("tree-1", "RUNNING")
    pids_file = stack.attempt_dir("tree-1") / "work" / "pids.txt"
    wait_for(pids_file.exists, 10, what="tree pids")
    child, grandchild = map(int, pids_file.read_text().split())
    stack.spool.send_command("tree-1", "kill", origin="test")
    aborted = stack.wait_state("tree-1", "ABORTED", timeout=15)
    assert aborted["reason"] == "aborted by test"
    for pid in (child, grandchild):
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                 5, what=f"pid {pid} gone")


def test_abort_of_a_waiter_records_its_result(stack):
    """A waiter aborted mid-way writes its 'aborted after N s' result and ends ABORTED."""
    stack.start()
    stack.submit("ab-1", secondsToWait=30)
    stack.wait_state("ab-1", "RUNNING")
    result = stack.attempt_dir("ab-1") / "work" / "result.txt"
    wait_for(result.exists, 10, what="the waiter's UNSET result (written once its TERM handler is set)")
    time.sleep(1.2)
    stack.spool.send_command("ab-1", "kill", origin="operator")
    stack.wait_state("ab-1", "ABORTED")
    assert (stack.attempt_dir("ab-1") / "work" / "result.txt").read_text().startswith("aborted after")
    assert not waiter_processes(stack)


def test_kill_of_a_program_that_ignores_term_records_sigkill(tmp_path):
    """A program that ignores TERM is KILLed after its grace period: the state says signal 9 and killed."""
    stubborn = ('service = "Stubborn"\nnamespace = "stubborn.test"\nstart_method = "startStubborn"\n'
                'argv = ["/bin/sh", "-c", "trap \'\' TERM; echo started; sleep 300 & wait; wait"]\n'
                '[limits]\nabort_grace_seconds = 1\n')
    s = Stack(tmp_path, {"stubborn.toml": stubborn})
    try:
        s.start()
        s.submit("stub-1", "stubborn")
        s.wait_state("stub-1", "RUNNING")
        out = s.attempt_dir("stub-1") / "stdout.log"
        wait_for(lambda: out.exists() and "started" in out.read_text(), 10, what="the program's trap set")
        s.spool.send_command("stub-1", "kill", origin="operator")
        done = s.wait_state("stub-1", "ABORTED", timeout=15)
        assert (done["reason"], done["signal"], done["killed"]) == ("aborted by operator", signal.SIGKILL, True)
        assert done["history"][0]["killed"] is True
        assert "had to be killed (SIGKILL after 1 s)" in done["history"][0]["reason"]
    finally:
        s.stop()
        kill_leftovers(tmp_path)


def test_queued_job_can_be_killed_before_it_runs(stack, tmp_path):
    """A kill for a job still waiting for a slot ends it at once, without a process."""
    stack.env = write_env(tmp_path, DEFINITIONS_DIR=tmp_path / "definitions", MAX_PARALLEL_JOBS=1)
    stack.start()
    stack.submit("q-run", secondsToWait=5)
    stack.submit("q-wait", secondsToWait=5)
    stack.wait_state("q-run", "RUNNING")
    stack.wait_state("q-wait", "QUEUED")
    queued = lambda: json.loads(stack.spool.queue_file.read_text())["queued"]  # noqa: E731
    assert wait_for(lambda: queued() == ["q-wait"], 5, what="queue.json, written at the end of the pass")
    stack.spool.send_command("q-wait", "kill", origin="operator")
    st = stack.wait_state("q-wait", "ABORTED")
    assert st["pid"] is None and not stack.attempt_dir("q-wait").exists()


def test_timeout_fails_the_job(tmp_path):
    """A program running past its definition's maximum runtime is stopped and FAILED with reason timeout."""
    overtime = ((PROGRAMS / "exit_with.toml").read_text().replace("{here}", str(PROGRAMS))
                .replace("ExitWith", "Overtime").replace("exitwith.test", "overtime.test"))
    overtime = re.sub(r"(?m)^max_runtime_seconds = .*$", "max_runtime_seconds = 2", overtime)
    stack = Stack(tmp_path, {"overtime.toml": overtime})
    try:
        stack.start()
        stack.submit("slow-1", "overtime", seconds=30, code=0)
        st = stack.wait_state("slow-1", "FAILED", timeout=15)
        assert st["reason"] == "timeout: ran longer than 2 s"
        assert st["signal"] == signal.SIGTERM
    finally:
        stack.stop()
        kill_leftovers(tmp_path)


def test_restart_runs_a_new_attempt_and_keeps_old_logs(stack):
    """restart stops a running job and runs it again as attempt 2; attempt 1's logs stay."""
    stack.start()
    stack.submit("re-1", secondsToWait=30)
    stack.wait_state("re-1", "RUNNING")
    out = stack.attempt_dir("re-1") / "stdout.log"  # opened by the shim just after RUNNING is saved
    wait_for(lambda: out.exists() and out.read_text().strip(), 5, what="output")
    stack.spool.send_command("re-1", "restart", origin="operator")
    wait_for(lambda: stack.state("re-1").get("attempt") == 2 and stack.state("re-1")["state"] == "RUNNING",
             15, what="attempt 2 running")
    assert "aborted after" in (stack.attempt_dir("re-1", 1) / "work" / "result.txt").read_text()
    assert (stack.attempt_dir("re-1", 1) / "stdout.log").read_text()
    hist = stack.state("re-1")["history"]
    assert hist[0]["attempt"] == 1 and "restarted by operator" in hist[0]["reason"]
    # RUNNING is durable before the shim has started the program: wait for it; never two at once
    wait_for(lambda: len(waiter_processes(stack)) == 1, 10, what="attempt 2's waiter")
    stack.spool.send_command("re-1", "kill", origin="operator")
    stack.wait_state("re-1", "ABORTED")


def test_restart_of_a_finished_job(stack):
    """A finished job restarted by the operator runs again from the same spec as attempt 2."""
    stack.start()
    stack.submit("re-2", secondsToWait=0)
    stack.wait_state("re-2", "SUCCEEDED")
    stack.spool.send_command("re-2", "restart", origin="operator")
    wait_for(lambda: stack.state("re-2").get("attempt") == 2 and stack.state("re-2")["state"] == "SUCCEEDED",
             15, what="attempt 2 done")
    assert (stack.attempt_dir("re-2", 2) / "work" / "result.txt").read_text() == "FINISHED"
    assert (stack.attempt_dir("re-2", 1) / "work" / "result.txt").read_text() == "FINISHED"


def test_retries_record_every_attempt(stack):
    """A definition with retries runs a failing program count+1 times and names every attempt."""
    stack.start()
    stack.submit("flaky-1", "flaky", code=4)
    st = stack.wait_state("flaky-1", "FAILED", timeout=20)
    assert st["attempt"] == 3 and len(st["history"]) == 3
    assert all(h["exit_code"] == 4 for h in st["history"])
    assert "#1 exit code 4" in st["reason"] and "#3 exit code 4" in st["reason"]


def test_malformed_specs_are_rejected_and_the_daemon_lives(stack):
    """Garbage, bad fields, bad inputs and path-traversal serviceIDs go to rejected/ with a reason."""
    stack.start()
    bad = {
        "garbage.json": b"{not json",
        "huge.json": b"[" + b"1," * 70000 + b"1]",
        "noid.json": json.dumps({"schema_version": 1, "job": "waiter", "inputs": {}, "submitted_at": 1e9}).encode(),
        "badinput.json": JobSpec("badinput", "waiter", {"secondsToWait": -5}).to_json(),
        "unknownjob.json": JobSpec("unknownjob", "nope", {}).to_json(),
        "mismatch.json": JobSpec("other", "waiter", {}).to_json(),
        "..%2Fescape.json": JobSpec("x", "waiter", {}).to_json(),
    }
    traversal = json.loads(JobSpec("placeholder", "waiter", {}).to_json())
    traversal["service_id"] = "../../etc/evil"
    bad["evil.json"] = json.dumps(traversal).encode()
    for name, data in bad.items():
        (stack.spool.tmp / name).write_bytes(data)
        os.replace(stack.spool.tmp / name, stack.spool.incoming / name)
    wait_for(lambda: not list(stack.spool.incoming.iterdir()), 10, what="incoming drained")
    reasons = [p.read_text() for p in stack.spool.rejected.glob("*.reason")]
    assert len(reasons) == len(bad)
    assert any("serviceID" in r and "invalid" in r for r in reasons)
    assert any("secondsToWait: must be >= 0" in r for r in reasons)
    assert not list(stack.spool.runs.iterdir())
    assert not (stack.tmp / "etc").exists()
    assert stack.daemon.alive()
    stack.submit("after-bad", secondsToWait=0)
    stack.wait_state("after-bad", "SUCCEEDED")


def test_spec_fields_of_the_wrong_type_are_rejected(stack):
    """owner null, inputs null, schema_version true: each field is type-checked, nothing runs."""
    stack.start()
    wrong = {"owner-null": {"owner": None}, "inputs-null": {"inputs": None},
             "version-true": {"schema_version": True}, "version-float": {"schema_version": 1.0}}
    for sid, fields in wrong.items():
        spec = {**json.loads(JobSpec(sid, "waiter", {"secondsToWait": 0}).to_json()), **fields}
        (stack.spool.tmp / sid).write_text(json.dumps(spec))
        os.replace(stack.spool.tmp / sid, stack.spool.incoming_path(sid))
    wait_for(lambda: not list(stack.spool.incoming.iterdir()), 10, what="incoming drained")
    reasons = {r.name.split("-", 1)[1]: r.read_text() for r in stack.spool.rejected.glob("*.reason")}
    assert sorted(reasons) == sorted(f"{sid}.json.reason" for sid in wrong)
    assert "owner must be an object" in reasons["owner-null.json.reason"]
    assert "inputs must be an object" in reasons["inputs-null.json.reason"]
    assert "schema_version" in reasons["version-true.json.reason"] + reasons["version-float.json.reason"]
    assert not list(stack.spool.runs.iterdir())


def test_odd_files_in_incoming_and_commands_are_rejected_unopened(stack, tmp_path):
    """FIFOs, symlinks (to files outside the spool) and directories in incoming/ and commands/
    go to rejected/ with what they were, unopened; the daemon keeps claiming and heartbeating."""
    stack.start()
    sp, outside = stack.spool, tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"service_id": "after-odd", "verb": "kill"}))
    os.utime(secret, (time.time() - 1000, secret.stat().st_mtime))  # relatime: any read would move atime
    atime = secret.stat().st_atime_ns
    os.mkfifo(outside / "fifo")
    for d in (sp.commands, sp.incoming):
        os.mkfifo(d / "1-odd-kill.json")
        os.symlink(secret, d / "2-odd-kill.json")
        os.symlink(outside / "fifo", d / "3-odd-kill.json")
        (d / "4-odd-kill.json").mkdir()
    time.sleep(0.5)
    beat = sp.read_supervisor()["heartbeat"]
    stack.submit("after-odd", secondsToWait=0)
    stack.wait_state("after-odd", "SUCCEEDED", timeout=15)
    wait_for(lambda: sp.read_supervisor()["heartbeat"] != beat, 10, what="a new heartbeat")
    wait_for(lambda: not list(sp.commands.iterdir()) and not list(sp.incoming.iterdir()), 10, what="drained")
    reasons = sorted(r.name.split("-", 1)[1] + " " + r.read_text().strip() for r in sp.rejected.glob("*.reason"))
    what = ["FIFO", "symlink", "symlink", "directory"]
    assert reasons == sorted(f"{i}-odd-kill.json.reason {i}-odd-kill.json: not a regular file: {w}"
                             for _ in range(2) for i, w in enumerate(what, 1))
    assert secret.stat().st_atime_ns == atime  # the symlinks' target was never read
    assert os.path.islink(next(sp.rejected.glob("*-2-odd-kill.json")))
    assert stack.state("after-odd")["state"] == "SUCCEEDED" and stack.daemon.alive()


def test_second_spec_for_a_known_service_id_starts_nothing(stack):
    """A different spec for a serviceID that already has a run is rejected as a duplicate."""
    stack.start()
    stack.submit("dup-1", secondsToWait=1)
    stack.wait_state("dup-1", "RUNNING", "SUCCEEDED")
    incoming = stack.spool.incoming_path("dup-1")  # removed once the claim is durable, just after the start
    wait_for(lambda: not incoming.exists(), 5, what="the claimed spec out of incoming/")
    other = JobSpec("dup-1", "waiter", {"secondsToWait": 7}).to_json()
    assert stack.spool.create_atomic(stack.spool.incoming_path("dup-1"), other)
    wait_for(lambda: list(stack.spool.rejected.glob("*.reason")), 10, what="duplicate rejected")
    assert "duplicate" in next(stack.spool.rejected.glob("*.reason")).read_text()
    assert stack.wait_state("dup-1", "SUCCEEDED")["attempt"] == 1


def test_a_claim_torn_by_a_power_cut_is_claimed_again(stack):
    """The claim is fsynced just after the start: a power cut before that may leave the run directory with
    empty files while the spec is still in incoming/. The spec is claimed again; nothing is rejected."""
    run = stack.spool.runs / "torn-1"
    (run / "attempts").mkdir(parents=True)
    (run / "spec.json").write_bytes(b"")
    (run / "state.json").write_bytes(b"")
    spec = JobSpec("torn-1", "waiter", {"secondsToWait": 0}).to_json()
    assert stack.spool.create_atomic(stack.spool.incoming_path("torn-1"), spec)  # as the façade had dropped it
    stack.start()
    assert stack.wait_state("torn-1", "SUCCEEDED")["attempt"] == 1
    assert not list(stack.spool.rejected.iterdir())
    assert len([p for p in stack.spool.tmp.iterdir() if p.name.startswith("torn-torn-1-")]) == 1  # swept later


def test_spec_dropped_without_observer_is_found_by_reconcile(tmp_path):
    """With no watchdog observer, the periodic reconcile still picks a spec up."""
    s = Stack(tmp_path, SUPERVISOR_WATCH="false", RECONCILE_SECONDS="1")
    try:
        s.start()
        time.sleep(0.3)
        s.submit("quiet-1", secondsToWait=0)
        s.wait_state("quiet-1", "SUCCEEDED", timeout=10)
    finally:
        s.stop()


def test_spec_written_while_daemon_is_down_runs_at_start(stack):
    """Specs and commands written while no daemon runs wait in the spool and run at start-up."""
    stack.submit("early-1", secondsToWait=0)
    stack.submit("early-2", secondsToWait=30)
    stack.start()
    stack.wait_state("early-1", "SUCCEEDED")
    stack.wait_state("early-2", "RUNNING")
    stack.daemon.stop()
    stack.spool.send_command("early-2", "kill", origin="operator")
    stack.start()
    stack.wait_state("early-2", "ABORTED")


def test_two_hundred_specs_at_once_all_run(tmp_path):
    """200 specs dropped at once are all claimed and all finish."""
    s = Stack(tmp_path, MAX_PARALLEL_JOBS="16")
    try:
        s.start()
        for i in range(200):
            s.submit(f"burst-{i:03d}", secondsToWait=0)
        wait_for(lambda: all(s.state(f"burst-{i:03d}").get("state") == "SUCCEEDED" for i in range(200)),
                 120, interval=0.5, what="200 jobs done")
        assert len(list(s.spool.runs.iterdir())) == 200
        assert not list(s.spool.rejected.iterdir())
    finally:
        s.stop()


def test_retention_removes_old_finished_runs(tmp_path):
    """Finished runs older than RETENTION_DAYS are deleted; running ones are not."""
    s = Stack(tmp_path, RETENTION_DAYS="0.00002")  # about 1.7 s
    try:
        s.start()
        s.submit("old-1", secondsToWait=0)
        s.submit("live-1", secondsToWait=8)
        s.wait_state("old-1", "SUCCEEDED")
        wait_for(lambda: not s.spool.run_dir("old-1").exists(), 10, what="old run removed")
        assert s.state("live-1")["state"] == "RUNNING"
    finally:
        s.stop()


def test_bad_definition_stops_start_up_naming_file_and_field(stack):
    """A definition with a wrong field type stops the daemon with a message naming the file and field."""
    bad = stack.env.parent / "definitions" / "broken.toml"
    bad.write_text('service = "B"\nnamespace = "b"\nstart_method = "startB"\nargv = ["x"]\n'
                   '[inputs.n]\ntype = "integer"\nmin = 0\nmax = "ten"\n')
    proc = subprocess.run([sys.executable, "-m", "supervisor.daemon"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ENV_FILE": str(stack.env)}, timeout=30)
    assert proc.returncode == 2
    assert "broken.toml: inputs.n.max: must be a number, got str" in proc.stderr


def test_second_daemon_on_the_same_spool_refuses(stack):
    """Only one daemon may own a spool; a second one exits with a clear message."""
    stack.start()
    proc = subprocess.run([sys.executable, "-m", "supervisor.daemon"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ENV_FILE": str(stack.env)}, timeout=30)
    assert proc.returncode == 2 and "another supervisor already runs" in proc.stderr
    assert stack.daemon.alive()


def test_logs_are_json_lines_with_service_id(stack):
    """Every log line is one JSON event; job events carry the serviceID."""
    stack.start()
    stack.submit("log-1", secondsToWait=0)
    stack.wait_state("log-1", "SUCCEEDED")
    time.sleep(0.3)
    events = [json.loads(line) for line in stack.daemon.output().splitlines() if line.strip()]
    mine = [e for e in events if e.get("service_id") == "log-1"]
    assert {"job_queued", "job_started", "job_finished"} <= {e["event"] for e in mine}


def test_help_prints_usage_and_starts_nothing(stack):
    """`spool-supervisor --help` prints its usage and exits 0 instead of starting a daemon on the spool."""
    proc = subprocess.run([sys.executable, "-m", "supervisor.daemon", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "ENV_FILE": str(stack.env)}, timeout=30)
    assert (0, "") == (proc.returncode, proc.stderr), proc.stderr
    assert proc.stdout.startswith("usage: spool-supervisor") and "ENV_FILE" in proc.stdout, proc.stdout
    assert not (stack.spool.root / "supervisor.lock").exists()


def test_a_definition_on_slurm_without_slurm_stops_start_up_naming_it(stack, tmp_path):
    """A definition with executor = "slurm" under EXECUTOR=local is checked at start-up: no sbatch, no daemon."""
    (stack.env.parent / "definitions" / "on_slurm.toml").write_text(
        'service = "OnSlurm"\nnamespace = "s"\nstart_method = "startS"\nargv = ["true"]\nexecutor = "slurm"\n')
    empty = tmp_path / "no-slurm-here"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "supervisor.daemon"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ENV_FILE": str(stack.env), "EXECUTOR": "local",
                               "SLURM_BIN_DIR": str(empty)}, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert 'on_slurm.toml: executor = "slurm", but Slurm cannot be used here: sbatch' in proc.stderr, proc.stderr

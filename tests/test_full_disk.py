"""A full or read-only spool: clear faults, no lost exit status, no dead daemon, recovery by itself.

Why: a spool on a small disk fills up. Then the façade must say plainly that
it cannot take work now (not "internal error"), a job that ends meanwhile
must keep its exit status, and the supervisor must keep its jobs running and
carry on once there is space again, without anyone restarting it. The spool
here is a real 2 MB tmpfs, filled with a real file.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from facade_harness import CLIENTS, Soap, definitions_dir, devauth, make_stack, new_sid  # noqa: F401
from harness import wait_for

SLEEP_TOML = """\
service = "Sleep"
namespace = "sleep.test"
start_method = "startSleep"
argv = ["sleep", "{input.seconds}"]   # writes nothing: its own success does not need the disk

[inputs.seconds]
type = "integer"
default = 1
min = 0
max = 60
"""
UNAVAILABLE = "Server.ServiceUnavailable"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small(tmp_path, devauth):  # noqa: F811
    """The whole stack, one job slot, on a spool that is a 2 MB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the spool needs root")
    spool = tmp_path / "spool"
    spool.mkdir()
    mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool))
    stack = None
    try:
        defs = definitions_dir(tmp_path / "with-sleep")  # make_stack makes its own beside it
        (defs / "sleep.toml").write_text(SLEEP_TOML)
        stack = make_stack(tmp_path, devauth, MAX_PARALLEL_JOBS="1", DEFINITIONS_DIR=str(defs))
        yield stack
    finally:
        if stack is not None:
            stack.stop()
        for p in psutil.process_iter(["cwd"]):  # programs left by a failed test run in their run directory
            if (p.info["cwd"] or "").startswith(str(spool)):
                try:
                    p.kill()
                except psutil.Error:
                    pass  # it ended meanwhile
        while subprocess.run(["umount", str(spool)], capture_output=True).returncode == 0:
            pass  # the read-only bind mount (if any), then the tmpfs
        if os.path.ismount(spool):
            subprocess.run(["umount", "-l", str(spool)], check=True)


def fill(spool) -> None:
    """Take every free block of the spool's filesystem."""
    fd = os.open(spool / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    assert os.statvfs(spool).f_bavail == 0


def pause_idle(pid: int, spool) -> None:
    """SIGSTOP the daemon at a moment it has nothing to free: no staged file in tmp/, no claimed spec
    left in incoming/ (removed once the claim is fsynced, at the end of a pass).

    Continued after the disk is full, a daemon stopped with either would free
    a block (the spec, or the older file a staged one replaces), and the
    façade's next start would fit: a race of the test, not of the product
    (CI saw it once in about fifteen runs).
    """
    def busy() -> list[str]:
        return os.listdir(spool / "tmp") + os.listdir(spool / "incoming")

    for _ in range(2000):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 5, what="the daemon to stop")
        if not busy():
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"the daemon never settled: {busy()}")


def events(stack, name: str) -> list[dict]:
    """The supervisor's log events of this name (which it must have lived to write)."""
    assert stack.supervisor.alive(), f"the supervisor died:\n{stack.supervisor.output()[-3000:]}"
    found = []
    for line in stack.supervisor.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            found.append(event)
    return found


def test_a_full_spool_refuses_work_clearly_keeps_exit_status_and_recovers_by_itself(small):
    s = small
    waiter, sleeper = Soap(s.wsdl), Soap(s.url("Sleep") + "?wsdl")
    token, extra = s.token(), s.extra()
    ends_full, queued, unclaimed, refused = (new_sid(p) for p in ("ends", "queued", "unclaimed", "refused"))
    sleeper.call("zeep", "startSleep", ends_full, token, extra, 3)  # ends while the disk is full
    waiter.call("zeep", "startWaiter", queued, token, extra, 1)  # waits for the one slot meanwhile
    s.wait_state(ends_full, {"RUNNING"})
    s.wait_state(queued, {"QUEUED"})
    wait_for(lambda: s.attempt_file(ends_full, "stdout.log").exists(), 30, what="the shim of the running job")
    daemon = s.supervisor.pid
    pause_idle(daemon, s.spool)  # so that a spec is still in incoming/ when the disk fills up
    try:
        waiter.call("zeep", "startWaiter", unclaimed, token, extra, 1)
        fill(s.spool)
    finally:
        os.kill(daemon, signal.SIGCONT)

    # The façade: a distinct, declared fault for what cannot be written; a poll still answers.
    for kind in CLIENTS:
        f = waiter.fault(kind, "startWaiter", refused, token, extra, 1)
        assert UNAVAILABLE in f.code and "ENOSPC" in f.message, (kind, f)
        f = waiter.fault(kind, "notifyService", queued, token, "hello")
        assert UNAVAILABLE in f.code, (kind, f)
        f = waiter.fault(kind, "abortService", queued, token)
        assert UNAVAILABLE in f.code, (kind, f)
    page = base64.b64decode(waiter.call("zeep", "getServiceStatus", queued, token).status_base64).decode()
    assert "<html" in page.lower()  # its hint file (facade.json) could not be written: no matter
    assert not (s.spool / "runs" / refused).exists() and not (s.spool / "incoming" / f"{refused}.json").exists()

    # The job that ended meanwhile kept its exit status; the daemon lives and started nothing half-way.
    exit_file = s.attempt_file(ends_full, "exit.json")
    wait_for(exit_file.exists, 15, what="the exit record of the job that ended on a full disk")
    assert json.loads(exit_file.read_text())["exit_code"] == 0
    refusals = wait_for(lambda: [e for e in events(s, "write_refused") if e.get("service_id") == ends_full],
                        10, what="the supervisor to log the refused state write")
    assert refusals[0]["errno"] == "ENOSPC" and refusals[0]["level"] == "error"
    wait_for(lambda: any(e.get("service_id") == queued for e in events(s, "write_refused")), 10,
             what="the supervisor to try to launch the queued job")
    assert s.supervisor.alive(), s.supervisor.output()[-3000:]
    assert (s.spool / "incoming" / f"{unclaimed}.json").exists()  # its claim is retried, not half-done
    assert s.state(queued)["state"] == "QUEUED"
    assert not s.attempt_file(queued, "stdout.log").exists()  # RUNNING could not be written: not started

    # Space again: everything catches up, without restarting anything.
    (s.spool / "filler").unlink()
    assert s.wait_state(ends_full, {"SUCCEEDED", "FAILED"}, 15)["state"] == "SUCCEEDED"
    waiter.call("suds", "startWaiter", refused, token, extra, 1)
    for sid in (queued, unclaimed, refused):
        assert s.wait_state(sid, {"SUCCEEDED", "FAILED", "ABORTED"}, 30)["state"] == "SUCCEEDED", sid
    assert s.supervisor.alive() and s.supervisor.pid == daemon
    assert events(s, "write_recovered")
    wait_for(lambda: not os.listdir(s.spool / "tmp"), 10, what="tmp/ free of staging leftovers")


def test_a_read_only_spool_refuses_work_clearly_and_the_daemon_carries_on(small):
    s = small
    waiter = Soap(s.wsdl)
    token, extra = s.token(), s.extra()
    sid = new_sid("ro")
    daemon = s.supervisor.pid
    # A read-only bind mount over the spool: the files the processes hold open stay writable,
    # every new write through the spool's path gets EROFS.
    mount("--bind", str(s.spool), str(s.spool))
    mount("-o", "remount,ro,bind", str(s.spool))
    for kind in CLIENTS:
        f = waiter.fault(kind, "startWaiter", sid, token, extra, 1)
        assert UNAVAILABLE in f.code and "EROFS" in f.message, (kind, f)
    wait_for(lambda: any(e.get("errno") == "EROFS" for e in events(s, "write_refused")), 10,
             what="the supervisor to log a refused write")
    assert s.supervisor.alive(), s.supervisor.output()[-3000:]
    subprocess.run(["umount", str(s.spool)], check=True)  # writable again
    waiter.call("zeep", "startWaiter", sid, token, extra, 1)
    assert s.wait_state(sid, {"SUCCEEDED", "FAILED", "ABORTED"}, 30)["state"] == "SUCCEEDED"
    assert s.supervisor.alive() and s.supervisor.pid == daemon


def test_an_exit_status_staged_while_the_spool_is_read_only_is_recorded_once_it_is_writable(small):
    """A job that ends while the spool is read-only keeps its exit status: the shim's staged
    record is put in place once the spool takes writes, never "vanished"."""
    s = small
    sleeper = Soap(s.url("Sleep") + "?wsdl")
    sid = new_sid("staged")
    sleeper.call("zeep", "startSleep", sid, s.token(), s.extra(), 2)
    s.wait_state(sid, {"RUNNING"})
    staged = s.attempt_file(sid, ".exit.json.tmp")
    wait_for(staged.exists, 30, what="the shim to reserve its exit record")
    mount("--bind", str(s.spool), str(s.spool))
    mount("-o", "remount,ro,bind", str(s.spool))
    wait_for(lambda: staged.read_bytes().startswith(b"{"), 15, what="the shim to fill its staged exit record")
    assert not s.attempt_file(sid, "exit.json").exists()  # its rename was refused (EROFS)
    shim = s.state(sid)["pid"]
    wait_for(lambda: not psutil.pid_exists(shim), 10, what="the supervisor to reap the shim")  # and look at it
    wait_for(lambda: [e for e in events(s, "exit_record_staged") if e.get("service_id") == sid], 10,
             what="the supervisor to say the exit record waits")
    subprocess.run(["umount", str(s.spool)], check=True)  # writable again
    state = s.wait_state(sid, {"SUCCEEDED", "FAILED", "ABORTED"}, 30)
    assert ("SUCCEEDED", 0) == (state["state"], state["exit_code"]), state
    assert json.loads(s.attempt_file(sid, "exit.json").read_text())["exit_code"] == 0
    assert s.supervisor.alive(), s.supervisor.output()[-3000:]

"""The supervisor container's main process (under tini): runs the daemon and restarts it in place.

Jobs are processes of the supervisor container, so they live exactly as long
as the container does; the daemon is only their caretaker. The keeper
separates the two lifetimes:

* SIGHUP (`docker compose kill -s HUP supervisor`): restart the daemon. It is
  sent SIGHUP, stops cleanly leaving the jobs running, and a new daemon
  starts and adopts them (pid + create-time, as after any restart).
* The daemon ends by itself: a configuration error (exit 2) ends the keeper
  too, so the container fails visibly; any other exit (a crash, `kill -9`) is
  followed by a new daemon after a short, growing delay, and the jobs are
  adopted as above.
* SIGTERM or SIGINT (`docker stop`): the container is going away and its jobs
  cannot outlive it (runc kills its whole cgroup). compose sets
  SUPERVISOR_ON_STOP=requeue, so the daemon itself stops every running job
  through its restart path (TERM, KILL after the definition's grace period)
  and records it QUEUED as a new attempt; the daemon in the container started
  again reruns it. Whatever is still left when the daemon has exited gets
  SIGTERM and, after STOP_JOBS_GRACE_SECONDS, SIGKILL (a safety net).

Standard library only; exits 0 after a requested stop.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

DAEMON = [sys.executable, "-m", "supervisor.daemon"]
CONFIG_ERROR = 2          # the daemon's exit status for a bad configuration or definition
DAEMON_STOP_TIMEOUT = 30  # seconds between SIGTERM and SIGKILL for the daemon itself
BACKOFF_MAX = 30.0
WAIT_TICK = 0.2


def log(event: str, **fields) -> None:
    """One line on stderr, like the daemon's JSON events."""
    parts = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"keeper: {event}{' ' + parts if parts else ''}", file=sys.stderr, flush=True)


def other_processes() -> list[int]:
    """Every process in this container except tini (PID 1) and the keeper: the jobs, once the daemon is gone."""
    me = os.getpid()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, me):
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in (b"Z", b"X"):  # zombies are tini's to reap
                pids.append(int(name))
    return pids


class Keeper:
    def __init__(self, grace: float):
        self.grace = grace
        self.stop_requested = False
        self.restart_requested = False
        self.daemon: subprocess.Popen | None = None

    def on_signal(self, signum, frame) -> None:
        """Only records what was asked; wait_daemon() passes SIGTERM on within WAIT_TICK."""
        if signum == signal.SIGHUP:
            self.restart_requested = True
        else:
            self.stop_requested = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        backoff = 1.0
        while not self.stop_requested:
            self.restart_requested = False  # a new daemon is what a restart asks for
            started = time.monotonic()
            self.daemon = subprocess.Popen(DAEMON)
            log("daemon_started", pid=self.daemon.pid)
            code = self.wait_daemon()
            log("daemon_exited", pid=self.daemon.pid, status=code)
            if self.stop_requested:
                break
            if self.restart_requested:
                backoff = 1.0
                continue
            if code == CONFIG_ERROR:
                log("daemon_config_error", hint="fix the configuration; the container stops")
                return CONFIG_ERROR
            if time.monotonic() - started > 60:
                backoff = 1.0
            log("daemon_restart", delay=backoff, jobs_left_running=len(other_processes()))
            self.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.stop_jobs()
        return 0

    def wait_daemon(self) -> int:
        """Wait for the daemon: pass a requested stop or restart on as SIGTERM; KILL it if it hangs."""
        assert self.daemon is not None
        asked = None
        while True:
            try:
                return self.daemon.wait(timeout=WAIT_TICK)
            except subprocess.TimeoutExpired:
                pass
            if self.stop_requested or self.restart_requested:
                if asked is None:
                    asked = time.monotonic()
                    # HUP: stop but leave the jobs running for the next daemon; TERM: SUPERVISOR_ON_STOP decides
                    self.daemon.send_signal(signal.SIGHUP if self.restart_requested and not self.stop_requested
                                            else signal.SIGTERM)
                elif time.monotonic() - asked > DAEMON_STOP_TIMEOUT:
                    log("daemon_kill", pid=self.daemon.pid, reason=f"no exit {DAEMON_STOP_TIMEOUT} s after SIGTERM")
                    self.daemon.kill()

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (self.stop_requested or self.restart_requested):
            time.sleep(0.2)

    def stop_jobs(self) -> None:
        """The container stops: TERM what is left (the jobs), then KILL after the grace period."""
        left = other_processes()
        if not left:
            log("stopped", jobs_stopped=0)
            return
        log("stopping_jobs", processes=len(left), grace_seconds=self.grace)
        os.kill(-1, signal.SIGTERM)  # every process we may signal but tini and ourselves
        deadline = time.monotonic() + self.grace
        while other_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        if other_processes():
            log("killing_jobs", processes=len(other_processes()))
            os.kill(-1, signal.SIGKILL)
        log("stopped", jobs_stopped=len(left))


def main() -> int:
    try:
        grace = float(os.environ.get("STOP_JOBS_GRACE_SECONDS", "5"))
    except ValueError:
        grace = -1
    if not 0 <= grace <= 3600:
        print("keeper: STOP_JOBS_GRACE_SECONDS must be a number of seconds in [0, 3600]", file=sys.stderr)
        return CONFIG_ERROR
    return Keeper(grace).run()


if __name__ == "__main__":
    sys.exit(main())

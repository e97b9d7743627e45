"""The local executor: the supervisor's one seam to this machine's processes."""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from .executor import ExitRecord, read_exit

if TYPE_CHECKING:
    from .daemon import Job

SHIM = str(Path(__file__).with_name("shim.py"))


@dataclass(frozen=True)
class Handle:
    """A process identity that pid reuse cannot fake: pid plus its start time."""
    pid: int
    create_time: float
    own_child: bool  # spawned by this daemon instance: SIGCHLD tells us when it ends


def shim_argv(attempt_dir: Path, argv: list[str]) -> list[str]:
    return [sys.executable, "-S", SHIM, str(attempt_dir), "--", *argv]


class LocalExecutor:
    """Runs each job's shim as leader of a new session on this machine."""

    name = "local"

    def __init__(self):
        self.handles: dict[str, Handle] = {}

    def start(self, job: "Job", argv: list[str], env: dict[str, str]) -> None:
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        pid = os.posix_spawn(sys.executable, shim_argv(job.attempt_dir, argv), env, setsid=True, file_actions=quiet,
                             setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD))
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:  # already gone: its exit file (or the lack of one) tells
            create_time = 0.0
        self.handles[job.sid] = Handle(pid, create_time, True)
        job.rs.pid, job.rs.create_time = pid, create_time

    def adopt(self, job: "Job") -> bool:
        rs = job.rs
        if rs.pid is None:  # crashed between writing RUNNING and recording the pid
            found = self._find_shim(job.attempt_dir)
            if found is None:
                return read_exit(job.attempt_dir) is not None
            rs.pid, rs.create_time = found.pid, found.create_time
        self.handles[job.sid] = Handle(rs.pid, rs.create_time or 0.0, False)
        return True

    def ended(self, jobs: list["Job"], full: bool) -> list[tuple["Job", ExitRecord | None]]:
        reaped = set(self._reap())
        done = []
        for job in jobs:
            h = self.handles.get(job.sid)
            if h is None:
                done.append((job, read_exit(job.attempt_dir)))
                continue
            if h.own_child and h.pid not in reaped and not full:
                continue  # our own child: SIGCHLD + reap tell us when it ends
            rec = read_exit(job.attempt_dir)
            if rec is None and (h.pid in reaped or (full and not self._alive(h))):
                rec = read_exit(job.attempt_dir)  # it may have written the file just after our first look
                done.append((job, rec))
            elif rec is not None:
                done.append((job, rec))
        return done

    def signal(self, job: "Job", sig: int) -> None:
        h = self.handles.get(job.sid)
        if h is not None:
            try:
                os.killpg(h.pid, sig)  # the shim leads the group: pgid == shim pid
            except (ProcessLookupError, PermissionError):
                pass

    def forget(self, job: "Job") -> None:
        self.signal(job, signal.SIGKILL)  # leftovers of the job's group die with it
        self.handles.pop(job.sid, None)

    # -- OS details ----------------------------------------------------------
    @staticmethod
    def _alive(h: Handle) -> bool:
        """True if this exact process (not a reused pid) still runs and is not a zombie."""
        try:
            p = psutil.Process(h.pid)
            return abs(p.create_time() - h.create_time) < 0.05 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    @staticmethod
    def _reap() -> list[int]:
        """Collect exited children so they do not linger as zombies."""
        done = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return done
            if pid == 0:
                return done
            done.append(pid)

    @staticmethod
    def _find_shim(attempt_dir: Path) -> Handle | None:
        target = str(attempt_dir)
        for p in psutil.process_iter(["cmdline", "create_time", "status"]):
            cmd = p.info["cmdline"] or []
            if len(cmd) > 4 and cmd[2] == SHIM and cmd[3] == target and p.info["status"] != psutil.STATUS_ZOMBIE:
                return Handle(p.pid, p.info["create_time"], False)
        return None

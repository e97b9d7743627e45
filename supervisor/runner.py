"""The supervisor's one seam to the OS: spawn, signal, reap and identify processes."""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

SHIM = str(Path(__file__).with_name("shim.py"))


@dataclass(frozen=True)
class Handle:
    """A process identity that pid reuse cannot fake: pid plus its start time."""
    pid: int
    create_time: float


@dataclass(frozen=True)
class ExitRecord:
    exit_code: int | None
    signal: int | None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"could not start: {self.error}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit code {self.exit_code}"


class Runner:
    """Real OS effects; the daemon holds one and tests of the loop may swap it."""

    def spawn(self, argv: list[str], run_dir: Path, attempt_dir: Path, env: dict[str, str]) -> Handle:
        """Start the shim (which starts argv) as leader of a new session; no shell anywhere."""
        shim_argv = [sys.executable, "-S", SHIM, str(attempt_dir), "--", *argv]
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        pid = os.posix_spawn(sys.executable, shim_argv, env, setsid=True, file_actions=quiet,
                             setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD))
        try:
            return Handle(pid, psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:  # already gone: the exit file or its absence will tell
            return Handle(pid, 0.0)

    def alive(self, h: Handle) -> bool:
        """True if this exact process (not a reused pid) still runs and is not a zombie."""
        try:
            p = psutil.Process(h.pid)
            return abs(p.create_time() - h.create_time) < 0.05 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def signal_group(self, h: Handle, sig: int) -> None:
        """Signal the job's whole process group (the shim leads it: pgid == shim pid)."""
        try:
            os.killpg(h.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> list[int]:
        """Collect exited children so they do not linger as zombies; returns their pids."""
        done = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return done
            if pid == 0:
                return done
            done.append(pid)

    def find_shim(self, attempt_dir: Path) -> Handle | None:
        """After a crash between spawn and the state write: find the shim by its argv."""
        target = str(attempt_dir)
        for p in psutil.process_iter(["cmdline", "create_time", "status"]):
            cmd = p.info["cmdline"] or []
            if len(cmd) > 4 and cmd[2] == SHIM and cmd[3] == target and p.info["status"] != psutil.STATUS_ZOMBIE:
                return Handle(p.pid, p.info["create_time"])
        return None

    def read_exit(self, attempt_dir: Path) -> ExitRecord | None:
        """The shim's exit.json, validated; None if the shim has not written it."""
        try:
            with open(attempt_dir / "exit.json", "rb") as f:
                data = json.loads(f.read(4096))
            code, sig = data.get("exit_code"), data.get("signal")
            if not (code is None or isinstance(code, int)) or not (sig is None or isinstance(sig, int)):
                raise ValueError("bad types")
            return ExitRecord(code, sig, data.get("error"))
        except FileNotFoundError:
            return None
        except (ValueError, AttributeError, OSError) as e:
            return ExitRecord(None, None, f"unreadable exit.json ({e})")

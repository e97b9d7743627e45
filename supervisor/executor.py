"""The executor seam: where a job's shim runs (this machine, or a cluster) and how it is watched.

Only the daemon moves a job's state and saves it. An executor starts, signals
and watches the shims, and reports what it saw as observations (`Seen`: the
process or cluster job that runs the attempt, whether it waits in the
cluster's queue, when it started, why it waits) and ends (`ExitRecord`); the
daemon applies them to the state and saves it. Every executor runs the same
shim (supervisor/shim.py), so the exit status is always first taken from the
attempt's exit record.
"""
from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import msgspec

from jobs.definitions import Definition
from jobs.errors import SpecError
from jobs.runfiles import AttemptFiles, RunFiles
from jobs.runstate import RunState, signal_name
from jobs.spec import JobSpec
from jobs.spool import read_bytes
from jobs.usage import Usage

SHIM = str(Path(__file__).with_name("shim.py"))


@dataclass
class Job:
    """What the daemon holds in memory for one run; state.json is its durable copy."""
    spec: JobSpec
    definition: Definition
    rs: RunState
    files: RunFiles

    @property
    def sid(self) -> str:
        return self.rs.service_id

    @property
    def attempt(self) -> AttemptFiles:
        """The files of the current attempt."""
        return self.files.attempt(self.rs.attempt)

    @property
    def run_dir(self) -> Path:
        return Path(self.files.run)

    @property
    def attempt_dir(self) -> Path:
        return Path(self.attempt.dir)


@dataclass(frozen=True)
class Seen:
    """What an executor observed about a job's current attempt. None (False): nothing to report."""
    pid: int | None = None           # the process that runs the attempt (local), with its create time
    create_time: float | None = None
    executor_id: str | None = None   # the executor's own id for the attempt (a Slurm job id)
    waiting: bool = False            # handed over, not started (Slurm's queue): no start time, queue time is not runtime
    started_at: float | None = None  # it started then (Slurm's StartTime), learnt after the hand-over
    reason: str | None = None        # what it is doing, for people ("pending in Slurm as job 7 (Resources)")
    isolation: str | None = None     # how the attempt is confined, or "not isolated: <why>" (RunState.isolation)
    cgroup: str | None = None        # the attempt's cgroup name (RunState.cgroup), known before it starts


@dataclass(frozen=True)
class ExitRecord:
    """The shim's exit.json, decoded by msgspec (its times and pid, for people, are skipped)."""
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    # the program's wait4() rusage (it and the descendants it waited for); None: an older shim, or no start
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    maxrss_kb: int | None = None
    inblock: int | None = None
    oublock: int | None = None

    def usage(self) -> Usage | None:
        """What the shim learnt of the program's use; ru_maxrss is the largest process, blocks are 512 bytes."""
        if self.cpu_user_s is None:
            return None
        return Usage(cpu_user_s=self.cpu_user_s, cpu_system_s=self.cpu_system_s,
                     memory_peak_bytes=None if self.maxrss_kb is None else self.maxrss_kb * 1024,
                     io_read_bytes=None if self.inblock is None else self.inblock * 512,
                     io_write_bytes=None if self.oublock is None else self.oublock * 512, source="rusage")

    def describe(self) -> str:
        if self.error:
            return f"could not start: {self.error}"
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.exit_code}"


_DECODE_EXIT = msgspec.json.Decoder(ExitRecord)


def read_exit(attempt: AttemptFiles) -> ExitRecord | None:
    """The shim's exit record, validated; None if the shim has not written it."""
    try:
        # padded with blanks to a fixed size (shim.py); a bool or a float is no exit code
        return _DECODE_EXIT.decode(read_bytes(attempt.exit, 4096))
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, OSError, SpecError) as e:
        return ExitRecord(None, None, f"unreadable {os.path.basename(attempt.exit)} ({e})")


def shim_args(job: Job) -> list[str]:
    """Where the shim works: the program's working directory, the logs, the exit record, the notifications."""
    a = job.attempt
    return [a.work, a.stdout, a.stderr, a.exit, job.files.notifications]


def shim_argv(job: Job, argv: list[str], options: list[str] = ()) -> list[str]:
    """The command line of the attempt's shim, the same for every executor. options: the confinement
    (supervisor/confine.py Plan.to_fields()) and log_bytes=N (the logs' cap), key=value each."""
    return [sys.executable, "-S", SHIM, *shim_args(job), *options, "--", *argv]


class Executor(ABC):
    """Every method the daemon calls on an executor; the optional ones do nothing by default."""

    name: str
    wake_fd: int | None = None  # readable when the executor has news for the loop (then woken())

    def check(self) -> None:
        """At start-up, when it is the configured executor: raise ConfigError if it cannot work here."""

    def prepare(self) -> float | None:
        """Between passes, when the loop has nothing else to do: get ready for the next job. How many seconds
        until it wants to be asked again (None: not before something happens)."""
        return None

    def woken(self) -> None:
        """The loop saw wake_fd readable: take what it says."""

    def reserve(self, job: Job) -> Seen | None:
        """Before job's RUNNING state is written: what will run it, if that is known already; None if not."""
        return None

    def release(self, job: Job) -> None:
        """A reservation whose job will not be started after all."""

    def close(self) -> None:
        """At the daemon's stop: let go of what was made ahead of need (running jobs are left alone)."""

    @abstractmethod
    def start(self, job: Job, argv: list[str], env: dict[str, str]) -> Seen:
        """Start the shim for job's current attempt; what runs it. Raises OSError."""

    @abstractmethod
    def adopt(self, job: Job) -> Seen | None:
        """At start-up: take over tracking of an active job; None if it never really started."""

    @abstractmethod
    def ended(self, jobs: list[Job], full: bool) -> list[tuple[Job, ExitRecord | None]]:
        """Which of these active jobs have ended, with their exit records. `full`: be thorough."""

    def observe(self, jobs: list[Job]) -> list[tuple[Job, Seen]]:
        """After ended(): what changed about these active jobs since the executor last said (for their state)."""
        return []

    @abstractmethod
    def signal(self, job: Job, sig: int) -> None:
        """Deliver sig to everything the job runs."""

    @abstractmethod
    def forget(self, job: Job) -> None:
        """The job's attempt is over: kill its leftovers and drop tracking."""

    def usage(self, job: Job, rec: ExitRecord | None) -> Usage | None:
        """After forget(): what the ended attempt used (here: the shim's rusage in its exit record)."""
        return rec.usage() if rec is not None else None

    def cleanup(self, job: Job) -> None:
        """Once the ended attempt's record (with its usage) is saved: remove what still holds its counts."""

    def live_usage(self, job: Job) -> Usage | None:
        """What the running attempt used so far, if the executor can tell cheaply (None: it cannot)."""
        return None

"""The executor seam: where a job's shim runs (this machine, or a cluster) and how it is watched.

The daemon's loop owns the job states; an executor only starts, signals and
watches the shims. Every executor runs the same shim (supervisor/shim.py), so
the exit status is always first taken from the attempt's exit.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from jobs.errors import SpecError
from jobs.runstate import signal_name
from jobs.spool import read_bytes

if TYPE_CHECKING:
    from .daemon import Job


@dataclass(frozen=True)
class ExitRecord:
    exit_code: int | None
    signal: int | None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"could not start: {self.error}"
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.exit_code}"


def read_exit(attempt_dir: Path) -> ExitRecord | None:
    """The shim's exit.json, validated; None if the shim has not written it."""
    try:
        data = json.loads(read_bytes(attempt_dir / "exit.json", 4096))  # padded with blanks to a fixed size (shim.py)
        code, sig = data.get("exit_code"), data.get("signal")
        if not (code is None or isinstance(code, int)) or not (sig is None or isinstance(sig, int)):
            raise ValueError("bad types")
        return ExitRecord(code, sig, data.get("error"))
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError, OSError, SpecError) as e:
        return ExitRecord(None, None, f"unreadable exit.json ({e})")


class Executor(Protocol):
    name: str

    def start(self, job: "Job", argv: list[str], env: dict[str, str]) -> None:
        """Start the shim for job's current attempt and record its identity in job.rs. Raises OSError."""

    def adopt(self, job: "Job") -> bool:
        """At start-up: take over tracking of an active job; False if it never really started."""

    def ended(self, jobs: list["Job"], full: bool) -> list[tuple["Job", ExitRecord | None]]:
        """Which of these active jobs have ended, with their exit records. `full`: be thorough."""

    def signal(self, job: "Job", sig: int) -> None:
        """Deliver sig to everything the job runs."""

    def forget(self, job: "Job") -> None:
        """The job's attempt is over: kill its leftovers and drop tracking."""

"""What one attempt used: the durable accounting record every reader shares.

The supervisor fills it when an attempt ends, from the attempt's cgroup where
it had one (supervisor/cgroups.py), else from the shim's wait4() of the
program, and saves it with the attempt in state.json. None means this machine
could not tell, never 0.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """What an attempt used; None where this machine cannot tell."""
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    memory_peak_bytes: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int | None = None           # processes the kernel killed for the memory limit
    memory_limit_hits: int | None = None   # times the limit was reached (reclaim or OOM)
    queue_wait_s: float | None = None      # from queued to started
    wall_s: float | None = None            # from started to ended
    source: str = ""                       # "cgroup", "rusage" (the shim's wait4) or "" (none)

    @classmethod
    def from_rusage(cls, ru) -> Usage:
        """From os.wait4()'s rusage of the program (where there is no cgroup).

        It covers the program and the descendants it waited for; ru_maxrss is
        the largest single process, not their sum; block counts are 512 bytes.
        """
        return cls(cpu_user_s=ru.ru_utime, cpu_system_s=ru.ru_stime, memory_peak_bytes=ru.ru_maxrss * 1024,
                   io_read_bytes=ru.ru_inblock * 512, io_write_bytes=ru.ru_oublock * 512, source="rusage")

    @property
    def cpu_s(self) -> float | None:
        """User plus system CPU seconds."""
        if self.cpu_user_s is None or self.cpu_system_s is None:
            return None
        return self.cpu_user_s + self.cpu_system_s

"""Process identity: a pid plus its create time, so that a reused pid cannot pass for a job or a daemon.

The supervisor (its jobs) and jobctl (the daemon in supervisor.json) ask the
same question, so they share this answer and its tolerance.
"""
from __future__ import annotations

import psutil

# psutil's create_time is the boot time from /proc/stat (whole seconds, moved
# when the wall clock is stepped) plus the start in clock ticks. A value
# recorded by one process and checked by another (a restarted daemon, jobctl)
# can thus differ by a whole second with the very same process, so 0.05 s
# wrongly declared live jobs dead. 1.5 s covers that one-second jump with
# margin; to fake an identity a new process would need the same pid within
# 1.5 s of the first one's start, i.e. the kernel cycling through every pid
# (pid_max, 32768 or more) in that time.
CREATE_TIME_TOLERANCE_S = 1.5


def process_problem(pid: int, create_time: float | None) -> str | None:
    """None if this very process runs (a zombie does not); else why not: gone, reused, zombie.

    create_time None means not recorded: the pid alone is checked.
    """
    try:
        proc = psutil.Process(pid)
        created = proc.create_time()
        zombie = proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return f"pid {pid} is gone"
    if create_time is not None and abs(created - create_time) > CREATE_TIME_TOLERANCE_S:
        return f"pid {pid} now belongs to another process"
    return f"pid {pid} is a zombie" if zombie else None


def alive(pid: int, create_time: float | None) -> bool:
    return process_problem(pid, create_time) is None

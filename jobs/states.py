"""Job states and the only transitions allowed between them."""
from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "QUEUED"        # accepted, waiting for a free slot (or a retry delay)
    RUNNING = "RUNNING"      # the shim and its program are alive
    STOPPING = "STOPPING"    # TERM sent to the process group; KILL after the grace period
    SUCCEEDED = "SUCCEEDED"  # program exited 0
    FAILED = "FAILED"        # non-zero exit, timeout, vanished process, spawn error
    ABORTED = "ABORTED"      # stopped on request (abortService or `jobctl kill`)


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.ABORTED})
ACTIVE = frozenset({JobState.RUNNING, JobState.STOPPING})

# What readers show (console, jobctl, metrics): the supervisor's states as text, plus SUBMITTED,
# a spec waiting in incoming/ that the supervisor has not claimed (it has no state.json yet).
SUBMITTED = "SUBMITTED"
DISPLAY_STATES = (SUBMITTED,) + tuple(s.value for s in JobState)
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)    # finished: SUCCEEDED, FAILED, ABORTED
ACTIVE_STATES = frozenset(s.value for s in ACTIVE)        # a process is alive: RUNNING, STOPPING
WAITING_STATES = frozenset({SUBMITTED, JobState.QUEUED.value})  # not started yet

# from-state -> allowed to-states.  Why each edge exists:
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # start it; kill before it ran; spawn failure
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.ABORTED, JobState.FAILED}),
    # exit 0; exit != 0 or vanished; kill/timeout/restart begin; automatic retry after failure
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPING, JobState.QUEUED}),
    # kill done; timeout done; restart (new attempt). A program that exits 0 once stopped still ends
    # as the stop says: a kill is ABORTED (abortService answers true), a timeout FAILED.
    JobState.STOPPING: frozenset({JobState.ABORTED, JobState.FAILED, JobState.QUEUED}),
    # operator restart of a finished job: a new attempt from the same spec
    JobState.SUCCEEDED: frozenset({JobState.QUEUED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.ABORTED: frozenset({JobState.QUEUED}),
}


class IllegalTransition(RuntimeError):
    """A programming error: code tried a transition the table forbids."""


def check_transition(old: JobState, new: JobState) -> JobState:
    """Return `new` if `old -> new` is in the table, else raise."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not allowed")
    return new

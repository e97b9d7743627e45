"""Who stopped a job, in words a portal user understands.

The supervisor records a stop as "aborted by <origin>" / "restarted by
<origin>", the origin being what the command file says: "facade" (abortService),
"jobctl:<user>", "operator". state.json keeps that terse form; the status page,
the JobFailed fault and jobctl pass it through `describe` (the page's headline
while the stop runs through `under_way`): the one place that maps origins to words.
"""
from __future__ import annotations

import re

_STOP = re.compile(r"(aborted|restarted) by ([^\s();,]+)")
_VERBS = {"aborted": "stopped", "restarted": "restarted"}


def who(origin: str) -> str:
    """The origin of a kill or restart command, as the reason for it."""
    if origin == "facade":
        return "at the user's request (abortService)"
    if origin == "operator":
        return "by an operator (jobctl)"
    if origin.startswith("jobctl:"):
        return f"by an operator (jobctl, user {origin.removeprefix('jobctl:') or '?'})"
    return f"by {origin}"


def describe(reason: str | None) -> str:
    """A recorded reason with every "aborted by X" / "restarted by X" put in words; anything else as it is."""
    return _STOP.sub(lambda m: f"{_VERBS[m.group(1)]} {who(m.group(2))}", reason or "")


def under_way(reason: str | None) -> str:
    """The headline while a stop is under way: "Stopping at the user's request (abortService)"."""
    m = _STOP.fullmatch(reason or "")
    if m:
        return f"{'Stopping' if m.group(1) == 'aborted' else 'Restarting'} {who(m.group(2))}"
    return f"Stopping: {reason or 'stop requested'}"

"""Requests answered on the worker's event loop: what may run there, and the way out when it may not.

A plain poll with a token this worker has validated is CPU work of ~0.1 ms
over files the job keeps warm; the hop to a pool thread and back (a queue,
a futex, the loop's self-pipe, the GIL handed over twice) cost more than the
poll itself. So facade.bridge runs such a request on the loop, inside
`on_loop()`, and whatever would have to wait there (an authentication
manager's answer, a job's files this worker has not read lately, spyne's
generic path for a start or an abort) calls `must_not_wait` first: that
raises `WouldWait` before anything is recorded, and the bridge runs the
request again, from the start, in a thread, as before.
"""
from __future__ import annotations

import contextvars

_ON_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("facade_on_loop", default=False)


class WouldWait(BaseException):
    """Raised on the event loop where the request would wait; the bridge reruns it in a thread.

    A BaseException so the app's last-resort nets (`except Exception`, which
    turn errors into faults) let it through untouched.
    """


def must_not_wait(why: str) -> None:
    """Call before anything that may block; on the event loop it hands the whole request to a thread."""
    if _ON_LOOP.get():
        raise WouldWait(why)


def running_on_loop() -> bool:
    return _ON_LOOP.get()


class on_loop:  # noqa: N801 - used as `with on_loop():`; a class: a generator costs more per poll
    """Mark the code run inside (synchronously, on the event loop) as not allowed to wait."""

    def __enter__(self) -> None:
        self.token = _ON_LOOP.set(True)

    def __exit__(self, *exc) -> None:
        _ON_LOOP.reset(self.token)

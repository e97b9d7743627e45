"""wait_for: poll a condition until it holds or time runs out (jobctl --wait, the tests, the benchmark)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """The first truthy value of predicate(); TimeoutError naming `what` once `timeout` seconds have passed.

    The predicate is asked once more after the deadline, so a slow last check still counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)

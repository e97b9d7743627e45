"""The console's picture of the spool: jobs.index.SpoolIndex plus what only the console needs.

The rows, stamps, sweeps and gates are jobs/index.py's (see there). The
console adds: an asyncio event that wakes the event streams when a pass
changed something (`wait_change`), each running job's progress samples for
its chart, the jobs-over-time history, and each row's JSON text made once a
second however many streams send it.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field

from jobs.definitions import Definition
from jobs.index import FULL_CHECK_SECONDS, MTIME_MARGIN, Row, SpoolIndex  # noqa: F401 (the console's names)
from jobs.spool import Spool
from jobs.states import ACTIVE_STATES, DISPLAY_STATES, SUBMITTED, TERMINAL_STATES  # noqa: F401

STATES = DISPLAY_STATES
MAX_SAMPLES = 600
HISTORY_POINTS = 720


@dataclass(eq=False)
class Job(Row):
    """A row of the board, with the progress samples of its chart and its JSON text cache."""
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time, percent) seen while it ran
    _json: tuple = ((), "")                # (seq, whole second) -> as_json text, shared by every stream

    def json_text(self, now: float) -> str:
        """as_json as text, made once a second per change however many streams send it."""
        key = (self.seq, int(now))
        if self._json[0] != key:
            self._json = (key, json.dumps(self.as_json(float(int(now)))))
        return self._json[1]


class Index(SpoolIndex):
    """All jobs of one spool; refreshed on the event loop, read by every request."""

    row_class = Job

    def __init__(self, spool: Spool, definitions: dict[str, Definition], clock=time.time):
        super().__init__(spool, definitions, clock)
        self.history: deque[tuple[float, int, int, int]] = deque(maxlen=HISTORY_POINTS)
        self._changed = asyncio.Event()

    async def wait_change(self, seq: int, timeout: float) -> None:
        """Return once seq has moved on (or after timeout)."""
        deadline = time.monotonic() + timeout
        while self.seq <= seq and time.monotonic() < deadline:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                return
            if self.seq <= seq:
                return  # woken without a change: wake()

    def refresh(self, now: float | None = None) -> int:
        """One pass; the number of changes. A change wakes every stream waiting in wait_change."""
        changed = super().refresh(now)
        if changed:
            self.wake()
        return changed

    def wake(self) -> None:
        """End every wait_change now (a change, or the console shutting down)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def sample_history(self, now: float | None = None) -> None:
        """One point of the jobs-over-time chart: queued, running, finished."""
        now = self.clock() if now is None else now
        counts = {"q": 0, "r": 0, "f": 0}
        for j in self.live():
            counts["f" if j.state in TERMINAL_STATES else "r" if j.state in ACTIVE_STATES else "q"] += 1
        self.history.append((now, counts["q"], counts["r"], counts["f"]))

    # -- the progress samples ---------------------------------------------------
    def _replaced(self, new: Job, old: Job | None) -> None:
        if old is not None and not old.removed:
            new.samples = old.samples

    def _attempt_changed(self, job: Job) -> None:
        job.samples = []

    def _progress_seen(self, job: Job, now: float) -> None:
        pct = job.progress
        if not job.samples or job.samples[-1][1] != pct or now - job.samples[-1][0] >= 5:
            job.samples.append((now, pct))
            del job.samples[:-MAX_SAMPLES]

"""facade.json written off the event loop: a page sent from the loop leaves its record to one writer thread.

A poll answered on the worker's event loop (facade.inline) that sends a page
also records it in runs/<sid>/facade.json (facade.jobview.SentPages). That
pwrite goes to the page cache, but it updates the file's mtime, and on ext4
that joins the journal's running transaction, which waits while a commit is
under way (the 1,000 jobs' progress files, the supervisor's fsyncs): every
connection of the worker would wait with it. So the loop only hands the
record over; one thread per worker writes it.

Ordering: until its record is written, this worker reads it from memory
(`pending`), so its own next poll of the job sees it, as if written at once.
Another worker may read the older file meanwhile: that costs the poller one
page sent again (allowed: a hint is free to lose). Writes made in a pool
thread (which may block) stay synchronous; both kinds go through one lock,
so an older record never lands over a newer one from this worker. A backlog
of MAX_PENDING jobs drops further records (each costs one page sent again).
"""
from __future__ import annotations

import collections
import os
import threading

import structlog

from jobs.runfiles import RunFiles
from jobs.spool import Spool

from . import jobview

MAX_PENDING = 4096

log = structlog.get_logger("facade.hints")


class HintWriter:
    """One worker's facade.json writes: handed to a thread from the loop, written at once elsewhere."""

    def __init__(self, spool: Spool, max_pending: int = MAX_PENDING):
        self.spool = spool
        self.max_pending = max_pending
        self._pending: dict[str, bytes] = {}  # facade.json path -> the newest record not written yet
        self._order: collections.deque[RunFiles] = collections.deque()
        self._lock = threading.Lock()  # the two above; held for microseconds (the loop takes it)
        self._wake = threading.Condition(self._lock)
        self._io = threading.Lock()  # held while writing (never taken on the loop)
        self._pid: int | None = None  # the process the thread runs in (the app is built before the fork)
        self._idle = False  # the thread waits for work (set and read under _lock)

    def pending(self, files: RunFiles) -> bytes | None:
        """This worker's record for the job that is not on disk yet, if any."""
        return self._pending.get(files.facade_hint)

    def later(self, files: RunFiles, record: bytes) -> None:
        """Have the thread write the record; until then `pending` answers it. Never waits."""
        path = files.facade_hint
        with self._wake:
            if path not in self._pending:
                if len(self._pending) >= self.max_pending:
                    return  # a backlog: this record is lost, the poller gets its page once more
                self._order.append(files)
            self._pending[path] = record
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="facade-hints", daemon=True).start()
            if self._idle:  # a busy thread finds it when done: a wake-up costs the loop a GIL hand-over
                self._idle = False
                self._wake.notify()

    def now(self, files: RunFiles, record: bytes) -> None:
        """Write the record in this thread (not the loop's), over any older one still pending."""
        with self._io:
            with self._lock:
                self._pending.pop(files.facade_hint, None)  # older: its queue entry finds nothing to write
            jobview.remember_page(self.spool, files, record)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._order:
                    self._idle = True
                    self._wake.wait()
                self._idle = False
                files = self._order.popleft()
            with self._io:
                record = self._pending.get(files.facade_hint)
                if record is None:
                    continue
                try:
                    jobview.remember_page(self.spool, files, record)
                except Exception as e:  # noqa: BLE001 - a hint is free to lose; the thread must not die
                    log.warning("hint_not_written", service_id=files.sid, error=f"{type(e).__name__}: {e}")
                with self._lock:
                    if self._pending.get(files.facade_hint) is record:
                        del self._pending[files.facade_hint]
                    else:  # a newer record came while this one was written: write that one too
                        self._order.append(files)

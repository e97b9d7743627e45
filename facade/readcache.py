"""What this worker last read from each run file, reused while one lstat says the file has not changed.

A poll reads four or five small files (state.json, the progress file, a tail
of stdout.log, facade.json); most polls find them as the last poll left
them. An open, fstat, read and close per file becomes one lstat when the
file's identity (inode, size, mtime, ctime) is the one seen at the last read.

Identity alone is not enough: timestamps come from the kernel's coarse clock
(a jiffy, up to 10 ms), so a file rewritten in place with the same size
within one tick, or replaced by a new file that reuses the freed inode
number, can look unchanged. So a read is trusted only when the file's mtime
and ctime were already older than the moment of the lstat by more than
GRANULARITY_S (git's "racy" rule): any write after that moment stamps the
file with a time later than both, so the next lstat sees another identity
and the file is read again. A state.json replaced by the supervisor (a new
inode, renamed into place) is therefore always seen at the next poll: a job
never stays RUNNING here after it finished. One case is left: a write whose
timestamp was taken before the lstat but whose bytes landed after the read
(a writer stalled between the two for longer than GRANULARITY_S); a trusted
read is therefore reread after MAX_AGE_S at the latest.

The reading itself is still done by each file's own reader (jobs.spool,
jobs.progress, facade.jobview), called unchanged on a miss: no second reader.
Errors are never cached, nor is anything that is not a regular file.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Callable, TypeVar

T = TypeVar("T")

GRANULARITY_S = 0.1  # timestamps lag the wall clock by at most a jiffy (10 ms at HZ=100): ten of them
MAX_AGE_S = 2.0  # a trusted read is reread after this long in any case
MAX_ENTRIES = 16384  # paths remembered; all forgotten at once when full (a few MiB at most)


class ReadCache:
    """Per worker: path -> (reader, identity, when read, value) of reads that passed the racy rule.

    The values are shared between polls: readers hand back immutable ones."""

    def __init__(self, clock: Callable[[], float] = time.time, lstat: Callable = os.lstat,
                 granularity_s: float = GRANULARITY_S, max_age_s: float = MAX_AGE_S, size: int = MAX_ENTRIES):
        self.clock = clock
        self.lstat = lstat
        self.granularity_ns = int(granularity_s * 1e9)
        self.max_age_s = max_age_s
        self.size = size
        self._entries: dict[str, tuple[Callable, tuple[int, int, int, int], float, object]] = {}

    def read(self, path: str, reader: Callable[[str], T]) -> T:
        """reader(path), or what it returned last time if the file has not changed since (see above)."""
        now = self.clock()
        try:
            st = self.lstat(path)
        except OSError:
            return reader(path)  # missing or unreadable: the reader says what that means
        if not stat.S_ISREG(st.st_mode):
            return reader(path)  # a symlink, a FIFO...: the reader refuses it
        identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self._entries.get(path)
        if hit is not None and hit[0] is reader and hit[1] == identity and now - hit[2] < self.max_age_s:
            return hit[3]  # type: ignore[return-value]
        value = reader(path)
        settled = int(now * 1e9) - self.granularity_ns
        if st.st_mtime_ns < settled and st.st_ctime_ns < settled:
            if len(self._entries) >= self.size and path not in self._entries:
                self._entries = {}
            self._entries[path] = (reader, identity, now, value)
        elif hit is not None:
            self._entries.pop(path, None)
        return value

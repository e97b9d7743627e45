"""The accounting ledger (SPOOL/accounting/<YYYY-MM>.log): what every ended attempt used, kept beyond its run.

As Slurm's accounting storage does: when an attempt ends, the supervisor (the
one writer) appends its record BEFORE the state.json save that ends the
attempt, and fsyncs it at the end of that pass (after the state is visible:
the fsync is off the path of an exit to COMPLETED). A file is a run of
frames: a header (payload length and CRC-32 of the payload, little-endian
uint32 each), then the record as a msgpack array.

Crash rules. A supervisor killed mid-append leaves a torn tail: readers stop at
the first frame that is short or fails its checksum, and the supervisor cuts
that tail off before it appends to the file again. A supervisor killed between
the append and the save finishes the attempt again on recovery and appends it
again: readers keep the last record of each (serviceID, attempt), so nothing
is lost or counted twice. A power cut may take a record appended but not yet
fsynced while its final state.json survives: at start-up the supervisor
appends again what the runs say ended since the ledger's newest record and the
ledger lacks (catch_up). A record goes to the file of the month (UTC) its
attempt ended in; a re-append lands in that month or a later one, so a reader
of a period also reads the month after it. Month files go when they are older
than ACCOUNTING_RETENTION_DAYS, not with the runs retention removes.
"""
from __future__ import annotations

import calendar
import math
import os
import struct
import time
import zlib
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any, Iterable

import msgspec
import structlog

from .errors import SpecError
from .runstate import RunState
from .spool import Spool, fsync_dir, open_regular, open_regular_for_write, read_bytes
from .usage import Usage
from .usagereport import spent

DIRNAME = "accounting"
SUFFIX = ".log"
BACKFILLED = ".backfilled"       # in the ledger's directory: the runs' attempts were copied in once, and when
CLOCK_MARGIN_S = 600.0           # catch_up looks this far before the newest record (a clock set back meanwhile)
OLD_SNAPSHOT = "usage-snapshot.msgpack"  # the cache the ledger replaced (jobs/index.py before it): removed
HEADER = struct.Struct("<II")    # payload length, zlib.crc32(payload)
MAX_RECORD_BYTES = 64 * 1024     # a longer length field is damage, not a record

log = structlog.get_logger("jobs.accounting")


class Record(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One ended attempt: who and what, when, and its Usage figures (the same names, so a report reads them as one)."""
    sid: str
    attempt: int
    project: str | None
    username: str | None
    job: str
    queued_at: float | None
    started_at: float | None
    finished_at: float
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    memory_peak_bytes: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int | None = None
    memory_limit_hits: int | None = None
    queue_wait_s: float | None = None
    wall_s: float | None = None
    source: str = ""

    @property
    def cpu_s(self) -> float | None:
        if self.cpu_user_s is None or self.cpu_system_s is None:
            return None
        return self.cpu_user_s + self.cpu_system_s

    def usage(self) -> Usage:
        return Usage(*(getattr(self, f.name) for f in fields(Usage)))


_HEAD = len(Record.__struct_fields__) - len(fields(Usage))
assert Record.__struct_fields__[_HEAD:] == tuple(f.name for f in fields(Usage)), "Record must end with Usage's fields"
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Record)
_MANY = msgspec.msgpack.Decoder(list[Record])


def record(sid: str, job: str, owner: dict[str, Any], attempt: int, started_at: float | None,
           finished_at: float, usage: Usage) -> Record:
    """The ledger's record of an ended attempt; its queue time is its start less its queue wait."""
    queued = None if started_at is None or usage.queue_wait_s is None else started_at - usage.queue_wait_s
    project, username = (v if isinstance(v, str) and v else None for v in (owner.get("project"), owner.get("username")))
    return Record(sid, attempt, project, username, job, queued, started_at, finished_at, *astuple(usage))


def records_of(rs: RunState, owner: dict[str, Any]) -> list[Record]:
    """Every ended attempt of a run that has a usage record (what catch_up copies in)."""
    started = {a.attempt: a.started_at for a in rs.history}
    return [record(rs.service_id, rs.job, owner, s.attempt, started.get(s.attempt), s.finished_at, s.usage)
            for s in spent(rs) if s.finished_at is not None]


def frame(rec: Record) -> bytes:
    payload = _ENCODER.encode(rec)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes) -> tuple[list[Record], int]:
    """The records of a file's bytes, and where the valid part ends (len(data) unless the tail is torn or damaged).

    Frames are checked one by one, then their payloads, msgpack arrays each,
    decoded at once as the items of one array: a call per record would cost
    most of `jobctl usage`'s second over 100,000 of them."""
    payloads: list[memoryview] = []
    view, pos, n = memoryview(data), 0, len(data)
    unpack, crc, keep = HEADER.unpack_from, zlib.crc32, payloads.append
    while pos + 8 <= n:
        length, check = unpack(data, pos)
        end = pos + 8 + length
        if length > MAX_RECORD_BYTES or end > n:
            break
        payload = view[pos + 8:end]
        if crc(payload) != check:
            break
        keep(payload)
        pos = end
    try:
        return _MANY.decode(b"\xdd" + struct.pack(">I", len(payloads)) + b"".join(payloads)), pos
    except msgspec.DecodeError:  # a whole frame that is no record: keep those before it
        out: list[Record] = []
        for i, p in enumerate(payloads):
            try:
                out.append(_DECODER.decode(p))
            except msgspec.DecodeError:
                return out, sum(8 + len(q) for q in payloads[:i])
        return out, pos


def month_of(ts: float) -> str:
    """The month file a record that ended at ts goes to: 'YYYY-MM.log' (UTC)."""
    t = time.gmtime(ts)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}{SUFFIX}"


def _month_after(name: str) -> str:
    year, month = int(name[:4]), int(name[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}{SUFFIX}"


def _month_end(name: str) -> float:
    return calendar.timegm(time.strptime(_month_after(name)[:7], "%Y-%m"))


def _month_files(directory: Path) -> list[str]:
    """The month files in the ledger, oldest first (names that are not one are left alone)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if len(n) == 7 + len(SUFFIX) and n.endswith(SUFFIX) and n[4] == "-"
                  and n[:4].isdigit() and n[5:7].isdigit() and 1 <= int(n[5:7]) <= 12)


def ledger_dir(spool: Spool) -> Path:
    return spool.root / DIRNAME


# -- the read side: jobctl usage, the console's usage pages -------------------------------------------
class Reader:
    """The ledger as readers see it. It keeps what it read, so a later call (the console's) reads only what
    was appended since; a file that was replaced, cut or removed is read again or dropped."""

    def __init__(self, spool: Spool):
        self.dir = ledger_dir(spool)
        self._files: dict[str, tuple[int, int, list[Record]]] = {}  # name -> (inode, bytes read, records)

    def records(self, since: float | None = None, until: float | None = None) -> list[Record]:
        """One record per (serviceID, attempt), the last appended, from the month files that can hold an
        attempt that ended in [since, until); the caller selects on finished_at."""
        names = _month_files(self.dir)
        lo = "" if since is None or not math.isfinite(since) else month_of(since)
        hi = "~" if until is None or not math.isfinite(until) else _month_after(month_of(until))
        for gone in self._files.keys() - set(names):
            del self._files[gone]
        latest: dict[tuple[str, int], Record] = {}
        for name in names:
            if lo <= name <= hi:
                latest.update({(r.sid, r.attempt): r for r in self._read(name)})
        return list(latest.values())

    def _read(self, name: str) -> list[Record]:
        path = self.dir / name
        inode, done, kept = self._files.get(name, (0, 0, []))
        try:
            with open_regular(path) as f:
                st = os.fstat(f.fileno())
                if st.st_ino != inode or st.st_size < done:
                    done, kept = 0, []
                if st.st_size > done:
                    f.seek(done)
                    new, valid = decode(f.read(st.st_size - done))
                    kept, done = kept + new, done + valid
        except FileNotFoundError:
            self._files.pop(name, None)
            return []
        self._files[name] = (st.st_ino, done, kept)
        return kept


# -- the write side: the supervisor only ------------------------------------------------------------------
class Ledger:
    """The supervisor's end: appends records and keeps those the storage refused for the next flush.

    durable=True: each flush fsyncs what it appended. durable=False (the
    daemon): a flush only writes (the page cache keeps it through a kill -9),
    and sync() makes it durable later; a record whose fsync fails is appended
    again.
    """

    def __init__(self, spool: Spool, retention_s: float, durable: bool = True):
        self.spool = spool
        self.dir = ledger_dir(spool)
        self.retention_s = retention_s
        self.durable = durable
        self.pending: list[Record] = []
        self.unsynced: dict[str, list[Record]] = {}  # month file -> records written to it since its last fsync
        self.dir_unsynced = False  # a month file was created since the directory's last fsync
        self.checked: set[str] = set()  # files whose tail was checked by this process
        self.reader: Reader | None = None  # start-up's (since, catch_up), then let go

    def start(self, now: float) -> None:
        """Start-up: cut the torn tail a killed supervisor may have left, drop expired months and the old cache."""
        os.makedirs(self.dir, exist_ok=True)
        names = _month_files(self.dir)
        if names:
            self.repair(max(names, key=lambda n: os.stat(self.dir / n).st_mtime_ns))
        self.expire(now)
        try:
            os.unlink(self.spool.root / OLD_SNAPSHOT)
        except FileNotFoundError:
            pass

    def add(self, rec: Record) -> None:
        self.pending.append(rec)

    def flush(self) -> None:
        """Append every pending record to its month file (fsynced if durable); OSError leaves what was not written
        pending."""
        while self.pending:
            name = month_of(self.pending[0].finished_at)
            batch = [r for r in self.pending if month_of(r.finished_at) == name]
            self._append(name, b"".join(frame(r) for r in batch))
            self.pending = [r for r in self.pending if month_of(r.finished_at) != name]
            if not self.durable:
                self.unsynced.setdefault(name, []).extend(batch)

    def sync(self) -> None:
        """fsync what flush wrote without; OSError: what was not made durable is pending again (appended twice
        if the first copy reached the disk after all: readers keep one)."""
        for name in list(self.unsynced):
            try:
                _fsync_file(self.dir / name)
            except OSError:
                self.pending[:0] = self.unsynced.pop(name)
                self.checked.discard(name)  # whatever the failed write-back left is cut before the next append
                raise
            del self.unsynced[name]
        if self.dir_unsynced:
            fsync_dir(self.dir)
            self.dir_unsynced = False

    def _append(self, name: str, data: bytes) -> None:
        path = self.dir / name
        if name not in self.checked:
            os.makedirs(self.dir, exist_ok=True)
            self.repair(name)
        created = not path.exists()
        fd = open_regular_for_write(path, os.O_APPEND | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.durable:
                    os.fsync(fd)
            except OSError:
                self.checked.discard(name)  # a part written: cut back (or at the next repair)
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
        if created:
            if self.durable:
                fsync_dir(self.dir)
            else:
                self.dir_unsynced = True
            self.expire(time.time())  # a new month: the oldest may have expired meanwhile

    def repair(self, name: str) -> None:
        """Cut a file back to its last whole frame (a torn tail left by a kill -9); the bytes cut are kept
        beside it (<name>.cut-<ns>) for an operator, never read."""
        path = self.dir / name
        try:
            with open_regular(path) as f:
                data = f.read()
        except FileNotFoundError:
            self.checked.add(name)
            return
        _, valid = decode(data)
        if valid < len(data):  # kept aside first: damage inside a file would otherwise take what follows it
            self.spool.write_atomic(self.dir / f"{name}.cut-{time.time_ns()}", data[valid:])
            fd = open_regular_for_write(path, 0)
            try:
                os.ftruncate(fd, valid)
                os.fsync(fd)
            finally:
                os.close(fd)
            log.warning("accounting_tail_cut", file=name, kept_bytes=valid, cut_bytes=len(data) - valid)
        self.checked.add(name)

    def expire(self, now: float) -> None:
        """Remove the month files whose last day is older than the ledger's retention."""
        for name in _month_files(self.dir):
            if _month_end(name) < now - self.retention_s:
                os.unlink(self.dir / name)
                self.checked.discard(name)
                log.info("accounting_month_expired", file=name)

    def since(self, now: float) -> float:
        """Start-up: after when an ended attempt may be missing from the ledger (catch_up looks at those only).

        The supervisor appends in the order attempts end, so what a power cut
        took before its fsync, or a kill -9 before its write (a full disk kept
        it pending), ended after the newest record that is there (less
        CLOCK_MARGIN_S); with no record, after the first start's copy of the
        runs (the marker's time). Before that first copy, everything within
        the retention.
        """
        self.reader = self.reader or Reader(self.spool)
        try:
            for name in reversed(_month_files(self.dir)):
                records = self.reader._read(name)
                if records:
                    return max(r.finished_at for r in records) - CLOCK_MARGIN_S
        except (OSError, SpecError) as e:
            log.error("accounting_unreadable", error=str(e), reason="nothing is caught up at this start")
            return math.inf
        try:
            return float(read_bytes(self.dir / BACKFILLED, 4096).split()[0])
        except FileNotFoundError:
            return now - self.retention_s
        except (OSError, ValueError, IndexError, SpecError):
            return now  # a marker of before this rule, and no record since: nothing to look at

    def catch_up(self, ended: Iterable[Record], since: float, now: float) -> int:
        """Append the ended attempts (records_of the runs) that ended after `since` and the ledger lacks, durably,
        and mark the first start's copy; how many."""
        if since == math.inf:
            return 0
        self.reader = self.reader or Reader(self.spool)
        known = {(r.sid, r.attempt) for r in self.reader.records(since=since)}
        horizon = max(since, now - self.retention_s)
        missing = [r for r in ended if r.finished_at > horizon and (r.sid, r.attempt) not in known]
        self.pending.extend(sorted(missing, key=lambda r: r.finished_at))
        self.flush()
        self.sync()
        first = not (self.dir / BACKFILLED).exists()
        if first:
            self.spool.write_atomic(self.dir / BACKFILLED, f"{now!r} the runs' ended attempts were copied in\n".encode())
        if missing or first:
            log.info("accounting_caught_up", appended=len(missing), since=since, first_start=first)
        self.reader = None
        return len(missing)


def _fsync_file(path: Path) -> None:
    fd = open_regular_for_write(path, os.O_APPEND)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

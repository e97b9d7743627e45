"""The one read side of the spool: every job as a row, kept in memory and refreshed by what changed.

The console, the metrics collector and jobctl read the spool through a
`SpoolIndex`; one `refresh()` on a new index is a complete read (jobctl runs
once and exits), later passes cost what changed, not the size of the spool:
runs/ is listed again only when its mtime moved (a run appears or goes),
queue.json is read again only when it changed, and state.json is stat()ed
every pass only for *hot* jobs: not finished, or named by a command waiting
in commands/ (a restart of a finished job). Finished jobs are re-checked in a
rolling sweep, COLD_PER_PASS a pass. Every change to what a row shows bumps a
global sequence number: "what changed since n" is every row whose seq is
above n, and a removed job leaves a tombstone for TOMBSTONE_SECONDS so that a
reader that resumes hears of it.

Two gates keep a pass cheap with many jobs running. Every file the supervisor
(the one writer of state.json) or any peer writes atomically is staged in the
spool's tmp/ first, so while tmp/'s mtime stands still no state.json changed
and none is stat()ed (`_states_may_have_moved`: see there for why a stamp is
trusted only once it is older than MTIME_MARGIN, and a full check still runs
every FULL_CHECK_SECONDS). A progress file, the program's own, is looked at
every PROGRESS_EVERY passes (half the running jobs each pass), and at once
the first time a row is loaded.

A row remembers apart the seq of its last change other than progress
(`row_seq`): with every running job reporting each second, most changes are a
new percentage, which a reader may send as one small map instead of rows.

Without definitions (the metrics collector has none) no spec is parsed: rows
come from state.json alone, and a spec still in incoming/ is a bare
SUBMITTED row.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

import structlog

from .definitions import Definition
from .errors import SpecError
from .progress import read_percent
from .runfiles import RunFiles
from .runstate import RunState
from .spec import JobSpec
from .spool import SERVICE_ID_RE, ServiceId, Spool, read_json
from .states import ACTIVE, ACTIVE_STATES, SUBMITTED, TERMINAL, TERMINAL_STATES, JobState
from .usage import Usage
from .usagereport import Spent, as_dict, spent, total

COLD_PER_PASS = 200
PROGRESS_EVERY = 2         # passes: each running job's progress is looked at every other pass
MTIME_MARGIN = 1.0         # s: a directory mtime younger than this may yet be shared by a later write
FULL_CHECK_SECONDS = 1.0   # every state.json of a hot job is stat()ed at least this often, gate or not
TOMBSTONE_SECONDS = 600

log = structlog.get_logger("jobs.index")


@dataclass(eq=False)
class Row:
    """One job: what its spec and state.json say, plus what the index saw (progress, queue, commands)."""
    sid: str
    job: str
    project: str | None
    username: str | None
    submitted_at: float | None
    inputs: dict[str, Any]
    spec: JobSpec | None = None            # None when the index reads without definitions
    run: RunState | None = None            # the state.json last read; None while SUBMITTED
    state: str = SUBMITTED
    reason: str = "waiting for the supervisor to pick it up"
    attempt: int = 1
    executor: str = "local"
    executor_id: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: float | None = None
    position: int | None = None           # 1-based place in queue.json
    pending: tuple[str, ...] = ()         # commands waiting in commands/
    spent: tuple[Spent, ...] = ()         # each ended attempt's usage record (jobs/usagereport.py)
    usage: Usage | None = None            # their sum: what the job used so far, once an attempt ended
    removed: bool = False
    removed_at: float | None = None
    seq: int = 0                           # the last change of anything shown
    row_seq: int = 0                       # the last change of anything but the progress
    stamp: tuple = ()                      # identity of the state.json last read
    progress_stamp: tuple = ()             # identity of the progress file last read
    last_shown: tuple = ()                 # shown() when row_seq was last bumped
    last_progress: float | None = None     # progress when seq was last bumped
    files: RunFiles | None = None          # its paths, made once
    progress_path: tuple[int, str | None] = (0, None)  # (attempt, the definition's progress file)
    turn: int = 0                          # which of PROGRESS_EVERY passes looks at its progress

    def shown(self) -> tuple:
        """Everything a row shows that moves by events, but the progress (see row_seq)."""
        return (self.state, self.reason, self.attempt, self.executor, self.executor_id, self.started_at,
                self.finished_at, self.position, self.pending, self.removed, self.usage)

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at if self.state != JobState.QUEUED.value else None

    def runtime(self, now: float) -> float | None:
        """How long it has run (active) or ran (finished); None while waiting."""
        if self.state in ACTIVE_STATES and self.started_at:
            return max(0.0, now - self.started_at)
        if self.state in TERMINAL_STATES and self.started_at and self.finished_at:
            return max(0.0, self.finished_at - self.started_at)
        return None

    def remaining(self, now: float) -> float | None:
        """A straight-line estimate from progress so far (the status page's rule)."""
        elapsed = self.elapsed(now)
        if self.state != JobState.RUNNING.value or not elapsed or not self.progress:
            return None
        return elapsed * (100 - self.progress) / self.progress

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "service_id": self.sid, "job": self.job, "project": self.project, "username": self.username,
            "state": self.state, "reason": self.reason, "attempt": self.attempt, "progress": self.progress,
            "queue_position": self.position, "executor": self.executor, "executor_id": self.executor_id,
            "submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "elapsed_seconds": _round(self.elapsed(now)), "remaining_seconds": _round(self.remaining(now)),
            "pending_commands": list(self.pending), "removed": self.removed, "seq": self.seq,
            **self.usage_json(now),
        }

    def usage_json(self, now: float) -> dict[str, Any]:
        """What it used in all its ended attempts (usage), and the board's figures: CPU and peak memory
        once an attempt ended, wall time summed over ended attempts or, before, how long it has run."""
        u = self.usage
        wall = u.wall_s if u is not None and u.wall_s is not None else self.runtime(now)
        return {"cpu_seconds": _round(None if u is None else u.cpu_s), "wall_seconds": _round(wall),
                "memory_peak_bytes": None if u is None else u.memory_peak_bytes, "usage": as_dict(u)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


class SpoolIndex:
    """All jobs of one spool. Not thread-safe: one owner calls refresh() and reads between passes."""

    row_class: type[Row] = Row
    cold_slices: int | None = None  # if set, a pass also sweeps at least 1/cold_slices of the finished jobs

    def __init__(self, spool: Spool, definitions: dict[str, Definition] | None, clock=time.time):
        self.spool = spool
        self.definitions = definitions
        self.clock = clock
        self.jobs: dict[str, Row] = {}
        self.problems: dict[str, str] = {}  # sid -> why its spec or state.json could not be read
        self.seq = 0
        self.floor = 0          # changes at or below this may have been forgotten (pruned tombstones)
        self._runs_mtime = -1
        self._queue_stamp: tuple | None = None
        self._queue: dict[str, int] = {}
        self._cold: deque[str] = deque()
        self._tombstones: dict[str, float] = {}  # removed sid -> when
        self._hot: set[str] = set()        # unfinished (or just added, removed or commanded): looked at every pass
        self._passes = 0
        self._added = 0
        self._tmp_seen: tuple[tuple, bool] = ((), False)  # (tmp/'s stamp, it was older than MTIME_MARGIN)
        self._full_check_at = 0.0

    # -- reading ------------------------------------------------------------
    def get(self, sid: str) -> Row | None:
        job = self.jobs.get(sid)
        return None if job is None or job.removed else job

    def live(self) -> Iterable[Row]:
        return (j for j in self.jobs.values() if not j.removed)

    def changed_since(self, seq: int) -> tuple[list[Row], list[Row]]:
        """Rows with a change after seq: (whose row changed, in seq order; whose progress alone changed)."""
        rows, progress = [], []
        for j in self.jobs.values():
            if j.seq > seq:
                (rows if j.row_seq > seq else progress).append(j)
        rows.sort(key=lambda j: j.seq)
        return rows, progress

    def run_files(self, job: Row) -> RunFiles:
        if job.files is None:
            job.files = self.spool.files(ServiceId(job.sid))  # a name the scan matched SERVICE_ID_RE
        return job.files

    # -- refreshing -----------------------------------------------------------
    def refresh(self, now: float | None = None) -> int:
        """One pass; the number of changes (0: nothing a reader shows moved)."""
        now = self.clock() if now is None else now
        before = self.seq
        self._scan_runs(now)
        self._scan_incoming(now)
        pending = self.spool.pending_commands()
        self._read_queue()
        states = self._states_may_have_moved(now)
        self._passes += 1
        turn = self._passes % PROGRESS_EVERY
        touched = self._hot | (pending.keys() & self.jobs.keys())
        sweep = max(COLD_PER_PASS, -(-len(self._cold) // self.cold_slices) if self.cold_slices else 0)
        for _ in range(min(sweep, len(self._cold)) if states else 0):
            sid = self._cold.popleft()
            if sid in self.jobs and not self.jobs[sid].removed:
                self._cold.append(sid)
                touched.add(sid)
        for sid in touched:
            job = self.jobs[sid]
            if not job.removed:
                if job.state != SUBMITTED and (states or sid in pending):
                    self._load_state(job, now)
                job.position = self._queue.get(sid) if job.state == JobState.QUEUED.value else None
                job.pending = tuple(pending.get(sid, ()))
                if job.state == JobState.RUNNING.value and job.turn == turn:
                    self._read_progress(job, now)
            self._bump_if_changed(job)
            if job.removed or (job.state in TERMINAL_STATES and not job.pending):
                self._hot.discard(sid)
            else:
                self._hot.add(sid)
        self._prune(now)
        return self.seq - before

    def _states_may_have_moved(self, now: float) -> bool:
        """False only when no state.json can have changed since the last pass that looked at them.

        A write in tmp/ sets its mtime to the kernel's coarse clock, so a later
        write within the same tick leaves the stamp as it was. An unchanged
        stamp is therefore trusted only if, when it was taken, it was already
        older than MTIME_MARGIN: every write sharing it came before that pass,
        which looked at every state.json after taking it. A filesystem whose
        directory mtimes never move (or a clock far off) costs at most
        FULL_CHECK_SECONDS of delay, never a change missed for good.
        """
        try:
            st = os.stat(self.spool.tmp)
            stamp = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = ()
        seen, was_old = self._tmp_seen
        if stamp and stamp == seen and was_old and abs(now - self._full_check_at) < FULL_CHECK_SECONDS:
            return False
        self._tmp_seen = (stamp, bool(stamp) and now - st.st_mtime_ns / 1e9 > MTIME_MARGIN)
        self._full_check_at = now
        return True

    def _bump_if_changed(self, job: Row) -> None:
        shown = job.shown()
        if job.last_shown != shown or job.last_progress != job.progress:
            self.seq += 1
            job.seq = self.seq
            if job.last_shown != shown:
                job.last_shown, job.row_seq = shown, self.seq
            job.last_progress = job.progress

    def _scan_runs(self, now: float) -> None:
        try:
            mtime = os.stat(self.spool.runs).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._runs_mtime:
            return
        self._runs_mtime = mtime
        present = set()
        with os.scandir(self.spool.runs) as it:
            for entry in it:
                if not SERVICE_ID_RE.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                    continue
                present.add(entry.name)
                job = self.jobs.get(entry.name)
                if job is None or job.removed or job.state == SUBMITTED:
                    self._add(ServiceId(entry.name), True, now)
        for sid in self.jobs.keys() - present:
            job = self.jobs[sid]
            if job.state != SUBMITTED and not job.removed:
                self._remove(job, now)
        for sid in [s for s in self.problems if s not in present]:  # an unreadable run that went away
            if not os.path.exists(self.spool.files(ServiceId(sid)).incoming):
                del self.problems[sid]

    def _scan_incoming(self, now: float) -> None:
        try:
            names = os.listdir(self.spool.incoming)
        except FileNotFoundError:
            return
        waiting = set()
        for name in names:
            sid = name[:-5] if name.endswith(".json") else ""
            if not SERVICE_ID_RE.fullmatch(sid):
                continue
            waiting.add(sid)
            if sid not in self.jobs or self.jobs[sid].removed:
                self._add(ServiceId(sid), False, now)
        for sid in self._hot - waiting:  # claimed (the run appears) or rejected (it goes)
            job = self.jobs[sid]
            if job.state == SUBMITTED and not job.removed:
                if os.path.isdir(self.run_files(job).run):
                    self._load_state(job, now)
                else:
                    self._remove(job, now)

    def _new_row(self, sid: ServiceId, claimed: bool) -> Row | None:
        """A row from the spec (runs/<sid>/spec.json if claimed, else incoming/); None if unreadable."""
        files = self.spool.files(sid)
        if self.definitions is None:
            row = self.row_class(sid, "", None, None, None, {})
        else:
            try:
                spec = JobSpec.parse(read_json(files.spec if claimed else files.incoming), self.definitions)
            except FileNotFoundError:
                return None  # claimed or removed meanwhile: the next pass sees where it went
            except SpecError as e:
                if self.problems.get(sid) != str(e):
                    log.warning("spec_unreadable", service_id=sid, error=str(e))
                self.problems[sid] = str(e)
                return None
            row = self.row_class(sid, spec.job, spec.owner.get("project"), spec.owner.get("username"),
                                 spec.submitted_at, spec.inputs, spec)
        row.files = files
        return row

    def _add(self, sid: ServiceId, claimed: bool, now: float) -> None:
        job = self._new_row(sid, claimed)
        if job is None:
            return
        self.problems.pop(sid, None)
        job.turn = self._added % PROGRESS_EVERY
        self._added += 1
        old = self.jobs.get(sid)
        self._replaced(job, old)
        self.jobs[sid] = job
        self._tombstones.pop(sid, None)
        if old is None:
            self._cold.append(sid)
        self._hot.add(sid)
        if os.path.isdir(job.files.run):
            self._load_state(job, now)

    def _load_state(self, job: Row, now: float) -> None:
        path = self.run_files(job).state
        stamp = _stamp(path)
        if stamp is None or stamp == job.stamp:
            return
        try:
            rs = RunState.from_dict(read_json(path))
        except FileNotFoundError:
            return
        except SpecError as e:
            if self.problems.get(job.sid) != str(e):
                log.warning("state_unreadable", service_id=job.sid, error=str(e))
            self.problems[job.sid] = str(e)
            return
        self.problems.pop(job.sid, None)
        job.stamp = stamp
        if rs.attempt != job.attempt:
            self._attempt_changed(job)
        job.run = rs
        job.job = job.job or rs.job
        job.state, job.reason, job.attempt = rs.state.value, rs.reason, rs.attempt
        job.executor, job.executor_id = rs.executor, rs.executor_id
        job.pid, job.exit_code, job.signal = rs.pid, rs.exit_code, rs.signal
        job.queued_at, job.started_at, job.finished_at = rs.queued_at, rs.started_at, rs.finished_at
        job.spent = spent(rs)
        job.usage = total(s.usage for s in job.spent)
        if rs.state not in ACTIVE and rs.state not in TERMINAL:  # a stopping job shows how far it got
            job.progress = None
        elif rs.state is JobState.SUCCEEDED or not job.progress_stamp:
            self._read_progress(job, now)  # else (FAILED, ABORTED) keep the last progress seen: how far it got

    def _read_progress(self, job: Row, now: float) -> None:
        attempt, path = job.progress_path
        if attempt != job.attempt:
            d = None if self.definitions is None else self.definitions.get(job.job)
            path = None if d is None else self.run_files(job).attempt(job.attempt).progress(d)
            job.progress_path = (job.attempt, path)
        stamp = None if path is None else _stamp(path)
        if stamp is None or stamp == job.progress_stamp:
            return  # unchanged: a stat, not a read, for each running job it looks at
        job.progress_stamp = stamp
        pct = read_percent(path)
        if pct is None:
            return
        job.progress = pct
        self._progress_seen(job, now)

    # -- what a subclass may add (the console's progress samples) -------------------
    def _replaced(self, new: Row, old: Row | None) -> None:
        """A row is (re)built from its spec; old is the row it replaces, if any."""

    def _attempt_changed(self, job: Row) -> None:
        """state.json names another attempt than the row did."""

    def _progress_seen(self, job: Row, now: float) -> None:
        """A new percentage was read into job.progress."""

    def _read_queue(self) -> None:
        stamp = _stamp(self.spool.queue_file)
        if stamp is None:
            self._queue = {}
        elif stamp != self._queue_stamp:
            self._queue_stamp = stamp
            self._queue = {sid: i + 1 for i, sid in enumerate(self.spool.read_queue()) if isinstance(sid, str)}

    def _remove(self, job: Row, now: float) -> None:
        job.removed, job.removed_at = True, now
        self._tombstones[job.sid] = now
        self._hot.add(job.sid)  # its last event: removed
        self.problems.pop(job.sid, None)

    def _prune(self, now: float) -> None:
        """Forget tombstones after TOMBSTONE_SECONDS; a reader behind that must start again from the rows."""
        for sid in [s for s, t in self._tombstones.items() if now - t > TOMBSTONE_SECONDS]:
            del self._tombstones[sid]
            job = self.jobs.get(sid)
            if job is not None and job.removed:
                self.floor = max(self.floor, self.jobs.pop(sid).seq)


def _stamp(path) -> tuple | None:
    """What identifies a file's content without reading it: (inode, mtime, size); None if it cannot be stat()ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)

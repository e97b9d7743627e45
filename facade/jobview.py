"""What the spool says about one job, read the way the polling hot path needs it.

Only the few files a state needs are opened: spec.json (owner and auth URL),
state.json, then either queue.json (queued), the progress file and a tail of
stdout.log (running), the output files (succeeded) or a tail of stderr.log
(failed). Nothing here writes except `remember_page`, which keeps the digest
of the last page sent to each poller in runs/<sid>/facade.json (`SentPages`;
the façade is its only writer). The poll path passes a facade.readcache
ReadCache: a file whose identity has not changed since the last read is not
read again.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

import msgspec

from jobs.definitions import Definition
from jobs.errors import SpecError
from jobs.progress import read_percent
from jobs.reasons import describe, under_way
from jobs.runfiles import RunFiles
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool, read_bytes, read_json, storage_refused, tail_lines
from jobs.outputs import outputs, read_output, xml_safe  # noqa: F401  (the façade reads them from here)
from jobs.states import JobState
from jobs.usage import Usage
from jobs.usagereport import spent, total

from .errors import InternalError, UnknownServiceID
from .readcache import ReadCache
from .status_page import PageView

TAIL_LINES = 10
MAX_VIEWS = 16384  # running_view's memo: views remembered per worker, all forgotten at once when full
_HEX = re.compile("[0-9a-f]{1,64}")  # a poller or page digest in facade.json
_decode_json = msgspec.json.Decoder().decode  # facade.json, every poll: a quarter of json.loads on its padded 1 KiB


class SpecCache:
    """Parsed specs of this worker, keyed by the file's identity: a spec never changes once written."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._specs: dict[str, tuple[tuple[int, int, int], JobSpec]] = {}

    def get(self, path: str, definitions: dict[str, Definition]) -> JobSpec:
        st = os.stat(path)  # FileNotFoundError: not there
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._specs.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        spec = JobSpec.parse(read_json(path), definitions)
        if len(self._specs) >= self.size:
            self._specs.clear()
        self._specs[path] = (key, spec)
        return spec


def load_spec(files: RunFiles, definitions: dict[str, Definition], definition: Definition,
              cache: SpecCache) -> JobSpec:
    """The job's spec wherever it is now; UnknownServiceID if there is none for this service.

    runs/ first (the common case), then incoming/, then runs/ again: the
    supervisor claims by renaming incoming/<sid>.json to runs/<sid>/spec.json,
    so one of the three reads sees it.
    """
    sid = files.sid
    for path in (files.spec, files.incoming, files.spec):
        try:
            spec = cache.get(path, definitions)
        except FileNotFoundError:
            continue
        except SpecError as e:
            raise InternalError(f"the spec of job {sid} is unreadable or invalid ({e})") from None
        if spec.job != definition.name or spec.service_id != sid:
            break
        return spec
    raise UnknownServiceID(
        f"no {definition.service} job with serviceID {sid!r}: it was never started here "
        "(call the start method first) or it has been removed after its retention period")


def read_run(files: RunFiles, cache: ReadCache | None = None) -> RunState | None:
    """The supervisor's state of the run, or None while the spec waits in incoming/.

    Decoded straight from the bytes (the poll path's read); a file that does
    not decode so is read again through the json module, which also takes
    NaN and Infinity and names what is wrong in the words it always did.
    The RunState may be shared with other polls (the cache): never change it.
    """
    try:
        return _decode_state(files.state) if cache is None else cache.read(files.state, _decode_state)
    except SpecError as e:
        raise InternalError(f"the state file of job {files.sid} is unreadable or invalid ({e})") from None


def _decode_state(path: str) -> RunState | None:
    try:
        return RunState.from_bytes(read_bytes(path))
    except FileNotFoundError:
        return None
    except SpecError:
        pass
    try:
        return RunState.from_dict(read_json(path))
    except FileNotFoundError:
        return None


def log_tail(path: str) -> tuple[str, ...]:
    """The last TAIL_LINES lines of a log, each xml_safe (none when it is missing or odd)."""
    return safe_lines(tail_lines(path, TAIL_LINES))


def safe_lines(lines: list[str]) -> tuple[str, ...]:
    """Each line xml_safe, in one pass: lines cut by splitlines() hold no newline, and xml_safe adds none."""
    return tuple(xml_safe("\n".join(lines)).split("\n")) if lines else ()


def placeholders(definition: Definition) -> tuple[str, ...]:
    return tuple(o.placeholder for o in definition.outputs)


def used(run: RunState | None) -> Usage | None:
    """What the run's ended attempts used, summed (None: no attempt has a record yet)."""
    if run is None or (run.usage is None and not run.history):  # a first attempt under way: nothing to sum
        return None
    return total(s.usage for s in spent(run))


def queued_view(spool: Spool, definition: Definition, sid: str, run: RunState | None,
                headline: str | None = None, queue: Sequence[str] | None = None) -> PageView:
    """The page of a job not running yet; `queue` is queue.json's list when the caller has it at hand."""
    if queue is None:
        queue = spool.read_queue()
    ahead = queue.index(sid) if sid in queue else len(queue)
    if run is None:
        detail = "The job has been accepted and is being handed to the scheduler."
    else:  # the supervisor's reason only when it says more than the headline (e.g. a retry delay)
        detail = "" if run.reason in ("", "waiting for a free slot") else run.reason
    return PageView(
        state="queued", title=definition.service, service_id=sid,
        headline=headline or (f"Waiting for a free slot, {ahead} ahead" if ahead else "Waiting for a free slot"),
        detail=detail, percent=0.0 if headline else None, ahead=ahead,
        attempt=run.attempt if run else 1, usage=used(run),
    )


def running_view(files: RunFiles, definition: Definition, run: RunState, cache: ReadCache,
                 memo: dict[str, tuple] | None = None) -> PageView:
    """The page of a running (or stopping) job; with `memo` (serviceID -> the last view and what it was made
    of), the same view object while the cache hands back the same state, percentage and lines."""
    attempt = files.attempt(run.attempt)
    percent = None
    if definition.progress_file:
        percent = cache.read(attempt.progress(definition), read_percent)
    lines = cache.read(attempt.stdout, log_tail)
    last = memo.get(files.sid) if memo is not None else None
    if last is not None and last[0] is run and last[1] is definition and last[2] == percent and last[3] is lines:
        return last[4]
    view = _running_view(files.sid, definition, run, percent, lines)
    if memo is not None:
        if len(memo) >= MAX_VIEWS and files.sid not in memo:
            memo.clear()
        memo[files.sid] = (run, definition, percent, lines, view)
    return view


def _running_view(sid: str, definition: Definition, run: RunState, percent: float | None,
                  lines: tuple[str, ...]) -> PageView:
    stopping = run.state is JobState.STOPPING
    return PageView(
        state="stopping" if stopping else "running", title=definition.service, service_id=sid,
        headline=under_way(run.stop_reason or run.reason) if stopping
        else (f"Running, {percent:.0f} % done" if percent is not None else "Running"),
        # a job handed to a cluster but not started there yet: say why it waits
        detail=run.reason if run.started_at is None and not stopping else "",
        percent=percent, started_at=run.started_at, attempt=run.attempt,
        log_title="Latest output",
        log_lines=lines,
        usage=used(run), queue_wait_s=None if run.started_at is None or run.queued_at is None
        else max(0.0, run.started_at - run.queued_at),
    )


def ended_view(files: RunFiles, definition: Definition, run: RunState, cache: ReadCache) -> PageView:
    attempt = files.attempt(run.attempt)
    lines = cache.read(attempt.stderr, log_tail)
    title = "Last lines of the error output"
    if not lines:
        lines = cache.read(attempt.stdout, log_tail)
        title = "Last lines of the output"
    aborted = run.state is JobState.ABORTED
    return PageView(
        state="aborted" if aborted else "failed", title=definition.service, service_id=files.sid,
        headline="The job was aborted" if aborted else "The job failed",
        detail=describe(run.reason), started_at=run.started_at,
        finished_at=run.finished_at if run.started_at is not None else None,
        attempt=run.attempt, exit_code=run.exit_code, signal=run.signal,
        stopped=run.stopped_how(definition.abort_grace_s) or "",
        log_title=title, log_lines=lines, usage=used(run),
    )


def failure_message(sid: str, view: PageView) -> str:
    """The JobFailed faultstring: what ended the job on its first line, then the last lines it wrote."""
    what = "was aborted" if view.state == "aborted" else "failed"
    parts = [f"job {sid} {what}: {view.detail or 'no reason recorded'}"]
    if view.exit_code is not None and not re.search(rf"\bexit code {view.exit_code}\b", parts[0]):  # said already?
        parts.append(f"exit code {view.exit_code}")
    if view.signal is not None:
        parts.append(f"signal {view.signal}")
    text = "; ".join(parts)
    if view.log_lines:
        text += f"\n{view.log_title}:\n" + "\n".join(view.log_lines[-5:])
    return xml_safe(text)


def poller(sid: str, token: str) -> str:
    """Who is polling, as facade.json knows it: a short keyed hash of the session token, never the token.

    One session token is one poller: a workflow manager polls a job with the
    token it started it with, and one that restarts logs in again (a new
    token), so it is a new poller and gets the whole page first.
    """
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8,
                           key=sid.encode("utf-8", "surrogatepass")[:64]).hexdigest()


class SentPages:
    """runs/<sid>/facade.json: the digest of the last page sent to each of the last MAX_POLLERS pollers.

    A poller is told UNCHANGED (or, after the failure page, JobFailed) only
    when its own last page has the same digest, so a second poller, or a
    workflow manager that logged in again, gets the whole page first. The
    record is padded to HINT_BYTES, so Spool.write_hint overwrites it in place
    (one pwrite per page sent); the poller least recently sent a page drops
    out first, and only costs that poller one page sent again.
    """

    MAX_POLLERS = 8
    HINT_BYTES = 1024

    def __init__(self, entries: list | None = None):
        self.entries = entries or []  # [poller, page digest, sent_at] as read, the most recent first; unchecked

    @classmethod
    def read(cls, files: RunFiles, cache: ReadCache | None = None) -> SentPages:
        """What facade.json says; nothing (every page sent whole) when it is missing, odd or from an older façade.

        The SentPages may be shared with other polls (the cache): never change it."""
        return _read_sent(files.facade_hint) if cache is None else cache.read(files.facade_hint, _read_sent)

    def last(self, poller_id: str) -> str | None:
        """The digest of the last page sent to this poller, if facade.json remembers one (checked only here:
        the poll path reads this file on every poll)."""
        for entry in self.entries:
            if isinstance(entry, list) and len(entry) == 3 and entry[0] == poller_id:
                return entry[1] if isinstance(entry[1], str) else None
        return None

    def record(self, poller_id: str, digest: str, now: float) -> bytes:
        """facade.json with this poller's page first, the least recent poller dropped beyond MAX_POLLERS."""
        kept = [(poller_id, digest, now)] + [
            (e[0], e[1], float(e[2])) for e in self.entries if _sent_entry(e) and e[0] != poller_id]
        del kept[self.MAX_POLLERS:]
        while True:
            data = b'{"sent": [%s]}' % b", ".join(
                b'["%s", "%s", %.6f]' % (p.encode(), d.encode(), t) for p, d, t in kept)
            if len(data) < self.HINT_BYTES or len(kept) == 1:
                return data.ljust(self.HINT_BYTES - 1) + b"\n"
            kept.pop()


def _read_sent(path: str) -> SentPages:
    try:
        sent = _decode_json(read_bytes(path, SentPages.HINT_BYTES)).get("sent")
    except (FileNotFoundError, SpecError, msgspec.DecodeError, AttributeError):
        return SentPages()  # missing, odd, too long or from an older façade: every page is sent whole
    return SentPages(sent[:SentPages.MAX_POLLERS] if isinstance(sent, list) else None)


def _sent_entry(entry: object) -> bool:
    return (isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) and _HEX.fullmatch(x)
                                                              for x in entry[:2])
            and isinstance(entry[2], (int, float)))


def remember_page(spool: Spool, files: RunFiles, record: bytes) -> None:
    """Write facade.json (a SentPages record) while the run directory exists.

    A hint is free to lose (the next page is sent whole): a full or read-only
    disk must not cost the caller its answer.
    """
    if os.path.isdir(files.run):
        try:
            spool.write_hint(files.facade_hint, record)
        except OSError as e:
            if storage_refused(e) is None:
                raise

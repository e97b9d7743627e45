"""What the spool says about one job, read the way the polling hot path needs it.

Only the few files a state needs are opened: spec.json (owner and auth URL),
state.json, then either queue.json (queued), the progress file and a tail of
stdout.log (running), the output files (succeeded) or a tail of stderr.log
(failed). Nothing here writes except `remember_page`, which keeps the digest
of the last page sent in runs/<sid>/facade.json (the façade is its only writer).
"""
from __future__ import annotations

import json
import os
import re

from jobs.definitions import Definition
from jobs.errors import SpecError
from jobs.progress import read_percent
from jobs.reasons import describe, under_way
from jobs.runfiles import RunFiles
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import NotRegularFile, Spool, open_regular, read_json, storage_refused, tail_lines
from jobs.states import JobState

from .errors import InternalError, UnknownServiceID
from .status_page import PageView

TAIL_LINES = 10
# XML 1.0 cannot carry these; a program's output must not break the SOAP response.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


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


def read_run(files: RunFiles) -> RunState | None:
    """The supervisor's state of the run, or None while the spec waits in incoming/."""
    try:
        return RunState.from_dict(read_json(files.state))
    except FileNotFoundError:
        return None
    except SpecError as e:
        raise InternalError(f"the state file of job {files.sid} is unreadable or invalid ({e})") from None


def read_output(path: str, max_bytes: int, placeholder: str) -> str:
    """An output file's text: at most max_bytes, one trailing newline stripped."""
    try:
        with open_regular(path) as f:
            data = f.read(max_bytes)
    except (FileNotFoundError, NotRegularFile):
        return placeholder
    text = data.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return xml_safe(text)


def outputs(files: RunFiles, definition: Definition, run: RunState) -> tuple[str, ...]:
    paths = files.attempt(run.attempt).outputs(definition)
    return tuple(read_output(path, o.max_bytes, o.placeholder) for path, o in zip(paths, definition.outputs))


def placeholders(definition: Definition) -> tuple[str, ...]:
    return tuple(o.placeholder for o in definition.outputs)


def queued_view(spool: Spool, definition: Definition, sid: str, run: RunState | None,
                headline: str | None = None) -> PageView:
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
        attempt=run.attempt if run else 1,
    )


def running_view(files: RunFiles, definition: Definition, run: RunState) -> PageView:
    attempt = files.attempt(run.attempt)
    percent = None
    if definition.progress_file:
        percent = read_percent(attempt.progress(definition))
    stopping = run.state is JobState.STOPPING
    return PageView(
        state="stopping" if stopping else "running", title=definition.service, service_id=files.sid,
        headline=under_way(run.stop_reason or run.reason) if stopping
        else (f"Running, {percent:.0f} % done" if percent is not None else "Running"),
        # a job handed to a cluster but not started there yet: say why it waits
        detail=run.reason if run.started_at is None and not stopping else "",
        percent=percent, started_at=run.started_at, attempt=run.attempt,
        log_title="Latest output",
        log_lines=tuple(xml_safe(x) for x in tail_lines(attempt.stdout, TAIL_LINES)),
    )


def ended_view(files: RunFiles, definition: Definition, run: RunState) -> PageView:
    attempt = files.attempt(run.attempt)
    lines = tuple(tail_lines(attempt.stderr, TAIL_LINES))
    title = "Last lines of the error output"
    if not lines:
        lines = tuple(tail_lines(attempt.stdout, TAIL_LINES))
        title = "Last lines of the output"
    aborted = run.state is JobState.ABORTED
    return PageView(
        state="aborted" if aborted else "failed", title=definition.service, service_id=files.sid,
        headline="The job was aborted" if aborted else "The job failed",
        detail=describe(run.reason), started_at=run.started_at,
        finished_at=run.finished_at if run.started_at is not None else None,
        attempt=run.attempt, exit_code=run.exit_code, signal=run.signal,
        stopped=run.stopped_how(definition.abort_grace_s) or "",
        log_title=title, log_lines=tuple(xml_safe(x) for x in lines),
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


def last_page(files: RunFiles) -> str | None:
    try:
        with open_regular(files.facade_hint) as f:
            return json.loads(f.read(4096)).get("page")
    except (FileNotFoundError, NotRegularFile, ValueError, AttributeError):
        return None


def remember_page(spool: Spool, files: RunFiles, digest: str, now: float) -> None:
    """facade.json: a fixed-width record, so that Spool.write_hint can overwrite it in place.

    A hint is free to lose (the next page is sent whole): a full or read-only
    disk must not cost the caller its answer.
    """
    if os.path.isdir(files.run):
        try:
            spool.write_hint(files.facade_hint, b'{"page": "%s", "sent_at": %.6f}\n' % (digest.encode(), now))
        except OSError as e:
            if storage_refused(e) is None:
                raise

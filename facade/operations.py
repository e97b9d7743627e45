"""The four protocol operations in plain Python: validate, read or drop a file, answer.

No spyne here (facade.service wraps these), no process and no job state: the
spool is the only source of truth, so any worker can answer any call. Every
error is a `facade.errors.FacadeError` that becomes a declared SOAP fault.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import structlog

from jobs import submit as submitting
from jobs.definitions import Definition
from jobs.runfiles import RunFiles
from jobs.spec import JobSpec
from jobs.spool import NotRegularFile, ServiceId, Spool, open_regular
from jobs.states import JobState

from . import jobview
from .auth import Authenticator, ExtraParameters, Identity
from .readcache import ReadCache
from .errors import (FacadeError, InvalidRequest, JobFailed, JobNotActive, ServiceUnavailable,
                     TokenValidationFailed, WrongProject)
from .status_page import encode, render

COMPLETED = "COMPLETED"
UNCHANGED = "UNCHANGED"
MAX_MESSAGE = 64 * 1024
ABORT_POLL_SECONDS = 0.05
MAX_RUN_FILES = 16384  # RunFiles remembered per worker (~1 KiB each); all forgotten at once when full

log = structlog.get_logger("facade")  # lazy: configured later, by the entry point


def checked_service_id(value: object) -> ServiceId:
    try:
        return submitting.checked_service_id(value)
    except submitting.SubmitError as e:
        raise InvalidRequest(e.message) from None


class Operations:
    """The protocol's operations over one spool, for any job definition."""

    def __init__(self, spool: Spool, definitions: dict[str, Definition], auth: Authenticator,
                 abort_wait_seconds: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.spool = spool
        self.definitions = definitions
        self.auth = auth
        self.abort_wait_seconds = abort_wait_seconds
        self.clock = clock
        self.sleep = sleep
        self.specs = jobview.SpecCache()
        self.reads = ReadCache()  # the run files a poll reads, reused while unchanged
        self._views: dict[str, tuple] = {}  # jobview.running_view's memo: an unchanged job's page built once
        self._read_queue = lambda _path: tuple(spool.read_queue())  # one object: ReadCache keys on the reader
        self._files: dict[str, RunFiles] = {}  # serviceID -> its RunFiles: a poll's ~14 path joins done once

    # -- start ---------------------------------------------------------------
    def start(self, d: Definition, service_id: object, token: object, extra: object,
              raw_inputs: dict[str, Any]) -> tuple[str, ...]:
        """Submit a job (or, on a retry, report the existing one); never waits for it."""
        sid = checked_service_id(service_id)
        auth_url = ExtraParameters(extra).auth_url()
        ident = self.auth.identify(token, auth_url)
        try:
            done = submitting.submit(
                self.spool, d, sid, raw_inputs, {"username": ident.username, "project": ident.project}, auth_url,
                known_spec=lambda files: jobview.load_spec(files, self.definitions, d, self.specs))
        except submitting.SubmitError as e:
            if e.kind != "storage":
                raise InvalidRequest(e.message) from None
            log.warning("storage_refused", errno=e.errno_name, error=str(e.__cause__))
            raise ServiceUnavailable(e.message) from None
        if not done.new:
            return self._retried_start(d, self.spool.files(sid), done.spec, token, ident, auth_url)
        log.info("job_submitted", job=d.name, inputs=done.spec.inputs, username=ident.username,
                 project=ident.project)
        view = jobview.queued_view(self.spool, d, sid, None, headline="Job accepted", queue=self._queue())
        return (encode(render(view, self.clock())),) + jobview.placeholders(d)

    def _retried_start(self, d: Definition, files: RunFiles, spec: JobSpec, token: object, ident: Identity,
                       auth_url: str):
        if spec.auth_url != auth_url:
            ident = self._identify(spec, token)
        self._check_project(spec, files.sid, ident)
        log.info("start_repeated", job=d.name)
        return self._answer(d, files, record=False)

    # -- getServiceStatus ------------------------------------------------------
    def status(self, d: Definition, service_id: object, token: object) -> tuple[str, ...]:
        files = self._authorized(d, service_id, token)
        return self._answer(d, files, record=True, poller=jobview.poller(files.sid, token))

    def _answer(self, d: Definition, files: RunFiles, record: bool, poller: str = "") -> tuple[str, ...]:
        """COMPLETED + outputs, UNCHANGED, a status page, or JobFailed (see facade.service).

        With `record`, UNCHANGED and JobFailed only for a poller whose own last
        page was this one (jobview.SentPages).
        """
        sid = files.sid
        run = jobview.read_run(files, self.reads)
        if run is not None and run.state is JobState.SUCCEEDED:
            return (COMPLETED,) + jobview.outputs(files, d, run)
        if run is None or run.state is JobState.QUEUED:
            view = jobview.queued_view(self.spool, d, sid, run, queue=self._queue())
        elif run.state in (JobState.RUNNING, JobState.STOPPING):
            view = jobview.running_view(files, d, run, self.reads, self._views)
        else:
            view = jobview.ended_view(files, d, run, self.reads)
        rest = jobview.placeholders(d)
        if record and run is not None:
            digest = view.digest()
            sent = jobview.SentPages.read(files, self.reads)
            if sent.last(poller) == digest:
                if view.state in ("failed", "aborted"):
                    log.info("job_failed_fault", state=view.state, reason=view.detail)
                    raise JobFailed(jobview.failure_message(sid, view),
                                    {"state": run.state.value, "reason": jobview.xml_safe(view.detail)})
                return (UNCHANGED,) + rest
            now = self.clock()
            page = encode(render(view, now))
            jobview.remember_page(self.spool, files, sent.record(poller, digest, now))
            return (page,) + rest
        return (encode(render(view, self.clock())),) + rest

    def _queue(self) -> tuple[str, ...]:
        """queue.json's list, parsed again only when the file changed (it may hold 10,000s of serviceIDs)."""
        return self.reads.read(self.spool.queue_file, self._read_queue)

    # -- abortService ---------------------------------------------------------
    def abort(self, d: Definition, service_id: object, token: object) -> bool:
        """Ask the supervisor to kill the job; True only once it is ABORTED."""
        files = self._authorized(d, service_id, token)
        sid = files.sid
        deadline = time.monotonic() + self.abort_wait_seconds
        run = jobview.read_run(files)
        while run is None and time.monotonic() < deadline:
            # Not claimed yet: the supervisor refuses a kill for a serviceID it does not know.
            self.sleep(ABORT_POLL_SECONDS)
            run = jobview.read_run(files)
        if run is None:
            log.warning("abort_unclaimed", waited=self.abort_wait_seconds)
            return False
        if run.state in (JobState.SUCCEEDED, JobState.FAILED):
            return False
        if run.state is JobState.ABORTED:
            return True
        self.spool.send_command(sid, "kill", origin="facade")
        log.info("abort_requested", state=run.state.value)
        while True:
            run = jobview.read_run(files)
            if run is not None and run.terminal:
                log.info("abort_result", state=run.state.value)
                return run.state is JobState.ABORTED
            if time.monotonic() >= deadline:
                log.warning("abort_timeout", state=run.state.value if run else None,
                            waited=self.abort_wait_seconds)
                return False
            self.sleep(ABORT_POLL_SECONDS)

    # -- notifyService --------------------------------------------------------
    def notify(self, d: Definition, service_id: object, token: object, message: object) -> str:
        """Append the message to the job's notifications file for the program to read."""
        sid = checked_service_id(service_id)
        if not isinstance(message, str):
            raise InvalidRequest("message: required")
        if len(message) > MAX_MESSAGE:
            raise InvalidRequest(f"message: longer than {MAX_MESSAGE} characters")
        files = self._authorized(d, sid, token)
        run = jobview.read_run(files)
        if run is not None and run.terminal:
            raise JobNotActive(f"job {sid} has already ended ({run.state.value}); the message was not delivered")
        if not os.path.isdir(files.run):
            raise JobNotActive(f"job {sid} has not been picked up by the supervisor yet; "
                               "the message was not delivered, try again in a moment")
        try:
            self.spool.append_notification(sid, message)
        except NotRegularFile as e:
            log.error("notifications_file_odd", error=str(e))
            raise ServiceUnavailable(f"the message was not delivered: the job's {e}; the operator must "
                                     "remove it") from None
        count = _count_lines(files.notifications)
        log.info("notification_delivered", number=count)
        return f"message {count} delivered to {sid}"

    # -- shared checks -------------------------------------------------------
    def _authorized(self, d: Definition, service_id: object, token: object) -> RunFiles:
        """The job's files, once the token is valid for the job's auth URL and project.

        The token comes first, as in the reference: a caller whose token no
        allowed authentication manager accepts gets the same fault whether
        the serviceID exists or not (an unknown or unreadable job is only
        named once the token is valid somewhere).
        """
        files = self._run_files(service_id)
        try:
            spec = jobview.load_spec(files, self.definitions, d, self.specs)
        except FacadeError:
            self.auth.identify(token, None)
            raise
        self._check_project(spec, files.sid, self._identify(spec, token))
        return files

    def _run_files(self, service_id: object) -> RunFiles:
        """The RunFiles of a checked serviceID, built once per worker (only checked ones are remembered)."""
        files = self._files.get(service_id) if type(service_id) is str else None
        if files is None:
            files = self.spool.files(checked_service_id(service_id))
            if len(self._files) >= MAX_RUN_FILES:
                self._files = {}
            self._files[str(service_id)] = files
        return files

    def _identify(self, spec: JobSpec, token: object) -> Identity:
        """The token's owner by the job's recorded authentication manager; what is odd about that, only afterwards."""
        if spec.auth_url is None:
            self.auth.identify(token, None)
            raise TokenValidationFailed("this job was not submitted through SOAP; no authentication manager is on record for it")
        try:
            return self.auth.identify(token, spec.auth_url)
        except InvalidRequest:  # the recorded manager is no longer in AUTH_MANAGERS
            self.auth.identify(token, None)
            raise

    @staticmethod
    def _check_project(spec: JobSpec, sid: str, ident: Identity) -> None:
        owner = spec.owner.get("project")
        if owner != ident.project:
            raise WrongProject(
                f"job {sid} belongs to another project than this session token's "
                f"({ident.project!r}); log in to the job's project to see it")


def _count_lines(path) -> int:
    count = 0
    with open_regular(path) as f:
        while chunk := f.read(1 << 16):
            count += chunk.count(b"\n")
    return count


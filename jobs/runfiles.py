"""Where every file of one run lives: the one module that spells a run directory's layout.

    runs/<sid>/                 the supervisor's (mode 0750: the job's user cannot enter)
      spec.json, state.json, notifications.txt, facade.json
      attempts/<n>/             the supervisor's: stdout.log, stderr.log, exit.json, usage.json
        work/                   the program's working directory, owned by the job's user:
                                <the definition's files> (status, result...)

A confined program runs as another user in work/ and reaches nothing else of
the spool: the shim holds the logs as descriptors and hands it
notifications.txt as descriptor 3 (/dev/fd/3).

Every reader and writer (supervisor, executors, shim, jobctl, façade) takes
its paths from here. The paths are plain strings built once per object: the
façade builds one per poll, where pathlib would cost more than the reads.
Nothing is validated here: a RunFiles is obtained through jobs.spool's
Spool.files(), which checks the serviceID (once: a jobs.spool.ServiceId is
not checked again), and a definition's file names were checked when it was
loaded. This module imports nothing from the project, so anything may use it.
"""
from __future__ import annotations

import os

RUNS = "runs"
SPEC = "spec.json"
STATE = "state.json"
NOTIFICATIONS = "notifications.txt"
FACADE_HINT = "facade.json"
ATTEMPTS = "attempts"
EXIT = "exit.json"
STDOUT = "stdout.log"
STDERR = "stderr.log"
WORK = "work"
NOTIFICATIONS_FD = 3  # the shim opens notifications.txt (read-only) as the program's descriptor 3
NOTIFICATIONS_FD_PATH = f"/dev/fd/{NOTIFICATIONS_FD}"
USAGE_HINT = "usage.json"  # live, not durable: what a running attempt used so far (the supervisor rewrites it)
# a definition may not name these as its own files
RESERVED_FILES = frozenset({EXIT, STDOUT, STDERR, NOTIFICATIONS, SPEC, STATE, FACADE_HINT, WORK, USAGE_HINT})


class AttemptFiles:
    """The files of one attempt: its directory, the shim's exit record, the logs, the program's work/ and its files."""
    __slots__ = ("number", "dir", "exit", "stdout", "stderr", "work", "usage_hint")

    def __init__(self, attempts: str, number: int):
        self.number = int(number)
        self.dir = os.path.join(attempts, str(self.number))
        self.exit = os.path.join(self.dir, EXIT)
        self.stdout = os.path.join(self.dir, STDOUT)
        self.stderr = os.path.join(self.dir, STDERR)
        self.work = os.path.join(self.dir, WORK)
        self.usage_hint = os.path.join(self.dir, USAGE_HINT)

    def file(self, definition, key: str) -> str:
        """The definition's file `key` (jobs.definitions.Definition.files) in this attempt's work/."""
        return os.path.join(self.work, definition.files[key])

    def files(self, definition) -> dict[str, str]:
        """Every file the definition names, by key."""
        return {key: os.path.join(self.work, name) for key, name in definition.files.items()}

    def progress(self, definition) -> str | None:
        """The definition's progress file, if it has one."""
        return None if definition.progress_file is None else self.file(definition, definition.progress_file)

    def outputs(self, definition) -> tuple[str, ...]:
        """The file of each of the definition's outputs, in their order."""
        return tuple(self.file(definition, o.file) for o in definition.outputs)


class RunFiles:
    """The files of one run. `spool` is a jobs.spool.Spool (or anything with `runs` and `incoming`)."""
    __slots__ = ("sid", "run", "spec", "state", "notifications", "facade_hint", "attempts", "incoming", "_attempt")

    def __init__(self, spool, sid: str):
        self.sid = sid
        self.run = os.path.join(spool.runs, sid)
        self.spec = os.path.join(self.run, SPEC)
        self.state = os.path.join(self.run, STATE)
        self.notifications = os.path.join(self.run, NOTIFICATIONS)
        self.facade_hint = os.path.join(self.run, FACADE_HINT)
        self.attempts = os.path.join(self.run, ATTEMPTS)
        self.incoming = os.path.join(spool.incoming, sid + ".json")  # the spec until the supervisor claims it
        self._attempt: AttemptFiles | None = None

    def attempt(self, number: int) -> AttemptFiles:
        """The files of attempt `number` (the last one asked for is kept: a poller asks for the same one each time)."""
        last = self._attempt
        if last is not None and last.number == number:
            return last
        self._attempt = last = AttemptFiles(self.attempts, number)
        return last

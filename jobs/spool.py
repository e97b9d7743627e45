"""The spool: directory layout, atomic writes and the reads both sides share.

Layout (every file has exactly one writer, see README "Spool layout"; the
paths inside runs/<sid>/ come from jobs/runfiles.py):

    SPOOL/
      tmp/                       staging area of every writer; renamed into place
      incoming/<sid>.json        new job specs             writer: facade / jobctl submit
      commands/<t>-<sid>-<verb>.json operator commands     writer: facade abort / jobctl
      rejected/<name>            bad specs and commands    writer: supervisor
      rejected/<name>.reason     why it was rejected       writer: supervisor
      supervisor.json            daemon pid + heartbeat    writer: supervisor
      queue.json                 QUEUED sids, in dispatch order (fair share)  writer: supervisor
      usage.json                 decayed usage per project (jobs/usagehistory.py)  writer: supervisor
      runs/<sid>/
        spec.json                the accepted spec         writer: supervisor (rename from incoming/)
        state.json               JobState and history      writer: supervisor
        notifications.txt        messages to the program   writer: facade (append, one JSON line each)
        facade.json              hash of the last page sent (UNCHANGED)  writer: facade
        attempts/<n>/
          stdout.log, stderr.log the program's output      writer: the program
          exit.json              exit code / signal        writer: the shim
          <definition files>     e.g. status.txt, result.txt  writer: the program
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

import msgspec

from .errors import SpecError
from .runfiles import RUNS, RunFiles

SERVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
COMMAND_VERBS = ("kill", "restart")
MAX_JSON_BYTES = 64 * 1024
HIGH_FD = 512  # staging descriptors live above this (jobs.spool._high_fd)
# The storage refused a write (full, over quota, read-only, failing, not permitted): a
# condition of the machine that passes, never a reason to die or to fail a job.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})


class ServiceId(str):
    """A serviceID already checked by service_id(): safe as a directory name, never checked again."""
    __slots__ = ()


def service_id(value: object) -> ServiceId:
    """The one check of a serviceID: it becomes a directory name, so only a safe, bounded alphabet passes."""
    if type(value) is ServiceId:
        return value
    if not isinstance(value, str) or not SERVICE_ID_RE.fullmatch(value):
        shown = repr(value)[:60]
        raise SpecError(
            f"serviceID {shown} is invalid: 1-128 characters, letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return ServiceId(value)


validate_service_id = service_id  # the name older callers use


def command_name(sid: str, verb: str, at_ns: int) -> str:
    """The file name of a command in commands/: `<time_ns, 20 digits>-<sid>-<verb>.json` (sorts by time)."""
    return f"{at_ns:020d}-{sid}-{verb}.json"


def parse_command_name(name: str) -> tuple[ServiceId, str] | None:
    """(serviceID, verb) of a command file name written by command_name(); None if it is not one."""
    stamp, dash, rest = name[:20], name[20:21], name[21:]
    if not (stamp.isascii() and stamp.isdigit() and dash == "-" and rest.endswith(".json")):
        return None
    sid, _, verb = rest[:-5].rpartition("-")
    if verb not in COMMAND_VERBS or not SERVICE_ID_RE.fullmatch(sid):
        return None
    return ServiceId(sid), verb


def storage_refused(e: BaseException) -> str | None:
    """The errno name (e.g. "ENOSPC") if e is the storage refusing a write, else None."""
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
        return errno.errorcode[e.errno]
    return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySync:
    """Group commit of one directory's fsync: the threads that changed it share it.

    A writer fsyncs its own file (concurrent fsyncs of files already share the
    filesystem journal's commits), makes its change in the directory (a link),
    then calls durable(). The first caller fsyncs the directory; callers that
    arrive meanwhile wait, and the next fsync covers every one of them: one
    directory fsync per round instead of one per start (issue 20,
    docs/profile-starts.md). A round covers exactly the changes made before it
    began, so no caller returns before an fsync that started after its change
    has ended. A failed round raises in each caller it covered, and only there.
    """

    def __init__(self, path: Path | str, sync: Callable[[Path | str], None] = fsync_dir):
        self.path = path
        self._sync = sync  # the seam: tests count or fail the rounds
        self._cond = threading.Condition()
        self._open = _Round()  # collects the changes made until its fsync begins
        self._running: _Round | None = None

    def durable(self) -> None:
        """Return once the directory has been fsynced after this thread's change; OSError if that failed."""
        with self._cond:
            mine = self._open
            while not mine.done:
                if self._running is not None:
                    self._cond.wait()
                    continue
                lead = self._running = self._open
                self._open = _Round()
                self._cond.release()
                try:
                    self._sync(self.path)
                except BaseException as e:
                    lead.error = e
                    raise
                finally:
                    self._cond.acquire()
                    lead.done, self._running = True, None
                    self._cond.notify_all()
            failed = mine.error
        if failed is not None:
            errno_ = failed.errno if isinstance(failed, OSError) and failed.errno else errno.EIO
            raise OSError(errno_, f"fsync of {self.path} failed: {failed}") from failed


class _Round:
    """One fsync of a DirectorySync: done once it has ended; error if it failed."""
    __slots__ = ("done", "error")

    def __init__(self):
        self.done = False
        self.error: BaseException | None = None


class NotRegularFile(SpecError):
    """A spool path that is a symlink, FIFO, directory, socket or device: it is never read."""


_KINDS = ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "regular file" if stat.S_ISREG(mode) else "unknown")


def _odd(path: Path | str, mode: int | None) -> NotRegularFile:
    return NotRegularFile(f"{Path(path).name}: not a regular file: {'unknown' if mode is None else file_kind(mode)}")


def check_regular(path: Path | str) -> None:
    """Refuse anything but a regular file by lstat alone: the odd file is never opened."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _odd(path, mode)


def open_regular(path: Path | str) -> BinaryIO:
    """Open a spool file to read it; every reader of the spool goes through here (or _open_fd, its descriptor).

    Anyone who can write to the spool could leave a symlink (we would read its
    target with our rights) or a FIFO (open() would block the reader forever),
    so a symlink is not followed, the open never blocks, and only a regular
    file is handed back; anything else raises NotRegularFile (a SpecError).
    """
    fd, _ = _open_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_fd(path: Path | str) -> tuple[int, os.stat_result]:
    """open_regular's descriptor and its fstat, for the small reads that need no file object (a poll reads
    four or five files: a buffered file object costs more than the read)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):  # symlink, socket
            raise
        raise _odd(path, _lmode(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _odd(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_at(fd: int, offset: int, size: int, cap: int) -> bytes:
    """At most `cap` bytes from `offset`, in one pread when the file is `size` bytes as fstat said (a file that
    grows meanwhile is read on until the cap; one that shrinks, up to its end)."""
    data = os.pread(fd, min(cap, max(size - offset, 0) + 1), offset)
    while len(data) < cap and len(data) > size - offset:  # grew since the fstat: read on
        more = os.pread(fd, cap - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def open_regular_for_write(path: Path | str, flags: int, mode: int = 0o644) -> int:
    """The writers' open_regular: no symlink followed, no blocking on a FIFO, regular files only."""
    try:
        fd = os.open(path, flags | os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP, errno.EISDIR):
            raise
        raise _odd(path, _lmode(path)) from None
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise _odd(path, st_mode)
    return fd


def _lmode(path: Path | str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def read_bytes(path: Path | str, limit: int = MAX_JSON_BYTES) -> bytes:
    """A small spool file's bytes; SpecError if it is larger than limit or not a regular file."""
    fd, st = _open_fd(path)
    try:
        data = _read_at(fd, 0, st.st_size, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SpecError(f"{Path(path).name}: larger than {limit} bytes")
    return data


def read_json(path: Path | str, limit: int = MAX_JSON_BYTES) -> Any:
    """Read a small JSON file; raise SpecError if it is oversized, not a regular file or not JSON."""
    data = read_bytes(path, limit)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(f"{Path(path).name}: not valid JSON ({e})") from None


def _plain(obj: Any) -> Any:
    """What msgspec cannot encode itself: str subclasses (ServiceId) as their text."""
    if isinstance(obj, str):
        return str(obj)
    raise TypeError(f"cannot be written to the spool as JSON: {type(obj).__name__}")


_ENCODER = msgspec.json.Encoder(order="sorted", enc_hook=_plain)


def dump_json(obj: Any) -> bytes:
    """The spool's JSON: sorted keys, one space of indent, UTF-8 (msgspec: a tenth of json.dumps' cost
    with indent, which falls back to its pure-Python encoder; every start and state save pays it)."""
    try:
        return msgspec.json.format(_ENCODER.encode(obj), indent=1) + b"\n"
    except msgspec.EncodeError as e:
        raise TypeError(str(e)) from None


class Spool:
    """Paths and atomic file operations of one spool directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.incoming = self.root / "incoming"
        self.commands = self.root / "commands"
        self.rejected = self.root / "rejected"
        self.runs = self.root / RUNS
        self.queue_file = self.root / "queue.json"
        self.supervisor_file = self.root / "supervisor.json"
        self.usage_file = self.root / "usage.json"
        self._dir_syncs: dict[str, DirectorySync] = {}
        self._dir_syncs_lock = threading.Lock()

    def ensure(self) -> "Spool":
        for d in (self.tmp, self.incoming, self.commands, self.rejected, self.runs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # -- paths -------------------------------------------------------------
    def run_dir(self, sid: str) -> Path:
        return self.runs / service_id(sid)

    def incoming_path(self, sid: str) -> Path:
        return self.incoming / f"{service_id(sid)}.json"

    def files(self, sid: str) -> RunFiles:
        """Where the files of run sid live (jobs.runfiles): the only way to get them.

        sid is validated unless it is a ServiceId already (checked once per request)."""
        return RunFiles(self, service_id(sid))

    def known(self, sid: str) -> bool:
        """Is this serviceID known here: a run directory, or a spec waiting in incoming/?"""
        files = self.files(sid)
        return os.path.isdir(files.run) or os.path.exists(files.incoming)

    def claimed(self, sid: str) -> bool:
        """Has the supervisor claimed it: does its run directory exist (a spec in incoming/ is not enough)?"""
        return os.path.isdir(self.files(sid).run)

    def attempt_dir(self, sid: str, attempt: int) -> Path:
        return Path(self.files(sid).attempt(attempt).dir)

    # -- atomic writes -----------------------------------------------------
    def _stage(self, data: bytes, durable: bool = True) -> Path:
        tmp = self.tmp / f"{time.time_ns()}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = _high_fd(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        try:
            try:
                _write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink(tmp)  # a full disk must not leave staging files behind
            raise
        if durable:
            _verify_staged(tmp, data)
        return tmp

    def write_atomic(self, dest: Path | str, data: bytes, durable: bool = True) -> None:
        """Stage in tmp/, fsync, rename over dest: readers see the old or the new file.

        durable=False skips the fsyncs, for files whose loss after a power cut costs nothing:
        still atomic, never half-written.
        """
        tmp = self._stage(data, durable)
        try:
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise
        if durable:
            fsync_dir(os.path.dirname(dest))

    def publish_dir(self, dest: Path | str, files: dict[str, bytes], dirs: tuple[str, ...] = (),
                    durable: bool = True) -> None:
        """Build a directory in tmp/ (files and dirs given by their final paths under dest), fsync it
        all, rename it to dest: readers see all of it or nothing. Nothing is left in tmp/ on failure.
        durable=False skips the fsyncs: the caller fsyncs the published paths later (supervisor's claim)."""
        dest = os.fspath(dest)
        stage = os.fspath(self.tmp / f"{time.time_ns()}.{os.getpid()}.{secrets.token_hex(4)}.d")
        os.mkdir(stage)
        try:
            for d in dirs:
                os.makedirs(os.path.join(stage, os.path.relpath(d, dest)))
            for path, data in files.items():
                staged = os.path.join(stage, os.path.relpath(path, dest))
                fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    _write_all(fd, data)
                    if durable:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                _verify_staged(Path(staged), data)
            if durable:
                fsync_dir(stage)
            os.rename(stage, dest)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if durable:
            fsync_dir(os.path.dirname(dest))

    def write_hint(self, dest: Path | str, data: bytes) -> None:
        """Replace a small hint file (the façade's last-page digest) at the least cost.

        A hint may be lost or misread for free (the façade then sends the whole
        page again instead of UNCHANGED), so it is never fsynced, and a record of
        the same length as the file is written over it in place: one pwrite,
        where a new file per poll costs an inode, two directory updates and a
        writeback. A reader racing with that write may see a mix of the two
        records, which matches neither digest: one page sent again. Any other
        length is staged in tmp/ and renamed into place, dest removed first (a
        rename that replaces a file makes ext4 write the new data out at once);
        so is anything at dest that is not a regular file, which is replaced.
        """
        try:
            fd = open_regular_for_write(dest, 0)
        except (FileNotFoundError, NotRegularFile):
            pass
        else:
            try:
                if os.fstat(fd).st_size == len(data):
                    os.pwrite(fd, data, 0)
                    return
            finally:
                os.close(fd)
        tmp = self._stage(data, durable=False)
        try:
            try:
                os.unlink(dest)
            except FileNotFoundError:
                pass
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise

    def probe_write(self) -> None:
        """Stage a tiny file in tmp/ and remove it; the OSError says why the spool takes no writes."""
        os.unlink(self._stage(b"probe\n", durable=False))

    def create_atomic(self, dest: Path | str, data: bytes) -> bool:
        """Like write_atomic but never replaces: False if dest already exists.

        The directory's fsync is shared with concurrent callers (DirectorySync).
        If it fails, dest is taken back (unless the supervisor has claimed it
        meanwhile), so a refused start leaves no spec behind.
        """
        tmp = self._stage(data)
        try:
            ino = os.stat(tmp).st_ino
            os.link(tmp, dest)
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)
        try:
            self.dir_sync(os.path.dirname(dest)).durable()
        except BaseException:
            _unlink_if(dest, ino)
            raise
        return True

    def dir_sync(self, directory: Path | str) -> DirectorySync:
        """The group commit of this directory's fsync, one per directory and Spool."""
        key = os.fspath(directory)
        with self._dir_syncs_lock:
            found = self._dir_syncs.get(key)
            if found is None:
                found = self._dir_syncs[key] = DirectorySync(key)
            return found

    # -- shared reads and drops ------------------------------------------
    def submit(self, spec_json: bytes, sid: str) -> bool:
        """Drop a spec into incoming/; False if this serviceID is already known."""
        files = self.files(sid)
        if os.path.exists(files.run):
            return False
        return self.create_atomic(Path(files.incoming), spec_json)

    exists = known  # the name older callers use

    def send_command(self, sid: str, verb: str, origin: str) -> Path:
        """Ask the supervisor to act on a job; it works whether or not the daemon is up."""
        if verb not in COMMAND_VERBS:
            raise SpecError(f"unknown command {verb!r}; expected one of {', '.join(COMMAND_VERBS)}")
        sid = service_id(sid)
        body = dump_json({"service_id": sid, "verb": verb, "origin": origin, "requested_at": time.time()})
        dest = self.commands / command_name(sid, verb, time.time_ns())
        self.write_atomic(dest, body)
        return dest

    def pending_commands(self) -> dict[ServiceId, list[str]]:
        """The verbs waiting in commands/ (not yet handled by the supervisor), by serviceID, oldest first."""
        pending: dict[ServiceId, list[str]] = {}
        try:
            names = sorted(os.listdir(self.commands))
        except FileNotFoundError:
            return pending
        for name in names:
            parsed = parse_command_name(name)
            if parsed is not None:
                pending.setdefault(parsed[0], []).append(parsed[1])
        return pending

    def read_state(self, sid: str) -> dict | None:
        """The supervisor's state.json for sid, or None if the run does not exist yet."""
        try:
            return read_json(self.files(sid).state)
        except FileNotFoundError:
            return None

    def read_queue(self) -> list[str]:
        try:
            data = read_json(self.queue_file, limit=16 * 1024 * 1024)
        except (FileNotFoundError, SpecError):
            return []
        return list(data.get("queued", []))

    def read_supervisor(self) -> dict | None:
        try:
            return read_json(self.supervisor_file)
        except (FileNotFoundError, SpecError):
            return None

    def append_notification(self, sid: str, message: str) -> int:
        """Append one JSON line; O_APPEND keeps concurrent writers' lines whole and ordered.

        A write cut short (a full disk) is taken back if no one appended after
        it, so the reader never gets half a line.
        """
        line = (json.dumps({"at": time.time(), "message": message}) + "\n").encode()
        path = self.files(sid).notifications
        fd = open_regular_for_write(path, os.O_APPEND | os.O_CREAT)
        try:
            written = 0
            try:
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError:
                end = os.lseek(fd, 0, os.SEEK_CUR)
                if 0 < written < len(line) and os.fstat(fd).st_size == end:
                    os.ftruncate(fd, end - written)
                raise
            return os.fstat(fd).st_size
        finally:
            os.close(fd)


def tail_lines(path: Path, n: int = 10, max_bytes: int = 8192) -> list[str]:
    """Last n lines of a log without reading the whole file."""
    try:
        fd, st = _open_fd(path)
    except (FileNotFoundError, NotRegularFile):
        return []
    try:
        size = st.st_size
        data = _read_at(fd, max(0, size - max_bytes), size, max_bytes)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]
    return lines[-n:]


def _high_fd(fd: int) -> int:
    """Move a new descriptor above the low numbers a careless thread may still write to (see below)."""
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    except OSError:
        return fd  # no room up there: the read-back still guards the file
    os.close(fd)
    return high


def _verify_staged(path: Path, data: bytes) -> None:
    """Check that a staged file holds exactly what was written, before it is published.

    A thread that writes through a descriptor number it already closed lands in
    whatever file now has that number: gunicorn's gthread worker, exiting after
    its master died, wrote its wake-up NUL bytes into a spec being staged by
    another thread, which was then acknowledged and published. So a staged
    file's descriptor leaves the low numbers at once (_high_fd), and once it is
    closed nothing new can reach the file through it: what is read back now
    is what a reader will see. (A write already under way in the kernel when
    the number was ours could still land; the window is the instant between
    open() and the move.)
    """
    with open(path, "rb") as f:
        landed = f.read(len(data) + 1)
    if landed != data:
        _unlink(path)
        raise OSError(errno.EIO, f"staged file {path.name} does not hold what was written "
                                 f"({len(landed)} bytes read back, {len(data)} written); nothing was published")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_if(path: Path | str, ino: int) -> None:
    """Remove path if it is still the file ino (not claimed, renamed or replaced meanwhile)."""
    try:
        if os.lstat(path).st_ino == ino:
            os.unlink(path)
    except FileNotFoundError:
        pass

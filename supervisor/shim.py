"""Per-job shim: runs the program and records its exit status, even if the daemon is gone.

Started by the supervisor as the leader of a new session (so one killpg reaches
the whole job):  python -S shim.py RUN_DIR STDOUT STDERR EXIT -- PROGRAM ARGS...
(the paths come from jobs/runfiles.py, which this script does not import). It
opens the attempt's stdout/stderr logs, runs the program with the run
directory as its working directory, waits for it and writes the exit record
EXIT atomically (times in ISO 8601 UTC, like every spool file). The record's space is taken before the program starts (a padded
file, overwritten in place at the end, then renamed), so a disk that fills
up meanwhile cannot lose the exit status. It imports only the standard
library and runs without site (-S) to keep the spool->spawn path short. It
ignores SIGTERM/SIGINT itself (the program gets them from the group signal)
so it lives to record the exit; a SIGKILL of the group ends it too, which
the daemon accounts for.

Spare mode (local executor):  python -S shim.py --spare
The daemon keeps one shim started ahead of need, so a job does not wait for
an interpreter to start. A spare reads one job from stdin (a pipe from the
daemon), sent only once the job's RUNNING state, with this spare's pid, is
durable; it runs it from the daemon's end-of-file. If the pipe closes before
a whole job arrived (the daemon stopped or died), the spare exits at once
and has touched nothing.
"""
import fcntl
import os
import sys
import time

import _signal as signal  # the C module: `signal` would import enum and cost milliseconds

if __package__:  # imported by the daemon (supervisor.runner) for its job messages
    from . import confine
else:  # run as a script: supervisor/confine.py is beside it (sys.path[0])
    import confine


def _to_json(record):
    """Enough JSON for a flat dict of None, numbers and str (json would cost an import)."""
    def value(v):
        if v is None:
            return "null"
        if isinstance(v, str):
            return '"' + "".join(c if c.isprintable() and c not in '"\\' else "\\u%04x" % ord(c) for c in v) + '"'
        return repr(v)
    return "{" + ", ".join('"%s": %s' % (k, value(v)) for k, v in sorted(record.items())) + "}"


def _iso(t):
    """ISO 8601 in UTC, as jobs/times.py writes every spool time (datetime would cost an import)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06d+00:00" % int(t % 1 * 1e6)


EXIT_RECORD_BYTES = 1024  # every record fits (the error text is cut short); readers skip the padding


def _reserved_name(exit_path):
    """The hidden name of the exit record while it is not filled in, beside it."""
    head, tail = os.path.split(exit_path)
    return os.path.join(head, "." + tail + ".tmp")


def reserve_exit(exit_path):
    """Take the exit record's space now, while there is some; None if the disk already refuses it.

    A write is enough (no fsync on the spawn path): tmpfs allocates, and
    ext4/XFS reserve delayed-allocation space, when the data is written. The
    padded file keeps a hidden name until write_exit has filled it, so a
    reader never takes it for an exit status.
    """
    tmp = _reserved_name(exit_path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return None
    try:
        if os.write(fd, b" " * (EXIT_RECORD_BYTES - 1) + b"\n") == EXIT_RECORD_BYTES:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def keep_reserved(exit_path, fd):
    """Make the reserved record durable, blocks and name (fsync it and its directory): done while the
    program runs, so that write_exit's sync writes one block, commits no metadata and needs no directory
    fsync. False if the disk refused (write_exit then syncs the directory itself)."""
    if fd is None:
        return False
    try:
        os.fsync(fd)
        _fsync_dir(os.path.dirname(exit_path))
    except OSError:
        return False
    return True


def _fsync_dir(path):
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_exit(exit_path, record, fd=None, kept=False):
    """Fill the reserved file in place (no new space needed), fdatasync, rename it to exit_path.

    The record is durable before the shim exits. `kept` (keep_reserved
    succeeded): the rename is not fsynced: after a power cut that takes it,
    the filled record is still under its reserved name, and the daemon puts
    it in place (supervisor/runner.py `_staged_refused`). Otherwise the
    directory is fsynced after the rename.
    """
    tmp = _reserved_name(exit_path)
    data = (_to_json(record) + "\n").encode()
    data += b" " * (EXIT_RECORD_BYTES - len(data))
    if fd is None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, exit_path)
    if not kept:
        _fsync_dir(os.path.dirname(exit_path))


JOB_MAGIC = b"spoolsoap-job-3"
WHERE = 5  # working directory, stdout log, stderr log, exit record, notifications: a shim's first arguments


def encode_job(where, options, program, env):
    """The message a spare reads: NUL-separated fields, closed by the daemon's end of file."""
    fields = [JOB_MAGIC, *(os.fsencode(p) for p in where)]
    for items in (options, program):
        fields += [str(len(items)).encode(), *(os.fsencode(a) for a in items)]
    fields.append(str(len(env)).encode())
    fields += [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    return b"\0".join(fields + [b"end", b""])


def decode_job(data):
    """(where, options, program, env) from a whole message, or None."""
    fields = data.split(b"\0")
    if fields[0] != JOB_MAGIC or fields[-2:] != [b"end", b""]:
        return None
    fields = fields[1:-2]
    try:
        where = [os.fsdecode(p) for p in fields[:WHERE]]
        at, lists = WHERE, []
        for _ in range(3):
            n = int(fields[at])
            lists.append([os.fsdecode(a) for a in fields[at + 1:at + 1 + n]])
            if len(lists[-1]) != n:
                return None
            at += 1 + n
        options, program, items = lists
        if len(where) != WHERE or not program or at != len(fields):
            return None
        env = {}
        for item in items:
            key, _, value = item.partition("=")
            env[key] = value
        return where, options, program, env
    except (IndexError, ValueError):
        return None


def read_job(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return decode_job(b"".join(chunks))
        chunks.append(chunk)


def _ignore_stop_signals():
    # Handlers (not SIG_IGN) so the program starts with default dispositions.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)


def split_options(options):
    """The confinement Plan's fields and the shim's own (log_bytes=N, done_fd=N); ValueError on a bad one."""
    plan, log_bytes, done_fd = [], None, None
    for option in options:
        if option.startswith("log_bytes="):
            log_bytes = int(option[10:])
        elif option.startswith("done_fd="):
            done_fd = int(option[8:])
        else:
            plan.append(option)
    return confine.Plan.from_fields(plan), log_bytes, done_fd


def say_done(done_fd):
    """Tell the daemon the exit record is in place (our pid on its pipe, inherited as done_fd), before this
    process's own end (its teardown, ~0.5 ms, came before SIGCHLD); a daemon gone (EPIPE) or busy (EAGAIN)
    hears of it by SIGCHLD as before."""
    if done_fd is not None:
        try:
            os.write(done_fd, b"%d\n" % os.getpid())
        except OSError:
            pass


def open_work(work, plan):
    """The program's working directory: made here (the supervisor's), given to the job's user
    with the supervisor's group (setgid: its files stay readable by the façade)."""
    try:
        os.mkdir(work, 0o755)
    except FileExistsError:  # a shim started again for the same attempt: a directory, never a link
        if not os.path.isdir(work) or os.path.islink(work):
            raise OSError(f"{work} is not a directory") from None
    if plan.uid is not None:
        os.chown(work, plan.uid, os.getegid(), follow_symlinks=False)
        os.chmod(work, 0o2750, follow_symlinks=False)
    plan.workdir = work


MARK = "\n[spoolsoap: output cut at %s]\n"


def _size_text(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return "%.3g %s" % (n / (1 << shift), unit)
    return "%d bytes" % n


class Pump:
    """Copies one of the program's pipes into its log, up to a cap; past it, one marker line, then drains."""
    __slots__ = ("fd", "log", "left", "marker")

    def __init__(self, fd, log, cap):
        self.fd, self.log, self.left, self.marker = fd, log, cap, (MARK % _size_text(cap)).encode()

    def pull(self):
        """Copy what is there: True if it read some, None if nothing is there now, False at end of file."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            return False
        if self.left >= 0:
            keep = data[:self.left]
            self.left -= len(data)
            try:
                if keep:
                    os.write(self.log, keep)
                if self.left < 0:  # once, where the cut is
                    os.write(self.log, self.marker)
            except OSError:
                pass  # a full disk: the exit record has its space
        return True


def pump_until_exit(pid, pumps):
    """Copy the pipes into the logs until the program has ended; returns wait4's (status, rusage).

    Descendants that keep the pipes open do not hold the end back: once the
    program has exited, what is in the pipes is copied and the shim stops.
    """
    import select
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    live = {p.fd: p for p in pumps}
    for fd in (*live, wake_r):
        poller.register(fd, select.POLLIN)
    while True:
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            break
        for fd, _ in poller.poll():
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            elif live[fd].pull() is False:
                poller.unregister(fd)
                del live[fd]
    for p in live.values():  # what the program wrote last; a descendant's later output is not waited for
        while p.pull():
            pass
    return status, ru


def run(where, options, program, env):
    """Run the program confined, its output into the logs, wait, record its exit; returns the shim's exit status."""
    work, stdout, stderr, exit_path, notifications = where
    started = time.time()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(stdout, flags, 0o640)
    err = os.open(stderr, flags, 0o640)
    reserved = reserve_exit(exit_path)
    pumps, done_fd = [], None
    try:
        plan, log_bytes, done_fd = split_options(options)
        open_work(work, plan)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        notes = os.open(notifications, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        given = [devnull, out, err, notes]
        if log_bytes is not None:
            for i, log in ((1, out), (2, err)):
                r, w = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(r, False)
                pumps.append(Pump(r, log, log_bytes))
                given[i] = w
        # spawn wants them clear of 0-3, where dup2 puts them
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in given]
        pid = confine.spawn(program, env, fds, plan)
    except (OSError, ValueError) as e:
        try:
            os.write(err, f"cannot start {program[0]}: {e}\n".encode())
        except OSError:
            pass  # the log may be on a full disk; the exit record has its space
        write_exit(exit_path, {"exit_code": 127, "signal": None, "error": str(e)[:120],
                                 "started_at": _iso(started), "ended_at": _iso(time.time())}, reserved)
        say_done(done_fd)
        return 127
    for fd in {*fds, *given} - {out, err}:
        os.close(fd)  # the program holds its own copies (the pipes' writing ends among them)
    kept = keep_reserved(exit_path, reserved)  # now, while the program runs, rather than on the way to its exit
    if pumps:
        status, ru = pump_until_exit(pid, pumps)
    else:
        _, status, ru = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    record = {"pid": pid, "started_at": _iso(started), "ended_at": _iso(time.time()),
              "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
              "cpu_user_s": round(ru.ru_utime, 6), "cpu_system_s": round(ru.ru_stime, 6),
              "maxrss_kb": ru.ru_maxrss, "inblock": ru.ru_inblock, "oublock": ru.ru_oublock}
    write_exit(exit_path, record, reserved, kept)
    say_done(done_fd)
    return code if code >= 0 else 128 - code


def main(argv):
    _ignore_stop_signals()
    if argv == ["--spare"]:
        confine.preload()  # ctypes, ahead of need
        job = read_job(0)
        if job is None:
            return 0  # the daemon stopped before handing over a job: nothing was started
        where, options, program, env = job  # fd 0 stays open (at end of file): new fds must not land on 0-2
        # execvpe looks the program up in the job's PATH
        return run(where, options, program, env)
    if "--" not in argv or argv.index("--") < WHERE or argv.index("--") == len(argv) - 1:
        print("usage: shim.py WORK STDOUT STDERR EXIT NOTIFICATIONS [OPTION=VALUE...] -- PROGRAM [ARGS...]"
              "  |  shim.py --spare", file=sys.stderr)
        return 2
    cut = argv.index("--")
    return run(argv[:WHERE], argv[WHERE:cut], argv[cut + 1:], os.environ)


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the exit record is on disk: no interpreter teardown (~2-4 ms) before the daemon hears of it

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
import os
import sys
import time

import _signal as signal  # the C module: `signal` would import enum and cost milliseconds


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


def write_exit(exit_path, record, fd=None):
    """Fill the reserved file in place (no new space needed), fsync, rename it to exit_path."""
    tmp = _reserved_name(exit_path)
    data = (_to_json(record) + "\n").encode()
    data += b" " * (EXIT_RECORD_BYTES - len(data))
    if fd is None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, exit_path)
    dfd = os.open(os.path.dirname(exit_path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


JOB_MAGIC = b"spoolsoap-job-2"
WHERE = 4  # run directory, stdout log, stderr log, exit record: a shim's first arguments


def encode_job(where, program, env):
    """The message a spare reads: NUL-separated fields, closed by the daemon's end of file."""
    fields = [JOB_MAGIC, *(os.fsencode(p) for p in where), str(len(program)).encode()]
    fields += [os.fsencode(a) for a in program]
    fields.append(str(len(env)).encode())
    fields += [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    return b"\0".join(fields + [b"end", b""])


def decode_job(data):
    """(where, program, env) from a whole message, or None."""
    fields = data.split(b"\0")
    try:
        if fields[0] != JOB_MAGIC or fields[-2:] != [b"end", b""]:
            return None
        where = [os.fsdecode(p) for p in fields[1:1 + WHERE]]
        at = 1 + WHERE
        n = int(fields[at])
        program = [os.fsdecode(a) for a in fields[at + 1:at + 1 + n]]
        m = int(fields[at + 1 + n])
        items = fields[at + 2 + n:at + 2 + n + m]
        if len(program) != n or not program or len(items) != m or at + 2 + n + m != len(fields) - 2:
            return None
        env = {}
        for item in items:
            key, sep, value = item.partition(b"=")
            env[os.fsdecode(key)] = os.fsdecode(value)
        return where, program, env
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


def run(where, program, env):
    """Run the program with the attempt's logs, wait, record its exit; returns the shim's exit status."""
    run_dir, stdout, stderr, exit_path = where
    started = time.time()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(stdout, flags, 0o644)
    err = os.open(stderr, flags, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    reserved = reserve_exit(exit_path)
    try:
        os.chdir(run_dir)
        pid = os.posix_spawnp(program[0], program, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2),
        ], setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    except OSError as e:
        try:
            os.write(err, f"cannot start {program[0]}: {e}\n".encode())
        except OSError:
            pass  # the log may be on a full disk; the exit record has its space
        write_exit(exit_path, {"exit_code": 127, "signal": None, "error": str(e)[:120],
                                 "started_at": _iso(started), "ended_at": _iso(time.time())}, reserved)
        return 127
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    record = {"pid": pid, "started_at": _iso(started), "ended_at": _iso(time.time()),
              "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None}
    write_exit(exit_path, record, reserved)
    return code if code >= 0 else 128 - code


def main(argv):
    _ignore_stop_signals()
    if argv == ["--spare"]:
        job = read_job(0)
        if job is None:
            return 0  # the daemon stopped before handing over a job: nothing was started
        where, program, env = job  # fd 0 stays open (at end of file): new fds must not land on 0-2
        # posix_spawnp looks the program up in this process's PATH: the job's, as for a shim started for it
        if "PATH" in env:
            os.environ["PATH"] = env["PATH"]
        else:
            os.environ.pop("PATH", None)
        return run(where, program, env)
    if len(argv) < WHERE + 2 or argv[WHERE] != "--":
        print("usage: shim.py RUN_DIR STDOUT STDERR EXIT -- PROGRAM [ARGS...]  |  shim.py --spare", file=sys.stderr)
        return 2
    return run(argv[:WHERE], argv[WHERE + 1:], os.environ)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

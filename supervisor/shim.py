"""Per-job shim: runs the program and records its exit status, even if the daemon is gone.

Started by the supervisor as the leader of a new session (so one killpg reaches
the whole job):  python -S shim.py ATTEMPT_DIR -- PROGRAM ARGS...
It opens the attempt's stdout/stderr logs, runs the program with the run
directory as its working directory, waits for it and writes exit.json
atomically. It imports only the standard library and runs without site (-S)
to keep the spool->spawn path short. It ignores SIGTERM/SIGINT itself (the
program gets them from the group signal) so it lives to record the exit; a
SIGKILL of the group ends it too, which the daemon accounts for.
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


def write_exit(attempt_dir, record):
    path = os.path.join(attempt_dir, "exit.json")
    tmp = os.path.join(attempt_dir, ".exit.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, (_to_json(record) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(attempt_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main(argv):
    attempt_dir, sep, program = argv[0], argv[1], argv[2:]
    if sep != "--" or not program:
        print("usage: shim.py ATTEMPT_DIR -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    run_dir = os.path.dirname(os.path.dirname(attempt_dir))
    started = time.time()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(os.path.join(attempt_dir, "stdout.log"), flags, 0o644)
    err = os.open(os.path.join(attempt_dir, "stderr.log"), flags, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    # Handlers (not SIG_IGN) so the program starts with default dispositions.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    try:
        os.chdir(run_dir)
        pid = os.posix_spawnp(program[0], program, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2),
        ], setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    except OSError as e:
        os.write(err, f"cannot start {program[0]}: {e}\n".encode())
        write_exit(attempt_dir, {"exit_code": 127, "signal": None, "error": str(e),
                                 "started_at": started, "ended_at": time.time()})
        return 127
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    record = {"pid": pid, "started_at": started, "ended_at": time.time(),
              "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None}
    write_exit(attempt_dir, record)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Test program: a job that tries every way out of its confinement and reports each attempt.

argv: VICTIM_SID SECRET_PATH "SUPERVISOR_PID VICTIM_PID". It writes report.txt in
its working directory, one line per attempt ("<what>: blocked (<error>)" or
"<what>: ESCAPED"), then "done", and waits to be aborted. A grandchild that
forked twice and left the session records its pid in survivor.txt first.
"""
import os
import signal
import sys
import time

victim, secret = sys.argv[1], sys.argv[2]
supervisor_pid, victim_pid = map(int, sys.argv[3].split())
work = os.getcwd()  # the kernel names it even where the job may not walk the path
spool = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(work)))))
run = os.path.dirname(os.path.dirname(os.path.dirname(work)))
lines = []


def attempt(what, fn):
    try:
        fn()
    except OSError as e:
        lines.append(f"{what}: blocked ({type(e).__name__}: {e.strerror})")
    else:
        lines.append(f"{what}: ESCAPED")


def read(path):
    with open(path, "rb") as f:
        f.read(1)


def write(path, data=b"{}"):
    with open(path, "wb") as f:
        f.write(data)


def survive():
    """Fork twice and leave the session: the grandchild outlives any killpg of the job."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            with open("survivor.txt.tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename("survivor.txt.tmp", "survivor.txt")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
        os._exit(0)
    os.waitpid(pid, 0)
    while not os.path.exists("survivor.txt"):
        time.sleep(0.01)


def other_cwd():
    """Another job's working directory through /proc (the way around the spool's closed doors)."""
    os.listdir(f"/proc/{victim_pid}/cwd")


attempt("read another project's result", lambda: read(os.path.join(spool, "runs", victim, "attempts", "1", "work",
                                                                    "result.txt")))
attempt("read another job's files through /proc", other_cwd)
attempt("list the runs", lambda: os.listdir(os.path.join(spool, "runs")))
attempt("drop a spec into incoming/", lambda: write(os.path.join(spool, "incoming", "evil-1.json")))
attempt("drop a command into commands/", lambda: write(os.path.join(spool, "commands", "evil.json"),
                                                       b'{"service_id": "%s", "verb": "kill"}' % victim.encode()))
attempt("rewrite its own state.json", lambda: write(os.path.join(run, "state.json")))
attempt("rewrite its state.json by a relative path", lambda: write("../../../state.json"))
attempt("rewrite its exit.json", lambda: write("../exit.json", b'{"exit_code": 0}'))
attempt("read its spec", lambda: read("../../../spec.json"))
attempt("rewrite its stdout.log", lambda: write("../stdout.log", b"forged"))
attempt("rewrite the other run's state.json", lambda: write(os.path.join(spool, "runs", victim, "state.json")))
attempt("read a secret", lambda: read(secret))
attempt("signal the supervisor", lambda: os.kill(supervisor_pid, signal.SIGTERM))
attempt("signal another job", lambda: os.kill(victim_pid, signal.SIGKILL))
attempt("write the notifications it was given", lambda: os.write(3, b"forged\n"))
survive()
lines.append("done")
with open("report.txt.tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
os.rename("report.txt.tmp", "report.txt")
print("hostile: report written", flush=True)
time.sleep(600)

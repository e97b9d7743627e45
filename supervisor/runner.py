"""The local executor: the supervisor's one seam to this machine's processes.

Each job runs under its own shim (supervisor/shim.py). Starting a Python
interpreter for it takes ~8 ms, longer than everything else between a spec's
arrival and the program's start, so the executor keeps SPARES *spare* shims
started ahead of need (`prepare`, called by the daemon's loop when it has
nothing else to do). Two, so that one is ready while the one that replaces
a spare just taken starts SPARE_DELAY later: a spare's interpreter start,
~10 ms of CPU, would otherwise compete with the program just handed over for
the machine's cores, on the path to its first line; and a second job soon
after the first still finds one ready. `reserve` gives a job a spare's pid before the job's
RUNNING state is written, and `start` then hands it the job through its
stdin pipe: RUNNING, with the pid that will run the job, is durable before
anything runs. A spare that never got its job (the daemon died in between)
exits without touching anything; `adopt` tells that case (no output files in
the attempt directory, no process) so the job is requeued, not failed.

With an Isolation (supervisor/isolation.py) each attempt gets its own cgroup.
Moving a process into a cgroup costs a kernel RCU grace period (4.5-30 ms),
so the spare gets a cgroup of its own under a fresh name, and a thread moves
it in while its interpreter starts; `reserve` writes the job's limits into it
and names it in the RUNNING state written before the hand-over, so kill,
abort, restart and a restarted supervisor find it; the program, forked by the
shim inside it, is there from its start without paying the move. (The shim
is in the attempt's cgroup then: it counts as one more process there, and is
kept out of the OOM killer's choice where the supervisor may do that.) A job
started cold gets its cgroup here before the shim starts, and the program
enters it before exec.
Ending the attempt ends the cgroup (every process, however it forked); its
counts are read for the attempt's usage, and the cgroup is removed only
once the daemon has saved them (`cleanup`).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import psutil
import structlog

from jobs import identity
from jobs.errors import SpecError
from jobs.spool import read_bytes, storage_refused

from jobs.usage import Usage

from . import cgroups
from .executor import SHIM, Executor, ExitRecord, Job, Seen, read_exit, shim_args, shim_argv
from .isolation import Confined, Isolation
from .shim import EXIT_RECORD_BYTES, encode_job
from .shim import _reserved_name as staged_exit_name


@dataclass(frozen=True)
class Handle:
    """A process identity that pid reuse cannot fake: pid plus its start time."""
    pid: int
    create_time: float
    own_child: bool  # spawned by this daemon instance: SIGCHLD tells us when it ends


log = structlog.get_logger("supervisor.runner")
SPARE_ARGV = [sys.executable, "-S", SHIM, "--spare"]
_SIGDEF = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
NEVER_STARTED_WAIT = 2.0  # seconds adopt() gives a spare whose daemon died to exit
SPARES = 2  # spare shims kept ready
SPARE_DELAY = 0.03  # seconds after a hand-over before a replacement starts, while another spare is ready
DONE_FD = 3  # in a shim: the writing end of the executor's pipe, where it says its exit record is in place


@dataclass
class Spare:
    """A shim started ahead of need, waiting for a job on the pipe whose writing end is `fd`, and the cgroup
    a thread moves it into meanwhile (`move_in`: the kernel's grace period overlaps the interpreter's start)."""
    handle: Handle
    fd: int
    cgroup: cgroups.Attempt | None = None
    mover: threading.Thread | None = None
    inside: bool = False                # moved into every hierarchy of its cgroup
    oom_score_adj: int | None = None    # its own before it was kept from the OOM killer: its program's
    confined: Confined | None = None    # the job's confinement, once reserved

    def move_in(self) -> None:
        """In the mover thread: put the spare in its cgroup, then keep it from the OOM killer (a v2
        memory.oom.group kill would take the shim, and the exit record, with the program); a failure of
        the first leaves `inside` False (the job then starts cold), of the second only the protection."""
        try:
            self.cgroup.add(self.handle.pid)
        except cgroups.CgroupError as e:
            log.warning("spare_cgroup_refused", cgroup=self.cgroup.name, problem=str(e))
            return
        self.inside = True
        adj = f"/proc/{self.handle.pid}/oom_score_adj"
        try:
            with open(adj, "rb") as f:
                before = int(f.read())
            with open(adj, "wb", buffering=0) as f:
                f.write(b"-1000")
            self.oom_score_adj = before
        except (OSError, ValueError):
            pass  # not allowed here (no CAP_SYS_RESOURCE): the shim may be chosen like any process

    def ready(self) -> bool:
        """Wait for the mover: True if the spare may take a job (in its cgroup, or none was wanted)."""
        if self.mover is not None:
            self.mover.join()
        return self.cgroup is None or self.inside

    def let_go(self) -> None:
        """It will get no job: it exits at end of file; its cgroup (it may be in it) ends and goes."""
        if self.mover is not None:
            self.mover.join()
        os.close(self.fd)
        if self.cgroup is not None:
            problem = self.cgroup.kill() or self.cgroup.remove()
            if problem:
                log.warning("cgroup_not_removed", cgroup=self.cgroup.name, problem=problem)


class LocalExecutor(Executor):
    """Runs each job's shim as leader of a new session on this machine."""

    name = "local"

    def __init__(self, spares: bool = True, isolation: Isolation | None = None):
        self.isolation = isolation
        self.cgroups: dict[str, cgroups.Attempt] = {}  # the attempt cgroup of each job we watch (or ended, unsaved)
        self.handles: dict[str, Handle] = {}
        self.spares = spares
        self.pool: list[Spare] = []  # the spares, oldest (likeliest ready) first
        self.handed_at = -math.inf  # time.monotonic() of the last hand-over to a spare
        self.reserved: dict[str, Spare] = {}
        # the shims' word that their exit record is in place (shim.say_done), ahead of their SIGCHLD
        self.wake_fd, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.said_done: set[int] = set()
        self.staged: set[str] = set()  # shims that ended with their exit record staged, not yet in place

    # -- the spare shim ------------------------------------------------------
    def prepare(self) -> float | None:
        """Start a spare shim if fewer than SPARES are there, and a thread that moves it into a cgroup of its own
        (a failure only means the next job starts cold); at once if none is left, else SPARE_DELAY after the
        last hand-over. How soon it wants to be asked again (None: not before something changes)."""
        if not self.spares or len(self.pool) >= SPARES:
            return None
        wait = self.handed_at + SPARE_DELAY - time.monotonic()
        if self.pool and wait > 0:
            return wait
        r, w = os.pipe2(os.O_CLOEXEC)
        spare = Spare(Handle(0, 0.0, True), w, self.isolation.spare_cgroup() if self.isolation else None)
        try:
            pid = os.posix_spawn(sys.executable, SPARE_ARGV, os.environ, setsid=True, setsigdef=_SIGDEF,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, self.done_w, DONE_FD)]
                                 + [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (1, 2)])
            spare.handle = Handle(pid, psutil.Process(pid).create_time(), True)
        except (OSError, psutil.NoSuchProcess):
            spare.let_go()
            return None
        finally:
            os.close(r)
        if spare.cgroup is not None:
            spare.mover = threading.Thread(target=spare.move_in, name="spare-cgroup", daemon=True)
            spare.mover.start()
        self.pool.append(spare)
        return 0.0 if len(self.pool) < SPARES else None

    def reserve(self, job: Job) -> Seen | None:
        """A spare's identity for the job, with its confinement (its cgroup then holds the job's limits), before
        the job's RUNNING state is written; None: none ready (or their cgroups failed it: the job starts cold)."""
        while self.pool:
            spare = self.pool.pop(0)
            if self._takes(job, spare):
                self.reserved[job.sid] = spare
                return Seen(pid=spare.handle.pid, create_time=spare.handle.create_time,
                            isolation=spare.confined.note if spare.confined is not None else None,
                            cgroup=spare.cgroup.name if spare.cgroup is not None else None)
            spare.let_go()
        return None

    def _takes(self, job: Job, spare: Spare) -> bool:
        """Whether the spare still waits (not killed meanwhile) and its cgroup took the job's limits."""
        try:
            gone = os.waitpid(spare.handle.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            gone = True
        if not spare.ready() or gone:
            return False
        if self.isolation is not None:
            try:
                spare.confined = self.isolation.confine(job, spare.cgroup, spare.oom_score_adj)
            except cgroups.CgroupError as e:
                log.warning("spare_cgroup_refused", service_id=job.sid, problem=str(e))
                return False
        return True

    def release(self, job: Job) -> None:
        """A reserved spare that will not get its job: it exits on end of file."""
        spare = self.reserved.pop(job.sid, None)
        if spare is not None:
            spare.let_go()

    def close(self) -> None:
        for spare in self.pool:
            spare.let_go()
        self.pool.clear()

    # -- the executor --------------------------------------------------------
    def start(self, job: Job, argv: list[str], env: dict[str, str]) -> Seen:
        spare = self.reserved.pop(job.sid, None)
        confined = spare.confined if spare is not None else None
        if confined is None and self.isolation is not None:
            confined = self.isolation.confine(job)
        if confined is not None and confined.cgroup is not None:
            self.cgroups[job.sid] = confined.cgroup
        options = (confined.options if confined is not None else []) + [f"done_fd={DONE_FD}"]
        try:
            seen = self._hand_over(job, spare, argv, env, options) if spare is not None else \
                self._spawn(job, argv, env, options)
        except OSError:
            self._drop_cgroup(job)
            raise
        return Seen(pid=seen.pid, create_time=seen.create_time, isolation=confined.note if confined else None,
                    cgroup=confined.cgroup.name if confined and confined.cgroup else None)

    def _hand_over(self, job: Job, spare: Spare, argv: list[str], env: dict[str, str], options: list[str]) -> Seen:
        """Send the job to the reserved spare: it runs it at our end of file."""
        try:
            view = memoryview(encode_job(shim_args(job), options, argv, env))
            while view:
                view = view[os.write(spare.fd, view):]
        finally:
            os.close(spare.fd)
        self.handed_at = time.monotonic()
        self.handles[job.sid] = spare.handle
        return Seen(pid=spare.handle.pid, create_time=spare.handle.create_time)

    def _spawn(self, job: Job, argv: list[str], env: dict[str, str], options: list[str]) -> Seen:
        """A shim started cold (no spare ready); the program enters its cgroup before exec."""
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        pid = os.posix_spawn(sys.executable, shim_argv(job, argv, options), env, setsid=True,
                             file_actions=quiet + [(os.POSIX_SPAWN_DUP2, self.done_w, DONE_FD)], setsigdef=_SIGDEF)
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:  # already gone: its exit file (or the lack of one) tells
            create_time = 0.0
        self.handles[job.sid] = Handle(pid, create_time, True)
        return Seen(pid=pid, create_time=create_time)

    def adopt(self, job: Job) -> Seen | None:
        rs = job.rs
        found = self._find_cgroup(job)
        if found is not None:
            self.cgroups[job.sid] = found
        if rs.pid is None:  # crashed between writing RUNNING and recording the pid
            found = self._find_shim(job)
            if found is None:
                return Seen() if read_exit(job.attempt) is not None else None
            self.handles[job.sid] = found
            return Seen(pid=found.pid, create_time=found.create_time)
        if not self._got_job(job):
            return None  # a spare's pid, but the daemon died before handing it the job: nothing ran
        self.handles[job.sid] = Handle(rs.pid, rs.create_time or 0.0, False)
        return Seen()

    def _got_job(self, job: Job) -> bool:
        """Whether the shim with the recorded pid ever started on this attempt.

        Every shim opens the attempt's stdout.log before it runs the program. A
        spare that never got its job exits as soon as its daemon is gone, so an
        empty attempt and no process means it never started.
        """
        marks = (job.attempt.stdout, job.attempt.exit)
        h = Handle(job.rs.pid, job.rs.create_time or 0.0, False)
        deadline = time.monotonic() + NEVER_STARTED_WAIT
        while not any(os.path.exists(m) for m in marks):
            if not self._alive(h):
                return any(os.path.exists(m) for m in marks)
            if time.monotonic() > deadline:
                return True  # alive and silent: never run it a second time
            time.sleep(0.01)
        return True

    def woken(self) -> None:
        """Take the pids of the shims that said their exit record is in place."""
        try:
            while data := os.read(self.wake_fd, 65536):
                self.said_done.update(int(p) for p in data.split() if p.isdigit())
        except BlockingIOError:
            pass

    def ended(self, jobs: list[Job], full: bool) -> list[tuple[Job, ExitRecord | None]]:
        said, self.said_done = self.said_done, set()
        reaped = set(self._reap())
        for job in jobs:
            h = self.handles.get(job.sid)
            if h is not None and h.own_child and h.pid in said and h.pid not in reaped:
                reaped.add(h.pid)  # its record is in place: as good as ended
                if job.sid in self.cgroups:  # reaped first, so the cgroup's kill (forget) finds only what the
                    self._wait(h.pid)        # program left; its own end (~0.5 ms) overlapped our wake-up
        for spare in [sp for sp in self.pool if sp.handle.pid in reaped]:
            self.pool.remove(spare)  # it died (killed): prepare() starts another
            spare.let_go()
        done = []
        for job in jobs:
            h = self.handles.get(job.sid)
            if h is None:
                done.append((job, read_exit(job.attempt)))
                continue
            if h.own_child and h.pid not in reaped and not full and job.sid not in self.staged:
                continue  # our own child: SIGCHLD + reap tell us when it ends
            rec = read_exit(job.attempt)
            if rec is None and (h.pid in reaped or job.sid in self.staged or (full and not self._alive(h))):
                if self._staged_refused(job):
                    if job.sid not in self.staged:
                        log.warning("exit_record_staged", service_id=job.sid,
                                    reason="the spool refuses exit.json; put in place once it takes writes")
                    self.staged.add(job.sid)
                    continue  # its status waits in the staged record: finalised once the spool takes it
                self.staged.discard(job.sid)
                rec = read_exit(job.attempt)  # it may have written the file just after our first look
                done.append((job, rec))
            elif rec is not None:
                done.append((job, rec))
        return done

    @staticmethod
    def _staged_refused(job: Job) -> bool:
        """True if the ended shim filled its exit record but the spool refuses to put it in place.

        The shim fills its reserved record in place, then renames it to exit.json;
        on a spool that turned read-only the rename fails (EROFS) and the status
        sits in the staged file. The daemon does that rename for it, and until it
        works the job is not over for the daemon: never "vanished" with its status
        on disk. A record still blank was never filled (the shim was killed).
        """
        staged = staged_exit_name(job.attempt.exit)
        try:
            if read_bytes(staged, EXIT_RECORD_BYTES)[:1] != b"{":
                return False
            os.replace(staged, job.attempt.exit)
        except (FileNotFoundError, SpecError):
            return False  # none staged, or not a regular file: read_exit tells what there is
        except OSError as e:
            return storage_refused(e) is not None  # any other failure: read_exit tells what there is
        return False

    def signal(self, job: Job, sig: int) -> None:
        h = self.handles.get(job.sid)
        if h is not None:
            try:
                os.killpg(h.pid, sig)  # the shim leads the group: pgid == shim pid
            except (ProcessLookupError, PermissionError):
                pass
        cg = self.cgroups.get(job.sid)
        if cg is None:
            return
        if sig == signal.SIGKILL:
            problem = cg.kill()
            if problem:
                log.error("cgroup_kill_failed", service_id=job.sid, problem=problem)
            return
        for pid in cg.pids():  # those that left the group (setsid) hear it too, the others once
            try:
                if h is None or os.getpgid(pid) != h.pid:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def forget(self, job: Job) -> None:
        self.signal(job, signal.SIGKILL)  # leftovers of the job's group and cgroup die with it
        self.handles.pop(job.sid, None)
        self.staged.discard(job.sid)

    def usage(self, job: Job, rec: ExitRecord | None) -> Usage | None:
        """The attempt cgroup's counts where it had one, what it cannot tell from the shim's rusage."""
        shim = super().usage(job, rec)
        cg = self.cgroups.get(job.sid)
        if cg is None:
            return shim
        counted = cg.usage()
        if shim is None:
            return counted
        return Usage(**{f: getattr(counted, f) if getattr(counted, f) is not None else getattr(shim, f)
                        for f in Usage.__dataclass_fields__ if f != "source"}, source="cgroup")

    def cleanup(self, job: Job) -> None:
        self._drop_cgroup(job)

    def live_usage(self, job: Job) -> Usage | None:
        cg = self.cgroups.get(job.sid)
        return cg.usage() if cg is not None else None

    def _drop_cgroup(self, job: Job) -> None:
        cg = self.cgroups.pop(job.sid, None)
        if cg is not None:
            problem = cg.kill() or cg.remove()
            if problem:
                log.warning("cgroup_not_removed", service_id=job.sid, problem=problem)

    def _find_cgroup(self, job: Job) -> cgroups.Attempt | None:
        """The attempt's cgroup made by an earlier supervisor, if it is there."""
        if self.isolation is None or self.isolation.layout.unavailable:
            return None
        cg = self.isolation.layout.attempt(job.rs.cgroup or cgroups.attempt_name(job.sid, job.rs.attempt))
        return cg if any(os.path.isdir(cg.dir(h)) for h in cg.layout.hierarchies) else None

    # -- OS details ----------------------------------------------------------
    @staticmethod
    def _alive(h: Handle) -> bool:
        """True if this exact process (not a reused pid) still runs and is not a zombie."""
        return identity.alive(h.pid, h.create_time)

    @staticmethod
    def _wait(pid: int) -> None:
        """Reap a child that is ending (it said so: os._exit is all it has left to do)."""
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    @staticmethod
    def _reap() -> list[int]:
        """Collect exited children so they do not linger as zombies."""
        done = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return done
            if pid == 0:
                return done
            done.append(pid)

    @staticmethod
    def _find_shim(job: Job) -> Handle | None:
        """The attempt's shim, by its command line (the interpreter's path may be spelled differently)."""
        target = [SHIM, *shim_args(job)]  # then its options, "--" and the program
        for p in psutil.process_iter(["cmdline", "create_time", "status"]):
            cmd = p.info["cmdline"] or []
            if cmd[2:2 + len(target)] == target and "--" in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
                return Handle(p.pid, p.info["create_time"], False)
        return None

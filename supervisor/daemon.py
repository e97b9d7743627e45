"""The supervisor daemon: a steppable loop that turns spool files into processes and back.

The spool is the only source of truth. Each pass claims new specs, applies
operator commands, notices ended jobs from the shims' exit files, enforces
limits and starts queued jobs. inotify (supervisor/wakeup.py) and SIGCHLD only wake the loop; a
periodic reconcile re-checks everything, so a lost event costs latency, never
a job. The daemon can be killed at any moment: jobs run in their own sessions
and the shims record their exits, so a restart adopts or finalises them.
"""
from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import secrets
import select
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import structlog

from jobs import config as config_mod
from jobs import accounting, logs, usagehistory
from jobs.usagehistory import project_of
from jobs.cli import service_args
from jobs.definitions import Definition, load_definitions
from jobs.errors import ConfigError, JobsError, SpecError
from jobs.limits import job_limits, size_text
from jobs.runfiles import NOTIFICATIONS_FD_PATH, RunFiles
from jobs.runstate import Attempt, RunState, iso, stop_note
from jobs.spec import JobSpec
from jobs.spool import (COMMAND_VERBS, SERVICE_ID_RE, Spool, check_regular, dump_json, read_bytes, read_json,
                        storage_refused)
from jobs.states import ACTIVE, JobState
from jobs.supervisorinfo import SupervisorCounters
from jobs.usage import Usage

from .cgroups import attempt_name, oom_reason
from .executor import Executor, ExitRecord, Job, Seen
from .fairshare import Plan, Policy, Running, plan
from .isolation import Isolation, sweep
from .runner import LocalExecutor
from .slurm import SlurmExecutor
from .wakeup import Watch

TMP_MAX_AGE = 3600.0
USAGE_HINT_SECONDS = 30.0  # how often a running attempt's usage-so-far hint is refreshed (jobs/runfiles.py USAGE_HINT)


def make_executors(cfg: config_mod.Config, definitions: dict[str, Definition]) -> dict[str, Executor]:
    """Every executor a run may name; Slurm is checked at start-up when the default or a definition uses it.
    The local one confines its jobs as far as this machine allows (supervisor/isolation.py)."""
    slurm = SlurmExecutor(cfg)
    if cfg.executor == "slurm":
        slurm.check()
    on_slurm = sorted(d.path.name for d in definitions.values() if d.executor == "slurm")
    if on_slurm and cfg.executor != "slurm":
        try:
            slurm.check()  # else its jobs would fail one by one, at submit time
        except ConfigError as e:
            raise ConfigError(f"{', '.join(on_slurm)}: executor = \"slurm\", but Slurm cannot be used here: "
                              f"{str(e).removeprefix('EXECUTOR=slurm: ')}") from None
    return {"local": LocalExecutor(isolation=Isolation(cfg)), "slurm": slurm}


class Supervisor:
    def __init__(self, cfg: config_mod.Config, definitions: dict[str, Definition],
                 executors: dict[str, Executor] | None = None):
        self.cfg = cfg
        self.defs = definitions
        self.spool = Spool(cfg.spool_dir).ensure()
        self.executors = executors or make_executors(cfg, definitions)
        self.log = structlog.get_logger("supervisor")
        self.jobs: dict[str, Job] = {}
        self.finished: dict[str, float] = {}  # terminal runs: sid -> finished_at (for retention)
        self.unsaved: dict[str, Job] = {}  # state.json the storage refused: written again every pass
        # sid -> (job, claimed this pass): written and visible, fsynced at the pass's end (make_durable)
        self.deferred: dict[str, tuple[Job, bool]] = {}
        self.defer_sync = False  # saves made now are fsynced at the pass's end (the exit path: see on_exit)
        self.refused: set[tuple[str, str | None]] = set()  # writes failing now (each logged once)
        self.hinted: dict[str, float] = {}  # sid -> when its usage hint was last written
        self.counters = SupervisorCounters.load(self.spool)  # what /metrics shows of the daemon (jobs.metrics)
        # what attempts used: appended before the save that ends an attempt, fsynced at the pass's end (make_durable)
        self.ledger = accounting.Ledger(self.spool, cfg.accounting_retention_days * 86400, durable=False)
        self.next_reconcile = 0.0
        self.last_queue: list[str] | None = None
        self.started_at = time.time()
        self.create_time = psutil.Process().create_time()
        self.uses_local = cfg.executor == "local" or any(d.executor == "local" for d in definitions.values())
        self.isolation: Isolation | None = getattr(self.executors.get("local"), "isolation", None)
        if self.isolation is not None and self.isolation.users:
            self.make_spool_private()
        # fair share (the "starting" part below): usage.json, loaded at recover() or the first pass
        self.policy = Policy.from_config(cfg)
        self.usage: usagehistory.UsageHistory | None = None
        self.usage_unsaved = False
        self.open_attempts: dict[str, tuple[Job, int]] = {}  # sid -> (job, attempt) holding a slot last pass
        self.plan = Plan([], 0)
        self.plan_key: tuple[int, ...] = ()
        self.replan_at = 0.0
        self.queue_stale = True  # queue.json may differ from the plan: written again
        self.saves = 0  # state.json saves so far: with len(jobs), what tells a pass that nothing moved
        self.plan_seen: tuple[int, int] = (-1, -1)  # (len(jobs), saves) when the jobs were last looked over
        self.active_seen: tuple[tuple[int, int], list[Job]] = ((-1, -1), [])  # the ACTIVE jobs then

    def make_spool_private(self) -> None:
        """Jobs run as other users: the spool is the supervisor's (and its group's: the façade, the console)."""
        root = self.spool.root
        mode = root.stat().st_mode & 0o7777
        if mode & 0o007:
            os.chmod(root, mode & ~0o007)
            self.log.info("spool_made_private", spool=str(root), mode=oct(mode & ~0o007))
    # -- the loop ------------------------------------------------------------
    def step(self, now: float) -> None:
        """One pass; everything the daemon does happens here, in this order."""
        if self.ledger.pending:
            self.write("accounting", None, self.ledger.flush)
        for job in list(self.unsaved.values()):
            if self.save(job) and job.rs.state not in ACTIVE:
                self.executor(job).cleanup(job)
        self.take_incoming(now)
        self.take_commands(now)
        full = now >= self.next_reconcile
        if full:
            self.reconcile(now)
        self.check_active(now, full)
        self.start_queued(now)
        self.publish_queue()
        self.make_durable()
        self.write("counters", None, self.counters.save, self.spool)

    def reconcile(self, now: float) -> None:
        """The periodic full pass: runs we do not know, heartbeat, retention, stale tmp files."""
        for name in os.listdir(self.spool.runs):
            if name not in self.jobs and name not in self.finished and SERVICE_ID_RE.fullmatch(name):
                self.load_run(name, now)
        self.write_heartbeat(now)
        self.write_usage_hints(now)
        self.apply_retention(now)
        self.next_reconcile = now + self.cfg.reconcile_seconds

    # -- intake ------------------------------------------------------------
    def take_incoming(self, now: float) -> None:
        entries = []
        with os.scandir(self.spool.incoming) as it:
            for e in it:
                try:
                    entries.append((e.stat(follow_symlinks=False).st_mtime, e.name))
                except FileNotFoundError:
                    continue
        for _, name in sorted(entries):
            self.claim(name, now)

    def claim(self, name: str, now: float) -> None:
        """incoming/<sid>.json -> runs/<sid>/ (spec.json + QUEUED state.json) by one rename."""
        path = self.spool.incoming / name
        sid = name[:-5] if name.endswith(".json") else ""
        if sid in self.deferred:
            return  # claimed this pass: its spec leaves incoming/ once the run is durable (make_durable)
        log = self.log.bind(service_id=sid or None, file=name)
        try:
            check_regular(path)  # a FIFO, symlink, directory ... is moved aside unopened
            raw = read_bytes(path)
            spec = JobSpec.parse_bytes(raw, self.defs)
            if spec.service_id != sid:
                raise SpecError(f"file name {name!r} does not match serviceID {spec.service_id!r}")
        except FileNotFoundError:
            return
        except (SpecError, OSError) as e:
            self.reject(path, str(e), log)
            return
        files = RunFiles(self.spool, sid)
        if os.path.exists(files.run) and not self.torn(files, log):
            try:
                same = read_bytes(files.spec) == raw
            except (OSError, SpecError):
                same = False
            if same:
                path.unlink(missing_ok=True)  # we claimed it before a crash; the run is already there
            else:
                self.reject(path, f"duplicate: serviceID {sid} already has a run; nothing was started", log)
            return
        definition = self.defs[spec.job]
        rs = RunState(sid, spec.job, queued_at=now, updated_at=now,
                      executor=definition.executor or self.cfg.executor)
        # visible now, durable at the pass's end (after this pass's hand-overs); the spec stays in
        # incoming/ until then, so a power cut loses nothing (see make_durable)
        if not self.write("claim", sid, self.spool.publish_dir, files.run,
                          {files.spec: raw, files.state: rs.to_json()}, (files.attempts,), durable=False):
            return  # the spec stays in incoming/: claimed on a later pass
        self.jobs[sid] = Job(spec, definition, rs, files)
        self.deferred[sid] = (self.jobs[sid], True)
        self.counters.seen_project(project_of(spec.owner))  # its usage series exist from now on
        log.info("job_queued", job=spec.job, executor=rs.executor)

    def torn(self, files: RunFiles, log) -> bool:
        """A run directory whose state cannot be read, from a claim a power cut caught before its fsyncs:
        moved aside (tmp/, swept) so that the spec still in incoming/ is claimed again. False: a whole run."""
        sid = files.sid
        if sid in self.jobs:
            return False
        try:
            RunState.from_bytes(read_bytes(files.state))
            return False
        except (OSError, SpecError):
            pass
        if not self.write("claim", sid, os.rename, files.run, self.spool.tmp / f"torn-{sid}-{secrets.token_hex(4)}"):
            return False
        self.finished.pop(sid, None)
        log.warning("torn_claim_replaced", reason="its state.json is unreadable; claimed again from incoming/")
        return True

    def make_durable(self) -> None:
        """The fsyncs put off past this pass's hand-overs, then the claimed specs leave incoming/.

        A start writes the run's files without fsync (visible at once, which is
        all a supervisor killed with kill -9 needs: the page cache keeps them),
        hands the job over, and fsyncs here. A power cut in between loses at
        most what the cut program had started: the spec is still in incoming/
        (claimed again; a torn run is moved aside) or the last durable state is
        QUEUED (started again as the same attempt). An exit's state is rebuilt
        from the shim's exit record, durable before the shim exits; its ledger
        record, written before that state and fsynced here first, is appended
        again at the next start if the cut took it (accounting.Ledger.catch_up).
        """
        if self.ledger.unsynced or self.ledger.dir_unsynced:
            self.write("accounting", None, self.ledger.sync)
        for sid, (job, claimed) in list(self.deferred.items()):
            files = job.files
            paths = (files.spec, files.state, files.attempts, files.run, self.spool.runs) if claimed else \
                (files.state, files.run)
            if not self.write("state", sid, _fsync_all, paths):
                continue  # again next pass; a claim's spec stays in incoming/ meanwhile
            del self.deferred[sid]
            if claimed:
                self.write("claim", sid, Path(files.incoming).unlink, missing_ok=True)

    def reject(self, path: Path, reason: str, log) -> None:
        """Move a bad file aside with a reason file; the daemon carries on."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:150]
        dest = self.spool.rejected / f"{time.time_ns()}-{safe}"
        try:
            if not self.write("reject", None, os.replace, path, dest):
                return  # tried again on a later pass
        except FileNotFoundError:
            return
        self.counters.rejected(path.parent)
        self.write("reject", None, self.spool.write_atomic, dest.with_name(dest.name + ".reason"),
                   (reason + "\n").encode())
        log.warning("rejected", reason=reason, moved_to=str(dest))

    def take_commands(self, now: float) -> None:
        for name in sorted(os.listdir(self.spool.commands)):
            path = self.spool.commands / name
            log = self.log.bind(file=name)
            try:
                check_regular(path)  # a FIFO, symlink, directory ... is moved aside unopened
                cmd = read_json(path, 4096)
                sid, verb = cmd.get("service_id"), cmd.get("verb")
                if verb not in COMMAND_VERBS or not isinstance(sid, str) or not SERVICE_ID_RE.fullmatch(sid):
                    raise SpecError(f"command must name a valid service_id and a verb in {COMMAND_VERBS}")
                if sid not in self.jobs and sid not in self.finished and self.spool.incoming_path(sid).exists():
                    self.claim(f"{sid}.json", now)  # its spec arrived after this pass's intake
                if sid not in self.jobs and sid not in self.finished:
                    raise SpecError(f"unknown serviceID {sid}")
            except FileNotFoundError:
                continue
            except (SpecError, AttributeError) as e:
                self.reject(path, str(e), log)
                continue
            origin = str(cmd.get("origin", "operator"))[:64]
            job = self.jobs.get(sid) or self.load_run(sid, now)
            if job is not None:
                (self.kill if verb == "kill" else self.restart)(job, now, origin)
            self.write("command", sid, path.unlink, missing_ok=True)

    # -- the one path that stops a job -----------------------------------
    def stop(self, job: Job, now: float, target: JobState, reason: str) -> None:
        """RUNNING -> STOPPING: TERM the whole group now, KILL after the grace period."""
        rs = job.rs
        rs.move(JobState.STOPPING, reason, now)  # RUNNING -> STOPPING
        rs.stop_target, rs.stop_reason = target.value, reason
        rs.kill_at = now + job.definition.abort_grace_s
        self.save(job)
        self.executor(job).signal(job, signal.SIGTERM)
        self.log.info("job_stopping", service_id=rs.service_id, target=target.value, reason=reason)

    def kill(self, job: Job, now: float, origin: str) -> None:
        rs, reason = job.rs, f"aborted by {origin}"
        if rs.state == JobState.QUEUED:
            rs.move(JobState.ABORTED, reason, now)  # QUEUED -> ABORTED
            self.finish(job, now)
        elif rs.state == JobState.RUNNING:
            self.stop(job, now, JobState.ABORTED, reason)
        elif rs.state == JobState.STOPPING and rs.stop_target == JobState.QUEUED.value:
            rs.stop_target, rs.stop_reason = JobState.ABORTED.value, reason  # a restart became a kill
            self.save(job)
        else:
            self.log.info("kill_ignored", service_id=rs.service_id, state=rs.state.value)

    def restart(self, job: Job, now: float, origin: str) -> None:
        rs, reason = job.rs, f"restarted by {origin}"
        if rs.state == JobState.RUNNING:
            self.stop(job, now, JobState.QUEUED, reason)
        elif rs.state == JobState.STOPPING:
            rs.stop_target, rs.stop_reason = JobState.QUEUED.value, reason
            self.save(job)
        elif rs.terminal:
            rs.retries_used = 0
            self.requeue(job, now, reason)  # SUCCEEDED/FAILED/ABORTED -> QUEUED
            self.finished.pop(rs.service_id, None)
            self.jobs[rs.service_id] = job
        else:
            self.log.info("restart_ignored", service_id=rs.service_id, state=rs.state.value)

    def requeue_all(self, now: float) -> bool:
        """SUPERVISOR_ON_STOP=requeue (containers, whose processes die with them): stop every
        running job through the restart path so it reruns as a new attempt when a daemon comes back."""
        self.cfg = dataclasses.replace(self.cfg, max_parallel_jobs=0)  # start nothing new while draining
        for job in [j for j in self.jobs.values() if j.rs.state == JobState.RUNNING]:
            self.stop(job, now, JobState.QUEUED, "requeued: the supervisor is shutting down")
        return True

    def requeue(self, job: Job, now: float, reason: str, delay: float = 0.0) -> None:
        """A new attempt from the same spec; the previous attempt's directory stays."""
        rs = job.rs
        rs.move(JobState.QUEUED, reason, now)
        rs.attempt += 1
        rs.pid = rs.create_time = rs.executor_id = rs.exit_code = rs.signal = rs.finished_at = rs.started_at = None
        rs.cgroup = None
        rs.stop_target = rs.stop_reason = rs.kill_at = None
        rs.killed = False
        rs.queued_at, rs.not_before = now, (now + delay if delay else None)
        self.save(job)

    # -- watching running jobs ---------------------------------------------
    def executor(self, job: Job) -> Executor:
        return self.executors[job.rs.executor]

    def check_active(self, now: float, full: bool) -> None:
        for name, ex in self.executors.items():
            active = [j for j in self.holding() if j.rs.state in ACTIVE and j.rs.executor == name]
            if not active:
                continue
            for job, rec in ex.ended(active, full):
                self.on_exit(job, rec, now)
            for job, seen in ex.observe([j for j in active if j.rs.state in ACTIVE]):
                if self.apply(job, seen, now):
                    self.save(job)
        for job in [j for j in self.holding() if j.rs.state in ACTIVE]:
            rs = job.rs
            if rs.state == JobState.RUNNING and now - (rs.started_at or now) > job.definition.max_runtime_s:
                self.stop(job, now, JobState.FAILED, f"timeout: ran longer than {job.definition.max_runtime_s:g} s")
            elif rs.state == JobState.STOPPING and rs.kill_at is not None and now >= rs.kill_at:
                self.executor(job).signal(job, signal.SIGKILL)
                rs.kill_at, rs.killed = None, True
                self.save(job)
                self.log.warning("job_killed", service_id=rs.service_id, reason="grace period over")

    def on_exit(self, job: Job, rec: ExitRecord | None, now: float) -> None:
        """The attempt ended: end what is left of it, take its usage, settle its state, then let go of it.

        The usage is saved with the attempt (state.json) before its cgroup,
        which keeps the counts, is removed: a supervisor killed in between
        reads them again from the cgroup after its restart.
        """
        ex = self.executor(job)
        ex.forget(job)
        usage = self.measured(job, ex.usage(job, rec), now)
        self.defer_sync = True  # fsynced at the pass's end: a power cut before finds the exit record again
        try:
            self.settle(job, rec, usage, now)
        finally:
            self.defer_sync = False
        if job.sid not in self.unsaved:
            ex.cleanup(job)

    def measured(self, job: Job, usage: Usage | None, now: float) -> Usage:
        """The executor's counts with the attempt's queue wait and wall time."""
        rs = job.rs
        times = {"queue_wait_s": None if rs.queued_at is None or rs.started_at is None
                 else round(max(0.0, rs.started_at - rs.queued_at), 6),
                 "wall_s": None if rs.started_at is None else round(max(0.0, now - rs.started_at), 6)}
        return dataclasses.replace(usage, **times) if usage is not None else Usage(**times)

    def output_problem(self, job: Job) -> str | None:
        """Why the attempt's outputs cannot be returned as they are (over their size, not a plain file), or None."""
        d = job.definition
        for o, path in zip(d.outputs, job.attempt.outputs(d)):
            name = d.files[o.file]
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # the output keeps its placeholder
            except OSError as e:
                return f"output {o.name}: cannot read {name}: {e.strerror}"
            if not stat.S_ISREG(st.st_mode):
                return f"output {o.name}: {name} is not a regular file"
            if st.st_size > o.max_bytes:
                return (f"output {o.name} too large: {name} is {size_text(st.st_size)}, more than its "
                        f"{size_text(o.max_bytes)} limit (outputs.{o.name}.max_bytes)")
        return None

    def settle(self, job: Job, rec: ExitRecord | None, usage: Usage, now: float) -> None:
        rs = job.rs
        log = self.log.bind(service_id=rs.service_id)
        rs.usage = usage
        rs.exit_code = rec.exit_code if rec else None
        rs.signal = rec.signal if rec else None
        outcome = rec.describe() if rec else "process vanished without recording an exit status"
        if rs.state == JobState.STOPPING and rs.started_at is not None and (
                rs.killed or (rec is not None and rec.exit_code != 0)):
            # The shim sees only how the program ended: a program that handles TERM exits with a code
            # (the waiter: 143), and SIGKILL to the group kills the shim too, before it can write
            # exit.json. What ended the attempt is then the signal we sent last.
            if rs.signal is None:
                rs.signal = int(signal.SIGKILL if rs.killed else signal.SIGTERM)
            note = stop_note(rs.signal, rs.killed, job.definition.abort_grace_s)
            if rec is None:
                outcome = note
            elif rec.signal is None or rs.killed:
                outcome = f"{note}, {outcome}"
        oom = oom_reason(usage, job_limits(job.definition, self.cfg)) if rs.state == JobState.RUNNING else None
        if oom:
            outcome = f"{oom} ({outcome})"
        rs.history.append(Attempt(rs.attempt, rs.started_at, now, rs.exit_code, rs.signal, outcome, rs.killed, usage))
        self.account(job, rs.history[-1])  # before any save that ends the attempt
        if rs.state == JobState.STOPPING:
            target, reason = JobState(rs.stop_target), rs.stop_reason or ""
            rs.history[-1].reason = f"{reason} ({outcome})"
            if target == JobState.QUEUED:
                rs.retries_used = 0
                self.counters.ended(project_of(job.spec.owner), rs.job, rs.history[-1])
                self.requeue(job, now, reason)  # STOPPING -> QUEUED (restart)
                log.info("job_restarting", attempt=rs.attempt)
                return
            rs.move(target, reason, now)  # STOPPING -> ABORTED | FAILED (timeout)
        elif rec is not None and rec.exit_code == 0 and not oom:
            problem = self.output_problem(job)
            if problem:
                rs.history[-1].reason = f"{problem} (exit code 0)"
                rs.move(JobState.FAILED, problem, now)  # RUNNING -> FAILED: its outputs cannot be returned
            else:
                rs.move(JobState.SUCCEEDED, "exit code 0", now)  # RUNNING -> SUCCEEDED
        elif rs.retries_used < job.definition.retries:
            rs.retries_used += 1
            delay = job.definition.retry_delay(rs.retries_used)
            note = f"{outcome}; retry {rs.retries_used} of {job.definition.retries} in {delay:g} s"
            self.requeue(job, now, note, delay)  # RUNNING -> QUEUED (automatic retry)
            self.counters.retry(rs.job)
            self.counters.ended(project_of(job.spec.owner), rs.job, rs.history[-1])
            log.warning("job_retry", reason=note)
            return
        else:
            if len(rs.history) > 1 and rs.retries_used:
                tries = rs.history[-(rs.retries_used + 1):]
                outcome += "; every attempt: " + ", ".join(f"#{a.attempt} {a.reason}" for a in tries)
            rs.move(JobState.FAILED, outcome, now)  # RUNNING -> FAILED
        self.finish(job, now)
        log.info("job_finished", state=rs.state.value, reason=rs.reason, exit_code=rs.exit_code)

    def apply(self, job: Job, seen: Seen, now: float) -> bool:
        """Take what an executor observed into the job's state; True if that changed what people see."""
        rs = job.rs
        rs.pid = seen.pid if seen.pid is not None else rs.pid
        rs.isolation = seen.isolation or rs.isolation
        rs.cgroup = seen.cgroup or rs.cgroup
        rs.create_time = seen.create_time if seen.create_time is not None else rs.create_time
        rs.executor_id = seen.executor_id or rs.executor_id
        shown = (rs.started_at, rs.reason)
        if seen.waiting:
            rs.started_at = None
        elif seen.started_at is not None:
            rs.started_at = seen.started_at
        if seen.reason and rs.state == JobState.RUNNING:  # while STOPPING the reason is the stop's
            rs.reason = seen.reason
        if (rs.started_at, rs.reason) == shown:
            return False
        rs.updated_at = now
        return True

    def finish(self, job: Job, now: float) -> None:
        rs = job.rs
        self.hinted.pop(rs.service_id, None)
        rs.finished_at = now
        rs.kill_at = None
        self.save(job)
        self.counters.finished(rs, project_of(job.spec.owner))
        self.jobs.pop(rs.service_id, None)
        self.finished[rs.service_id] = now

    # -- starting ----------------------------------------------------------
    def start_queued(self, now: float) -> None:
        """Give the free slots to the first jobs of the fair-share order (supervisor/fairshare.py).

        The order is worked out again only when the jobs queued or holding a slot
        changed, a retry delay ended, or RECONCILE_SECONDS passed (the usage of
        running jobs grows meanwhile): with 10,000 jobs queued and nothing
        moving, a pass does not re-sort them; and a pass after which nothing was
        saved, added or removed does not even look them over.
        """
        seen = (len(self.jobs), self.saves)
        if seen == self.plan_seen and now < self.replan_at and not self.usage_unsaved:
            return  # no job changed state since the last look, no free slot can have appeared
        self.plan_seen = seen
        queued: list[Job] = []
        running: list[Job] = []
        queued_key = running_key = 0  # which runs and attempts: a new attempt (a retry) changes it too
        for j in self.jobs.values():
            rs = j.rs
            if rs.state is JobState.QUEUED:
                queued.append(j)
                queued_key += hash(rs.service_id) + rs.attempt
            elif rs.state in ACTIVE:
                running.append(j)
                running_key += hash(rs.service_id) + rs.attempt
        self.charge_ended(running, now)
        key = (len(queued), queued_key, len(running), running_key)
        if key != self.plan_key or now >= self.replan_at:
            self.queue_stale = True
            self.plan = plan(
                [(j.rs.queued_at or 0.0, j.rs.service_id, project_of(j.spec.owner), j.spec.job, j.rs.not_before)
                 for j in queued],  # Waiting's fields, as plain tuples (cheaper by 10,000)
                (Running(project_of(j.spec.owner), j.spec.job, j.rs.started_at) for j in running),
                self.usage.weighed_at(now), self.policy, now, self.usage.mean_attempt_s() or 1.0)
            self.plan_key = key
            self.replan_at = min(now + self.cfg.reconcile_seconds, self.plan.next_change or math.inf)
        free = self.cfg.max_parallel_jobs - len(running)
        starting: list[Job] = []
        for sid in self.plan.order[:self.plan.ready] if free > 0 else ():
            job = self.jobs.get(sid)
            if job is not None and job.rs.state is JobState.QUEUED and sid not in self.unsaved:
                starting.append(job)
                if len(starting) == free:
                    break
        for job in starting:
            self.launch(job, now)
            self.queue_stale = True

    def holding(self) -> list[Job]:
        """The jobs holding a slot (ACTIVE), looked up again only when a job was saved, added or removed."""
        seen, active = self.active_seen
        if seen != (len(self.jobs), self.saves):
            active = [j for j in self.jobs.values() if j.rs.state in ACTIVE]
            self.active_seen = ((len(self.jobs), self.saves), active)
        return active

    def account(self, job: Job, ended: Attempt) -> None:
        """Append an ended attempt's usage to the accounting ledger, fsynced at the pass's end (make_durable;
        jobs/accounting.py: the crash rules)."""
        self.ledger.add(accounting.record(job.sid, job.rs.job, job.spec.owner, ended.attempt, ended.started_at,
                                          ended.finished_at, ended.usage))
        self.write("accounting", job.sid, self.ledger.flush)

    def start_accounting(self, now: float) -> None:
        """Load the usage history (rebuilt from the runs if usage.json is missing or invalid); note what runs."""
        self.usage, why = usagehistory.load(self.spool, self.policy.half_life_s, now)
        if why:
            self.log.warning("usage_rebuilt", reason=why, projects=len(self.usage.usage))
            self.usage_unsaved = True
        self.open_attempts = {j.sid: (j, j.rs.attempt) for j in self.jobs.values() if j.rs.state in ACTIVE}

    def charge_ended(self, running: list[Job], now: float) -> None:
        """Charge each attempt that held a slot last pass and has ended since to its project's usage."""
        if self.usage is None:
            self.start_accounting(now)
        holding = {j.sid: (j, j.rs.attempt) for j in running}
        for sid, (job, attempt) in self.open_attempts.items():
            if holding.get(sid, (None, None))[1] == attempt:
                continue
            ended = next((a for a in reversed(job.rs.history) if a.attempt == attempt), None)
            if ended is not None and ended.started_at is not None:
                self.usage.charge(project_of(job.spec.owner), ended.started_at, ended.finished_at or now, now)
                self.usage_unsaved = True
        self.open_attempts = holding
        if self.usage_unsaved and self.write("usage", None, self.spool.write_atomic, self.spool.usage_file,
                                             self.usage.to_json()):
            self.usage_unsaved = False

    def launch(self, job: Job, now: float) -> None:
        """QUEUED -> RUNNING: state first (so a crash right after spawn is found), then spawn.

        With a spare shim (supervisor.runner) the state written first already
        names the process that will run the job, its cgroup and how it is
        confined, and no second write is needed. That state is visible before
        the hand-over and fsynced just after it (make_durable). If the storage
        refuses that write, nothing is started: the job stays QUEUED and is
        launched once its state can be written again.
        """
        rs, d, sid = job.rs, job.definition, job.sid
        queued = dataclasses.replace(rs)
        rs.move(JobState.RUNNING, "running", now)
        rs.started_at, rs.not_before, rs.pid, rs.create_time, rs.executor_id = now, None, None, None, None
        rs.cgroup = None
        attempt = job.attempt
        argv = d.render_argv(job.spec.inputs, sid, rs.attempt)
        env = {**os.environ, **d.env, "JOB_SERVICE_ID": sid, "JOB_RUN_DIR": ".",
               "JOB_ATTEMPT_DIR": ".", "JOB_ATTEMPT": str(rs.attempt),
               "JOB_NOTIFICATIONS_FILE": NOTIFICATIONS_FD_PATH}
        ex = self.executor(job)
        warm = False
        try:
            # 0750: a confined program (another user) cannot walk up from its work/ to the logs and records
            ready = self.write("state", sid, os.makedirs, attempt.dir, 0o750, exist_ok=True)
            reserved = ex.reserve(job) if ready else None  # local: a shim started ahead, its pid known now
            warm = reserved is not None
            if warm:
                self.apply(job, reserved, now)
            if not (ready and self.save(job, durable=False)):  # fsynced after the hand-over (make_durable)
                if warm:
                    ex.release(job)
                job.rs = queued
                self.unsaved[sid] = job
                return
            self.apply(job, ex.start(job, argv, env), now)
        except OSError as e:
            if warm:
                ex.release(job)
            rs.history.append(Attempt(rs.attempt, now, now, None, None, f"spawn failed: {e}"))
            rs.move(JobState.FAILED, f"spawn failed: {e}", now)  # RUNNING -> FAILED
            self.finish(job, now)
            self.log.error("spawn_failed", service_id=sid, error=str(e))
            self.counters.spawn_failed(rs.job)
            return
        if not warm:
            self.save(job, durable=False)  # the cold shim's pid (a spare's came with the first save)
        self.counters.started(rs)
        self.log.info("job_started", service_id=sid, pid=rs.pid, executor_id=rs.executor_id,
                      attempt=rs.attempt, argv=argv)

    def prepare(self) -> float | None:
        """Between passes: let executors get ready for the next job (the local one's spare shims); how many
        seconds until one wants to be asked again (None: not before something happens)."""
        if not self.uses_local:
            return None
        waits = [w for w in (ex.prepare() for ex in self.executors.values()) if w is not None]
        return min(waits, default=None)

    # -- persistence -----------------------------------------------------
    def write(self, what: str, sid: str | None, fn, *args, **kwargs) -> bool:
        """Run one spool write; False if the storage refuses it (full, read-only, failing).

        The one place those errors are caught: the daemon and its running jobs
        carry on, the caller leaves things as they were or keeps what is
        unwritten for a later pass, and the failure is logged once until that
        write works again.
        """
        key = (what, sid)
        try:
            fn(*args, **kwargs)
        except OSError as e:
            name = storage_refused(e)
            if name is None:
                raise
            if key not in self.refused:
                self.refused.add(key)
                self.log.error("write_refused", what=what, service_id=sid, errno=name, error=str(e))
            self.counters.refused(name)
            return False
        if key in self.refused:
            self.refused.discard(key)
            self.log.info("write_recovered", what=what, service_id=sid)
        return True

    def save(self, job: Job, durable: bool = True) -> bool:
        """Write state.json; the state in memory stays the authority if it cannot be written yet.
        durable=False (or defer_sync): visible now, fsynced at the pass's end (make_durable)."""
        sid = job.rs.service_id
        self.saves += 1
        durable = durable and not self.defer_sync
        if self.write("state", sid, self.spool.write_atomic, job.files.state, job.rs.to_json(), durable):
            self.unsaved.pop(sid, None)
            if not durable:
                self.deferred.setdefault(sid, (job, False))
            return True
        self.unsaved[sid] = job
        return False

    def publish_queue(self) -> None:
        """queue.json: the QUEUED serviceIDs in the order they will start (start_queued's plan)."""
        if not self.queue_stale:
            return  # neither the plan nor the jobs it names changed since the file was written
        queued = [sid for sid in self.plan.order if sid in self.jobs and self.jobs[sid].rs.state == JobState.QUEUED]
        if queued == self.last_queue or self.write("queue", None, self.spool.write_atomic, self.spool.queue_file,
                                                   dump_json({"queued": queued})):
            self.last_queue, self.queue_stale = queued, False

    def write_heartbeat(self, now: float) -> None:
        body = {"pid": os.getpid(), "create_time": self.create_time, "started_at": iso(self.started_at),
                "heartbeat": iso(now), "running": len(self.holding()),
                "max_parallel_jobs": self.cfg.max_parallel_jobs,
                "isolation": self.isolation.describe() if self.isolation is not None else None}
        self.write("heartbeat", None, self.spool.write_atomic, self.spool.supervisor_file, dump_json(body))

    def write_usage_hints(self, now: float) -> None:
        """For the status page's "used so far": each running attempt's usage, at most every USAGE_HINT_SECONDS.

        A hint, not a record: never fsynced, lost for free; the durable usage
        is written with the attempt when it ends.
        """
        for job in self.holding():
            rs = job.rs
            if rs.state != JobState.RUNNING or now - self.hinted.get(rs.service_id, 0.0) < USAGE_HINT_SECONDS:
                continue
            usage = self.executor(job).live_usage(job)
            if usage is None:
                continue
            self.hinted[rs.service_id] = now
            body = {**dataclasses.asdict(self.measured(job, usage, now)), "at": iso(now), "attempt": rs.attempt}
            self.write("usage hint", rs.service_id, self.spool.write_hint, job.attempt.usage_hint, dump_json(body))

    def load_run(self, sid: str, now: float) -> Job | None:
        """Read one run from disk (start-up, or a run we did not know); adopt or finalise it."""
        files = RunFiles(self.spool, sid)
        log = self.log.bind(service_id=sid)
        try:
            spec = JobSpec.parse(read_json(files.spec), self.defs)
            rs = RunState.from_dict(read_json(files.state))
        except FileNotFoundError as e:
            log.error("run_unreadable", error=f"missing {Path(e.filename).name}")
            self.finished[sid] = now
            return None
        except SpecError as e:
            log.error("run_unreadable", error=str(e))
            self.finished[sid] = now
            return None
        job = Job(spec, self.defs[spec.job], rs, files)
        if rs.terminal:
            self.finished[sid] = rs.finished_at or now
            return job
        if rs.executor not in self.executors:
            rs.move(JobState.FAILED if rs.state != JobState.STOPPING else JobState.ABORTED,
                    f"executor {rs.executor!r} is not configured on this supervisor", now)
            self.finish(job, now)
            return job
        self.jobs[sid] = job
        if rs.state in ACTIVE:
            seen = self.executor(job).adopt(job)
            if seen is None:
                # RUNNING -> QUEUED: the daemon died between writing RUNNING and the spawn; nothing ran
                rs.move(JobState.QUEUED, "requeued: the supervisor stopped before the program started", now)
                rs.started_at = rs.pid = rs.create_time = rs.executor_id = rs.cgroup = None
                self.save(job)
                log.warning("job_requeued", reason=rs.reason)
                return job
            self.apply(job, seen, now)
            self.save(job)
            log.info("job_adopted", state=rs.state.value, pid=rs.pid, executor_id=rs.executor_id)
        return job

    def apply_retention(self, now: float) -> None:
        """Remove finished runs older than RETENTION_DAYS, and writers' stale tmp/ leftovers."""
        horizon = now - self.cfg.retention_seconds
        for sid, finished_at in list(self.finished.items()):
            if finished_at < horizon and sid not in self.unsaved:
                grave = self.spool.tmp / f"expired-{sid}-{secrets.token_hex(4)}"
                try:  # disappears atomically, then delete
                    if not self.write("retention", sid, os.rename, self.spool.runs / sid, grave):
                        continue
                except FileNotFoundError:
                    pass
                else:
                    shutil.rmtree(grave, ignore_errors=True)
                    self.log.info("run_expired", service_id=sid)
                del self.finished[sid]
        for e in os.scandir(self.spool.tmp):
            try:
                if now - e.stat(follow_symlinks=False).st_mtime > TMP_MAX_AGE:
                    shutil.rmtree(e.path) if e.is_dir(follow_symlinks=False) else os.unlink(e.path)
            except OSError:
                pass

    def recover(self, now: float) -> None:
        """Start-up: read every run, adopt live jobs, finalise the ended, keep the queue; end the cgroups
        of attempts that are over (an active job keeps its own: its counts are read when it ends)."""
        self.write("accounting", None, self.ledger.start, now)
        since = self.ledger.since(now)  # attempts that ended before are in the ledger
        ended: list[accounting.Record] = []
        for name in sorted(os.listdir(self.spool.runs)):
            if SERVICE_ID_RE.fullmatch(name):
                job = self.load_run(name, now)
                if job is not None and any((a.finished_at or 0.0) > since for a in job.rs.history):
                    ended.extend(accounting.records_of(job.rs, job.spec.owner))
        self.write("accounting", None, self.ledger.catch_up, ended, since, now)
        if self.isolation is not None and not self.isolation.layout.unavailable:
            sweep(self.isolation.layout, {j.rs.cgroup or attempt_name(j.sid, j.rs.attempt) for j in self.jobs.values()
                                          if j.rs.state in ACTIVE and j.rs.executor == "local"}, self.log)
        self.start_accounting(now)
        self.log.info("recovered", active=sum(1 for j in self.jobs.values() if j.rs.state in ACTIVE),
                      queued=sum(1 for j in self.jobs.values() if j.rs.state == JobState.QUEUED),
                      finished=len(self.finished))


def _fsync_all(paths) -> None:
    """fsync each file or directory that is there (a run moved away meanwhile has nothing left to keep)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Daemon:
    """The process around the Supervisor: lock, signals, inotify wake-ups, the loop."""

    def __init__(self, cfg: config_mod.Config, definitions: dict[str, Definition]):
        self.sup = Supervisor(cfg, definitions)
        self.cfg = cfg
        self.stopping = 0  # the signal that asked the daemon to stop
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch: Watch | None = None  # new files in incoming/ and commands/ (or watchdog's observer)
        self.observer = None

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def lock(self) -> None:
        """One daemon per spool: two would start every job twice."""
        self.lock_fd = os.open(self.sup.spool.root / "supervisor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobsError(f"another supervisor already runs on {self.sup.spool.root}") from None

    def run(self) -> None:
        self.lock()
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd carries it
        if self.cfg.supervisor_watch:
            self.start_watch()
        self.sup.recover(time.time())
        self.sup.prepare()  # a spare shim for the first job too
        log = self.sup.log
        iso = self.sup.isolation
        isolation = iso.describe() if iso is not None else None
        log.info("supervisor_started", pid=os.getpid(), spool=str(self.sup.spool.root),
                 max_parallel_jobs=self.cfg.max_parallel_jobs, watch=self.cfg.supervisor_watch, isolation=isolation,
                 default_limits=iso.defaults() if iso is not None else None)
        if isolation and isolation.startswith("not isolated"):
            log.warning("jobs_not_isolated", reason=isolation)
        tick = min(1.0, self.cfg.reconcile_seconds)
        woken_by = [ex.wake_fd for ex in self.sup.executors.values() if ex.wake_fd is not None]
        draining = False
        while True:
            if self.stopping:
                if self.stopping == signal.SIGHUP or self.cfg.supervisor_on_stop != "requeue":
                    break  # leave: jobs keep running for the next daemon to adopt
                if not draining:
                    draining = self.sup.requeue_all(time.time())
            self.sup.step(time.time())
            if draining and not any(j.rs.state in ACTIVE for j in self.sup.jobs.values()):
                break
            fds = [self.wake_r] + ([self.watch.fd] if self.watch is not None else []) + woken_by
            wait = None
            if not draining and not select.select(fds, [], [], 0)[0]:
                wait = self.sup.prepare()  # only when nothing is waiting: work first, then get ready
            ready = select.select(fds, [], [], tick if wait is None else min(tick, wait))[0]
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if self.watch is not None and self.watch.fd in ready:
                self.watch.drain()
            for ex in self.sup.executors.values():
                if ex.wake_fd is not None and ex.wake_fd in ready:
                    ex.woken()
        if self.watch is not None:
            self.watch.close()
        if self.observer:
            self.observer.stop()
            self.observer.join(5)
        try:
            os.unlink(self.sup.spool.supervisor_file)
        except OSError:
            pass
        for ex in self.sup.executors.values():
            ex.close()  # the spare shim and its cgroup
        if self.sup.isolation is not None:
            self.sup.isolation.close()
        log.info("supervisor_stopped", running_jobs_left=sum(1 for j in self.sup.jobs.values() if j.rs.state in ACTIVE))

    def _on_stop_signal(self, signum, frame) -> None:
        """Recorded only; the loop acts on it. SIGHUP always leaves jobs running (a restart in place)."""
        self.stopping = self.stopping or signum

    def start_watch(self) -> None:
        """Wake the loop when a file arrives in incoming/ or commands/: an inotify descriptor it selects on
        (supervisor/wakeup.py), else watchdog's observer threads."""
        try:
            self.watch = Watch([str(self.sup.spool.incoming), str(self.sup.spool.commands)])
        except (OSError, AttributeError) as e:  # AttributeError: a libc without inotify
            self.sup.log.warning("inotify_unavailable", error=str(e), fallback="watchdog")
            self.start_observer()

    def start_observer(self) -> None:
        from watchdog.events import (DirCreatedEvent, DirModifiedEvent, DirMovedEvent, FileCreatedEvent,
                                     FileModifiedEvent, FileMovedEvent, FileSystemEventHandler)
        from watchdog.observers import Observer

        daemon = self

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                daemon.wake()

        # Only what can bring work: the kernel then queues no open/close event for the peers that
        # read these directories (a console, jobctl), which would each cost this daemon a wake-up.
        wanted = [FileCreatedEvent, FileMovedEvent, FileModifiedEvent, DirCreatedEvent, DirMovedEvent, DirModifiedEvent]
        self.observer = Observer()
        for d in (self.sup.spool.incoming, self.sup.spool.commands):
            self.observer.schedule(Wake(), str(d), recursive=False, event_filter=wanted)
        self.observer.daemon = True
        self.observer.start()


def main(argv: list[str] | None = None) -> int:
    service_args("spool-supervisor", "Run the jobs of the spool (SPOOL_DIR): start queued jobs, watch them, "
                 "record how they end. One supervisor per spool.", argv)
    try:
        cfg = config_mod.load()
        logs.configure(cfg.log_level)
        definitions = load_definitions(cfg.definitions_dir)
        Daemon(cfg, definitions).run()
    except JobsError as e:
        print(f"spool-supervisor: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

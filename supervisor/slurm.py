"""The slurm executor: each attempt's shim runs as one Slurm batch job, all of them watched with one squeue per pass.

The batch job runs the very shim the local executor runs, through a fixed
batch script (slurm/job.sh) that gets the shim's argv as its arguments: no
shell command line is ever built from inputs. The shim writes exit.json into
the attempt directory, so the run directory (the spool) must be on a
filesystem the compute nodes share, at the same path, and the project and its
Python must be there too.

Where a job's end comes from, first to last: the attempt's exit.json (as for
local jobs); Slurm's job record (`scontrol show job -o`: JobState, ExitCode);
the job-completion log (SLURM_JOBCOMP_LOG). A job Slurm ends itself (TIMEOUT,
NODE_FAIL, OUT_OF_MEMORY, ...) fails with that reason, even when the shim
recorded the program's death by the signal Slurm sent.

A job's memory and CPU limits (jobs/limits.py) become --mem and
--cpus-per-task, so Slurm holds them on the node; a job it kills for memory
ends FAILED "out of memory". Slurm runs the job as the submitting user,
the supervisor's: no user switch happens on the nodes (README "What Slurm
confines on the nodes").

While a job waits in Slurm's queue its state stays RUNNING (the supervisor
handed it over) with no start time and the reason "pending in Slurm as job N
(Resources)"; started_at is Slurm's StartTime, so the supervisor's own
max-runtime timer never counts time spent waiting in Slurm's queue. The
executor reports these as observations (`observe`); the daemon applies and
saves them.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import signal as signals
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import structlog

from jobs.config import PROJECT_ROOT, Config
from jobs.errors import ConfigError
from jobs.limits import JobLimits, job_limits, size_text
from jobs.states import JobState

from .executor import Executor, ExitRecord, Job, Seen, read_exit, shim_argv

JOB_SCRIPT = PROJECT_ROOT / "slurm" / "job.sh"
SUBMIT_TIMEOUT = 60.0      # sbatch may wait on a busy controller
QUERY_TIMEOUT = 30.0       # squeue, scontrol, scancel
EXIT_FILE_GRACE = 2.0      # Slurm says ended but exit.json is not visible yet (shared filesystem caches)
SETTLE_SECONDS = 5.0       # a failing exit.json while Slurm still says RUNNING: wait this long for its final word
JOBCOMP_TAIL = 8 << 20     # bytes of the job-completion log searched, from its end
SQUEUE_FORMAT = "%i|%T|%r|%S|%N"

PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                   "DEADLINE", "OUT_OF_MEMORY", "REVOKED"})
# what a job Slurm ended itself failed of, as the user is told
SLURM_ENDS = {
    "NODE_FAIL": "Slurm: the node failed (NODE_FAIL)",
    "PREEMPTED": "Slurm: preempted by another job (PREEMPTED)",
    "BOOT_FAIL": "Slurm: the node failed to boot (BOOT_FAIL)",
    "DEADLINE": "Slurm: deadline reached (DEADLINE)",
    "CANCELLED": "Slurm: cancelled outside the supervisor (CANCELLED)",
}
JOB_ID = re.compile(r"\d{1,19}")
# slurmstepd's words in the job's --error file when it kills a job over its --mem without cgroups
# (JobAcctGatherParams=OverMemoryKill: the job then ends FAILED, reason JobLaunchFailure)
OVER_MEMORY = re.compile(rb"slurmstepd[^\n]*: (?:Exceeded job memory limit|[^\n]*exceeded memory limit)")
STDERR_TAIL = 64 << 10
# options that would say again what a job's limits say (jobs/limits.py), by the limit they contradict
LIMIT_OPTIONS = {"memory": ("--mem", "--mem-per-cpu", "--mem-per-gpu"), "cpus": ("--cpus-per-task", "-c")}
_NOT_YET = object()


@dataclass(frozen=True)
class SlurmExit(ExitRecord):
    """An exit record with what Slurm says about the job's end (shown first in the reason)."""
    slurm: str = ""

    def describe(self) -> str:
        known = self.exit_code is not None or self.signal is not None or self.error
        base = ExitRecord.describe(self) if known else ""
        if not self.slurm:
            return base or "no exit status recorded"
        return f"{self.slurm} ({base})" if base else self.slurm


@dataclass(frozen=True)
class Row:
    """One job as squeue lists it."""
    job_id: str
    state: str
    reason: str
    start: str
    nodes: str


@dataclass
class Tracked:
    """What the executor remembers about one active attempt (in memory only)."""
    job_id: str | None            # None: submitted before a crash, id not found yet
    row: Row | None = None        # as of the last successful poll; None: not listed
    listed: bool = False          # a successful poll has looked for it
    exit_seen_at: float | None = None  # a failing exit.json while Slurm still ran the job
    gone_since: float | None = None    # Slurm says ended, no exit.json yet


def time_limit_minutes(max_runtime_s: float) -> int:
    """sbatch --time in whole minutes, rounded up (Slurm's limits are whole minutes)."""
    return max(1, math.ceil(max_runtime_s / 60))


def limit_options(limits: JobLimits) -> list[str]:
    """The job's limits as sbatch options: memory in whole MiB and CPUs in whole CPUs, both rounded up.

    Processes have no sbatch option (Slurm does not count them); log and
    output sizes are held by the shim and the supervisor, on any executor.
    """
    options = []
    if limits.memory_bytes is not None:
        options.append(f"--mem={math.ceil(limits.memory_bytes / (1 << 20))}M")
    if limits.cpus is not None:
        options.append(f"--cpus-per-task={math.ceil(limits.cpus)}")
    return options


def slurm_isolation(limits: JobLimits) -> str:
    """The attempt's record of its confinement on Slurm: never its own user there, its limits as Slurm's."""
    held = [f"memory {size_text(limits.memory_bytes)} (--mem)" if limits.memory_bytes else "",
            f"cpus {math.ceil(limits.cpus)} (--cpus-per-task)" if limits.cpus else "",
            f"logs {size_text(limits.log_bytes)} each (the shim)" if limits.log_bytes else ""]
    note = ("not isolated: Slurm runs the job as its submitter, the supervisor's user, in the cgroups the cluster "
            "configures; limits: " + (", ".join(h for h in held if h) or "none"))
    if limits.processes:
        note += f" (not enforced on Slurm: processes {limits.processes})"
    return note


def option_sets(option: str, names: tuple[str, ...]) -> bool:
    """Whether one sbatch argument sets any of names ('--mem=4G', '-c4', '-c')."""
    return any(option == n or option.startswith(n + "=") or
               (not n.startswith("--") and option.startswith(n) and not option.startswith("--")) for n in names)


def limit_clash(limits: JobLimits, options: list[str]) -> str | None:
    """Why options contradict the job's limits (both would set Slurm's memory or CPUs), or None."""
    for limit, value, setting in (("memory", limits.memory_bytes, "JOB_MEMORY_LIMIT"),
                                  ("cpus", limits.cpus, "JOB_CPU_LIMIT")):
        clash = next((o for o in options if option_sets(o, LIMIT_OPTIONS[limit])), None)
        if value is not None and clash:
            shown = size_text(value) if limit == "memory" else f"{value:g}"
            return (f"sbatch option {clash!r} (SLURM_OPTIONS or the definition's [slurm] options) contradicts the "
                    f"job's {limit} limit of {shown} ([limits] {limit} or {setting}), which the supervisor passes "
                    "to sbatch itself: keep one of them")
    return None


def base_state(state: str) -> str:
    """'CANCELLED by 0' / 'CANCELLED+' -> 'CANCELLED'."""
    m = re.match(r"[A-Z_]+", state or "")
    return m.group(0) if m else ""


def parse_squeue(text: str) -> dict[str, Row]:
    rows = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or not parts[0]:
            continue
        job_id, state, start, nodes = parts[0], base_state(parts[1]), parts[-2], parts[-1]
        rows[job_id] = Row(job_id, state, "|".join(parts[2:-2]), start, nodes)
    return rows


def parse_record(line: str) -> dict[str, str]:
    """The fields we use from a `scontrol show job -o` line or a jobcomp/filetxt line."""
    fields = {}
    for key in ("JobId", "JobState", "Reason", "ExitCode", "NodeList"):
        m = re.search(rf"(?:^|\s){key}=(\S*)", line)
        if m:
            fields[key] = m.group(1)
    m = re.search(r"(?:^|\s)StdOut=(.*?)(?=\s[A-Za-z/:]+=|\s*$)", line)
    if m:
        fields["StdOut"] = m.group(1)
    return fields


def slurm_end_note(state: str, reason: str, minutes: int, memory_bytes: int | None = None,
                   over_memory: bool = False) -> str | None:
    """What to tell the user when Slurm itself ended the job; None for an ordinary end.

    over_memory: slurmstepd said in the job's stderr that it killed the job for memory.
    """
    if state == "TIMEOUT" or reason == "TimeLimit":
        return f"timeout: Slurm time limit of {minutes} min"
    if state == "OUT_OF_MEMORY" or over_memory:
        shown = f"{size_text(memory_bytes)} " if memory_bytes else ""
        return f"out of memory: used more than its {shown}limit in Slurm"
    return SLURM_ENDS.get(state)


class SlurmExecutor(Executor):
    """Submits each attempt with sbatch, watches all of them with one squeue per pass, stops them with scancel."""

    name = "slurm"

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run):
        self.cfg = cfg
        self.clock = clock
        self._subprocess_run = run
        self.tracked: dict[str, Tracked] = {}
        self.news: dict[str, Seen] = {}  # observed since the daemon last asked (observe)
        self.next_poll = 0.0
        self.last_poll = 0.0
        self.poll_ok = False
        self.poll_failures = 0
        self.log = structlog.get_logger("supervisor.slurm")

    def command(self, name: str) -> str:
        return str(self.cfg.slurm_bin_dir / name) if self.cfg.slurm_bin_dir else name

    def check(self) -> None:
        """At start-up, when Slurm is the configured executor: the commands must be there."""
        missing = [n for n in ("sbatch", "squeue", "scontrol", "scancel") if not shutil.which(self.command(n))]
        if missing:
            where = f"SLURM_BIN_DIR={self.cfg.slurm_bin_dir}" if self.cfg.slurm_bin_dir else "PATH"
            raise ConfigError(f"EXECUTOR=slurm: {', '.join(missing)} not found on {where}")
        if not os.access(JOB_SCRIPT, os.X_OK):
            raise ConfigError(f"EXECUTOR=slurm: the batch script {JOB_SCRIPT} is missing or not executable")

    # -- the Executor protocol ---------------------------------------------
    def start(self, job: Job, argv: list[str], env: dict[str, str]) -> Seen:
        adir = job.attempt_dir
        for d in (job.run_dir, adir):  # sbatch would run the job in /tmp without --chdir's directory
            if not d.is_dir():
                raise FileNotFoundError(f"{d} does not exist; not submitting to Slurm")
        if "%" in str(adir):
            raise OSError(f"{adir} contains '%', which sbatch would expand in --output/--error")
        limits = job_limits(job.definition, self.cfg)
        shim_options = [f"log_bytes={limits.log_bytes}"] if limits.log_bytes else []  # the shim cuts them on the node
        r = self._run("sbatch", self.sbatch_args(job) + [str(JOB_SCRIPT), *shim_argv(job, argv, shim_options)],
                      env=env, timeout=SUBMIT_TIMEOUT, raise_errors=True)
        if r is None:  # timed out: the controller may have accepted it all the same
            job_id = self._lookup(job)
            if not job_id:
                raise OSError(f"sbatch did not answer within {SUBMIT_TIMEOUT:g} s")
        elif r.returncode != 0:
            detail = " / ".join(line.strip() for line in r.stderr.strip().splitlines()[-3:]) or "no message"
            raise OSError(f"sbatch failed (exit {r.returncode}): {detail}")
        else:
            job_id = r.stdout.strip().split(";")[0]
            if not JOB_ID.fullmatch(job_id):
                raise OSError(f"sbatch printed no job id: {r.stdout.strip()[:200]!r}")
        self.tracked[job.sid] = Tracked(job_id)
        self.next_poll = 0.0  # learn soon whether it runs or waits
        self.log.info("slurm_submitted", service_id=job.sid, slurm_job_id=job_id)
        # no start time until Slurm starts it: queue time is not runtime
        return Seen(executor_id=job_id, waiting=True, reason=f"submitted to Slurm as job {job_id}",
                    isolation=slurm_isolation(limits))

    def sbatch_args(self, job: Job) -> list[str]:
        """sbatch's options for this attempt: an argv list, never a shell string; OSError if its options
        contradict its limits."""
        d, a = job.definition, job.attempt
        args = [
            "--parsable",
            f"--job-name={job.sid}",
            f"--chdir={job.run_dir}",
            f"--output={a.stdout}",
            f"--error={a.stderr}",
            "--open-mode=append",  # the shim appends the program's output to the same files
            # The job's variables (JOB_*, the definition's [env]) are in sbatch's own
            # environment: values with commas cannot be passed inside --export.
            "--export=ALL",
            f"--time={time_limit_minutes(d.max_runtime_s)}",
            "--no-requeue",  # a retry is a new attempt of ours, never a silent rerun in this one
        ]
        partition = d.slurm.partition or self.cfg.slurm_partition
        account = d.slurm.account or self.cfg.slurm_account
        if partition:
            args.append(f"--partition={partition}")
        if account:
            args.append(f"--account={account}")
        limits = job_limits(d, self.cfg)
        extra = list(self.cfg.slurm_options) + list(d.slurm.options)
        clash = limit_clash(limits, extra)
        if clash:
            raise OSError(clash)
        return args + limit_options(limits) + extra

    def adopt(self, job: Job) -> Seen | None:
        rs = job.rs
        if rs.executor_id and JOB_ID.fullmatch(rs.executor_id):
            self.tracked[job.sid] = Tracked(rs.executor_id)
            return Seen()
        # The supervisor stopped between writing RUNNING and recording the job id.
        found = self._lookup(job)
        if found:
            self.tracked[job.sid] = Tracked(found)
            return Seen(executor_id=found)
        if found is None or read_exit(job.attempt) is not None:
            self.tracked[job.sid] = Tracked(None)  # Slurm unreachable (look again later), or it ran
            return Seen()
        return None  # Slurm has no such job: nothing ran, run it

    def ended(self, jobs: list[Job], full: bool) -> list[tuple[Job, ExitRecord | None]]:
        now = self.clock()
        exits = {job.sid: read_exit(job.attempt) for job in jobs}
        for job in jobs:
            if job.sid not in self.tracked:
                known = job.rs.executor_id
                self.tracked[job.sid] = Tracked(known if known and JOB_ID.fullmatch(known) else None)
        settling = any(self.tracked[j.sid].exit_seen_at is not None or self._failed_running(j, exits[j.sid])
                       for j in jobs)
        if full or now >= self.next_poll or (settling and now - self.last_poll >= 0.25):
            self._poll([j for j in jobs if self.tracked[j.sid].job_id], now)
        done = []
        for job in jobs:
            t = self.tracked[job.sid]
            if t.job_id is None:
                outcome = self._unidentified(job, t, exits[job.sid], full)
            elif exits[job.sid] is not None:
                outcome = self._with_exit_file(job, t, exits[job.sid], now)
            else:
                outcome = self._without_exit_file(job, t, now)
            if outcome is not _NOT_YET:
                done.append((job, outcome))
        return done

    def signal(self, job: Job, sig: int) -> None:
        t = self.tracked.get(job.sid)
        job_id = (t.job_id if t else None) or job.rs.executor_id
        if not job_id:
            return
        if t is not None and t.row is not None and t.row.state not in PENDING and t.row.state not in ENDED:
            name = signals.Signals(sig).name.removeprefix("SIG")
            # --full: the batch script's whole process group (shim and program), as killpg does locally.
            # Slurm turns KILL into a cancel: TERM, then KILL after slurm.conf's KillWait.
            r = self._run("scancel", [f"--signal={name}", "--full", job_id])
            if r is not None and r.returncode == 0:
                self.log.info("slurm_signalled", service_id=job.sid, slurm_job_id=job_id, signal=name)
                return
        # Not running (yet), as far as we know: cancel it outright, wherever it is.
        self._run("scancel", [job_id])
        self.log.info("slurm_cancelled", service_id=job.sid, slurm_job_id=job_id)

    def observe(self, jobs: list[Job]) -> list[tuple[Job, Seen]]:
        return [(job, self.news.pop(job.sid)) for job in jobs if job.sid in self.news]

    def forget(self, job: Job) -> None:
        # The shim has ended (or Slurm says the job has): job.sh killed what the job
        # left in its process group, and Slurm ends the allocation with the script.
        self.tracked.pop(job.sid, None)
        self.news.pop(job.sid, None)

    # -- deciding ---------------------------------------------------------------
    def _failed_running(self, job: Job, rec: ExitRecord | None) -> bool:
        return (rec is not None and not (rec.exit_code == 0 and not rec.error)
                and job.rs.state == JobState.RUNNING)

    def _with_exit_file(self, job: Job, t: Tracked, rec: ExitRecord, now: float):
        """The shim recorded the end; Slurm may know why (its time limit, the OOM killer, a node failure)."""
        if (rec.exit_code == 0 and not rec.error) or job.rs.state != JobState.RUNNING:
            return rec  # success, or a stop we asked for (its reason wins)
        if not self.poll_ok or t.row is None:
            return rec  # Slurm cannot tell us more
        note = self._end_note(job, t.row.state, t.row.reason)
        if note:
            return SlurmExit(rec.exit_code, rec.signal, rec.error, slurm=note)
        if t.row.state in ENDED:
            return rec
        if t.exit_seen_at is None:
            t.exit_seen_at = now
        if now - t.exit_seen_at < SETTLE_SECONDS:
            return _NOT_YET  # still RUNNING/COMPLETING in Slurm: its final word comes within moments
        return rec

    def _without_exit_file(self, job: Job, t: Tracked, now: float):
        if not (self.poll_ok and t.listed):
            return _NOT_YET
        row = t.row
        if row is not None and row.state not in ENDED:
            t.gone_since = None
            self._show(job, t, row, now)
            return _NOT_YET
        # Slurm says it ended, or no longer knows it. If it ran, the shim's exit.json
        # may still be on its way through the shared filesystem.
        ran = row is None or bool(row.nodes)
        if t.gone_since is None:
            t.gone_since = now
        if ran and now - t.gone_since < EXIT_FILE_GRACE:
            return _NOT_YET
        rec = read_exit(job.attempt)
        if rec is not None:
            return self._with_exit_file(job, t, rec, now)
        return self._from_slurm(job, t.job_id, row)

    def _unidentified(self, job: Job, t: Tracked, rec: ExitRecord | None, full: bool):
        """Adopted without a job id (crash right after sbatch, Slurm unreachable at start-up)."""
        if rec is not None:
            return rec
        if not full:
            return _NOT_YET
        found = self._lookup(job)
        if found:
            t.job_id = found
            self.news[job.sid] = Seen(executor_id=found)
            return _NOT_YET
        if found is None:
            return _NOT_YET
        return SlurmExit(None, None, slurm="the supervisor stopped while submitting this attempt, "
                                           "and Slurm has no job for it")

    def _from_slurm(self, job: Job, job_id: str, row: Row | None) -> SlurmExit:
        """No exit.json: Slurm's job record, else the job-completion log, else what squeue said."""
        info = self._scontrol(job_id) or self._jobcomp(job_id)
        if not info and row is not None:
            info = {"JobState": row.state, "Reason": row.reason}
        if not info:
            return SlurmExit(None, None, slurm=f"Slurm job {job_id} ended without an exit record, "
                                               "and Slurm no longer knows it")
        state, reason = base_state(info.get("JobState", "")), info.get("Reason", "")
        code, sig = 0, 0
        m = re.fullmatch(r"(\d+):(\d+)", info.get("ExitCode", ""))
        if m:
            code, sig = int(m.group(1)), int(m.group(2))
        note = self._end_note(job, state, reason)
        if job.rs.state == JobState.STOPPING and state == "CANCELLED":
            note = f"Slurm job {job_id} cancelled"  # by our own stop, not "outside the supervisor"
        if not note:
            why = f", {reason}" if reason and reason != "None" else ""
            note = f"Slurm job {job_id} {state or 'ended'}{why}, no exit record"
        if state == "COMPLETED" and code == 0 and sig == 0:
            return SlurmExit(0, None, slurm=note)
        return SlurmExit(code if code and not sig else None, sig or None, slurm=note)

    def _end_note(self, job: Job, state: str, reason: str) -> str | None:
        """slurm_end_note for this job: its time and memory limits, and whether slurmstepd killed it for memory."""
        over = state in ("FAILED", "CANCELLED") and self._killed_for_memory(job)
        return slurm_end_note(state, reason, time_limit_minutes(job.definition.max_runtime_s),
                              job_limits(job.definition, self.cfg).memory_bytes, over)

    @staticmethod
    def _killed_for_memory(job: Job) -> bool:
        try:
            with open(job.attempt.stderr, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - STDERR_TAIL))
                return OVER_MEMORY.search(f.read()) is not None
        except OSError:
            return False

    def _show(self, job: Job, t: Tracked, row: Row, now: float) -> None:
        """Report the reason and start time Slurm gives, when they differ from the state's (the façade shows them)."""
        rs = job.rs
        started = rs.started_at
        if row.state in PENDING:
            why = f" ({row.reason})" if row.reason and row.reason != "None" else ""
            text = f"pending in Slurm as job {t.job_id}{why}"
        else:
            if started is None:
                started = self._start_time(row.start, now)
            where = f" on {row.nodes}" if row.nodes else ""
            text = f"running in Slurm as job {t.job_id}{where}" + ("" if row.state == "RUNNING" else f" ({row.state})")
        changed = started != rs.started_at or (rs.state == JobState.RUNNING and text != rs.reason)
        if not changed:
            return
        if rs.started_at is None and started is not None:
            self.log.info("slurm_running", service_id=job.sid, slurm_job_id=t.job_id, nodes=row.nodes)
        self.news[job.sid] = Seen(started_at=started if started != rs.started_at else None, reason=text)

    @staticmethod
    def _start_time(text: str, now: float) -> float:
        """Slurm's StartTime (controller-local ISO time), never in the future."""
        try:
            return min(datetime.fromisoformat(text).timestamp(), now)
        except ValueError:
            return now

    # -- talking to Slurm -----------------------------------------------------
    def _run(self, name: str, args: list[str], env: dict[str, str] | None = None,
             timeout: float = QUERY_TIMEOUT, raise_errors: bool = False) -> subprocess.CompletedProcess | None:
        """Run one Slurm command; None if it timed out or could not run (raised instead if asked)."""
        argv = [self.command(name), *args]
        try:
            return self._subprocess_run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                        text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log.warning("slurm_command_timeout", command=name, timeout=timeout)
            return None
        except OSError as e:
            if raise_errors:
                raise OSError(f"cannot run {argv[0]}: {e.strerror or e}") from None
            self.log.warning("slurm_command_failed", command=name, error=str(e))
            return None

    def _poll(self, jobs: list[Job], now: float) -> None:
        """One squeue for every active job of this executor."""
        self.last_poll = now
        self.next_poll = now + self.cfg.slurm_poll_seconds
        ids = sorted({self.tracked[j.sid].job_id for j in jobs}, key=lambda x: (len(x), x))
        if not ids:
            return
        r = self._run("squeue", ["-h", "-t", "all", "-j", ",".join(ids), "-o", SQUEUE_FORMAT])
        if r is not None and r.returncode != 0 and "Invalid job id" in r.stderr:
            rows = {}  # none of them is known any more
        elif r is None or r.returncode != 0:
            # Slurm unreachable: nothing is concluded (jobs stay as they are); say so now and then.
            if self.poll_failures % 30 == 0:
                self.log.warning("slurm_poll_failed", failures=self.poll_failures + 1,
                                 error=(r.stderr.strip()[-300:] if r else "no answer"))
            self.poll_failures += 1
            self.poll_ok = False
            return
        else:
            rows = parse_squeue(r.stdout)
        if not self.poll_ok:
            self.log.info("slurm_poll_ok", jobs=len(ids), after_failures=self.poll_failures)
        self.poll_ok, self.poll_failures = True, 0
        for job in jobs:
            t = self.tracked[job.sid]
            t.row, t.listed = rows.get(t.job_id), True

    def _scontrol(self, job_id: str) -> dict[str, str] | None:
        r = self._run("scontrol", ["show", "job", "-o", job_id])
        if r is None or r.returncode != 0 or f"JobId={job_id} " not in r.stdout:
            return None
        return parse_record(r.stdout.strip().splitlines()[0])

    def _jobcomp(self, job_id: str) -> dict[str, str] | None:
        path = self.cfg.slurm_jobcomp_log
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - JOBCOMP_TAIL))
                data = f.read()
        except OSError:
            return None
        prefix = f"JobId={job_id} ".encode()
        for line in reversed(data.splitlines()):
            if line.startswith(prefix):
                return parse_record(line.decode("utf-8", "replace"))
        return None

    def _lookup(self, job: Job) -> str | None:
        """The Slurm job of this attempt, found by name and output file: its id, '' if none, None if Slurm is unreachable."""
        r = self._run("squeue", ["-h", "-t", "all", f"--user={os.getuid()}", f"--name={job.sid}", "-o", "%i"])
        if r is None or r.returncode != 0:
            return None
        want = job.attempt.stdout
        for job_id in sorted({x for x in r.stdout.split() if JOB_ID.fullmatch(x)}, key=int, reverse=True):
            info = self._scontrol(job_id)
            if info and info.get("StdOut") == want:
                return job_id
        return ""

"""How this supervisor confines its local jobs: decided once at start-up, applied to each attempt.

At start-up it finds the cgroups it may write (supervisor/cgroups.py) and
whether it may switch users (supervisor/confine.py), and resolves JOB_USER and
PROJECT_USERS. What it cannot do is not an error: jobs then run without it,
and `describe()` (the start-up log, supervisor.json for /readyz) and each
attempt's note (RunState.isolation) say "not isolated: <why>" in words.
"""
from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.config import Config
from jobs.errors import ConfigError
from jobs.limits import JobLimits, job_limits, size_text

from . import cgroups, confine


def cgroup_parent(cfg: Config) -> str:
    """CGROUP_PARENT/spool-<hash of SPOOL_DIR>: each spool's supervisor sweeps only its own attempts' cgroups."""
    return f"{cfg.cgroup_parent.rstrip('/')}/{spool_cgroup(cfg.spool_dir)}"


def spool_cgroup(spool_dir: str | os.PathLike) -> str:
    """The name of a spool's own cgroup under CGROUP_PARENT."""
    return "spool-" + hashlib.sha1(os.fsencode(os.path.realpath(spool_dir))).hexdigest()[:12]


def remove_spool_cgroups(spool_dirs: Iterable[str | os.PathLike],
                         mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """End and remove these spools' cgroups in every mounted hierarchy; the ones that would not go.

    For spools given up after their supervisor stopped (a test's, a
    benchmark's, a decommissioned one). A stopping supervisor leaves its
    running jobs and their cgroups to the next supervisor of the spool, which
    sweeps them at its start; without a next one nobody does, and a machine
    that runs many such spools collects them until it can make no more memory
    cgroups (65,535 at most, the removed ones the kernel still holds counted).
    """
    names = {spool_cgroup(d) for d in spool_dirs}
    return cgroups.remove_trees(names, mountinfo) if names else []


@dataclass
class Confined:
    """One attempt's confinement: what the shim applies, its cgroup (None: process group only), the note."""
    options: list[str]
    cgroup: cgroups.Attempt | None
    note: str
    limits: JobLimits


class Isolation:
    """What this machine lets the supervisor do to keep jobs apart, and how each attempt gets it."""

    def __init__(self, cfg: Config, layout: cgroups.Layout | None = None, can_switch: str | None = None):
        self.cfg = cfg
        self.users: dict[str, confine.JobUser] = {}
        if cfg.job_isolation == "off":
            self.layout = cgroups.Layout("none", {}, "not isolated: JOB_ISOLATION=off")
            self.user_problem: str | None = "not isolated: JOB_ISOLATION=off"
            return
        self.layout = layout if layout is not None else cgroups.setup(parent=cgroup_parent(cfg))
        self.user_problem = can_switch if can_switch is not None else confine.switch_problem()
        names = {n for n in (cfg.job_user, *cfg.project_users.values()) if n}
        if self.user_problem is None and not names:
            self.user_problem = ("not isolated: no JOB_USER configured: jobs run as the supervisor's user "
                                 "(set JOB_USER to an unprivileged user)")
        if self.user_problem is None:
            for name in sorted(names):
                try:
                    self.users[name] = confine.lookup_user(name)
                except ValueError as e:
                    raise ConfigError(f"JOB_USER / PROJECT_USERS: {e}") from None

    def describe(self) -> str:
        """One line: how jobs are confined here, or "not isolated: ..." with every reason."""
        problems = [p.removeprefix("not isolated: ") for p in (self.user_problem, self.layout.unavailable) if p]
        if problems:
            return "not isolated: " + "; ".join(dict.fromkeys(problems))
        users = ", ".join(f"{u.name} (uid {u.uid})" for u in self.users.values())
        return f"isolated: jobs run as {users}; {self.layout.describe()}"

    def close(self) -> None:
        """At the supervisor's stop: remove this spool's cgroup parent where no attempt is left in it."""
        for h in self.layout.hierarchies:
            try:
                os.rmdir(h.base)
            except OSError:
                pass  # attempts still run in it (they are left for the next supervisor), or it is gone

    def defaults(self) -> str:
        """The limits a definition that sets none gets (JOB_*_LIMIT), for the start-up log."""
        cfg = self.cfg
        return _limits_text(cfg.job_memory_limit, cfg.job_cpu_limit, cfg.job_process_limit, cfg.job_log_limit)

    def user_for(self, project: str | None) -> confine.JobUser | None:
        name = confine.user_name_for(project or "", self.cfg.job_user, self.cfg.project_users)
        return None if self.user_problem or not name else self.users.get(name)

    def spare_cgroup(self) -> cgroups.Attempt | None:
        """A cgroup without limits for a spare shim, under a fresh name; None where there are none (or refused:
        the next job then gets its own cgroup the slow way, and says so if that fails too)."""
        if self.layout.unavailable:
            return None
        try:
            return self.layout.create(cgroups.fresh_name())
        except cgroups.CgroupError:
            return None

    def confine(self, job, spare: cgroups.Attempt | None = None, oom_score_adj: int | None = None) -> Confined:
        """Make the attempt's cgroup (with its limits) and the shim's options; never raises for the machine,
        except for `spare`: a cgroup made ahead of need that the shim is in already, which takes the attempt's
        limits (the shim counts as one more process; the program, born inside, gets back `oom_score_adj`
        from a shim kept from the OOM killer); CgroupError if refused (the caller then starts cold)."""
        limits = job_limits(job.definition, self.cfg)
        user = self.user_for(job.spec.owner.get("project"))
        problems = [] if user is not None else [self.user_problem or "not isolated: the project has no job user"]
        attempt, unenforced = None, []
        if spare is not None:
            spare.limit(cgroups.Limits(limits.memory_bytes, limits.cpus,
                                       None if limits.processes is None else limits.processes + 1))
            attempt, unenforced = spare, list(spare.unenforced)
        elif self.layout.unavailable:
            problems.append(self.layout.unavailable)
        else:
            try:
                attempt = self._create(job, limits)
                unenforced = list(attempt.unenforced)
            except (cgroups.CgroupError, ValueError) as e:
                problems.append(f"not isolated: cannot create its cgroup: {e}")
        nproc = None
        if limits.processes is not None and (attempt is None or not self.layout.roles.get("pids")):
            if user is not None:
                nproc = limits.processes  # RLIMIT_NPROC: counts all of the user's processes
                unenforced = [u for u in unenforced if "process" not in u and "pids" not in u]
        plan = confine.Plan(cgroup_procs=attempt.procs_files() if attempt and spare is None else (),
                            uid=user.uid if user else None, gid=user.gid if user else None,
                            nproc=nproc, no_new_privs=user is not None, oom_score_adj=oom_score_adj)
        options = plan.to_fields() + ([f"log_bytes={limits.log_bytes}"] if limits.log_bytes else [])
        return Confined(options, attempt, self._note(user, attempt, limits, problems, unenforced), limits)

    def _create(self, job, limits: JobLimits) -> cgroups.Attempt:
        """The attempt's cgroups; a leftover of the same name (a start that never ran) is ended first."""
        name = cgroups.attempt_name(job.sid, job.rs.attempt)
        want = cgroups.Limits(limits.memory_bytes, limits.cpus, limits.processes)
        try:
            return self.layout.create(name, want)
        except cgroups.CgroupError as e:
            if e.errno != errno.EEXIST and "File exists" not in str(e):
                raise
        old = self.layout.attempt(name)
        old.kill()
        old.remove()
        return self.layout.create(name, want)

    @staticmethod
    def _note(user, attempt, limits: JobLimits, problems: list[str], unenforced: list[str]) -> str:
        limits_text = "limits: " + _limits_text(limits.memory_bytes, limits.cpus, limits.processes, limits.log_bytes)
        if unenforced:
            limits_text += " (not enforced here: " + ", ".join(unenforced) + ")"
        if problems:
            reasons = dict.fromkeys(p.removeprefix("not isolated: ") for p in problems)  # =off: both say it
            return "not isolated: " + "; ".join(reasons) + "; " + limits_text
        return f"isolated: runs as {user.name} (uid {user.uid}) in cgroup {attempt.name}; {limits_text}"


def _limits_text(memory: int | None, cpus: float | None, processes: int | None, logs: int | None) -> str:
    shown = [f"memory {size_text(memory)}" if memory else "", f"cpus {cpus:g}" if cpus else "",
             f"processes {processes}" if processes else "", f"logs {size_text(logs)} each" if logs else ""]
    return ", ".join(s for s in shown if s) or "none"


def sweep(layout: cgroups.Layout, keep: set[str], log) -> None:
    """Start-up: end and remove the cgroups of attempts that are over (not in keep)."""
    for name in layout.leftovers():
        if name in keep:
            continue
        old = layout.attempt(name)
        problem = old.kill() or old.remove()
        if problem:
            log.warning("cgroup_leftover", cgroup=name, problem=problem)
        else:
            log.info("cgroup_leftover_removed", cgroup=name)


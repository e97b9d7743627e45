"""Fair share between projects: which QUEUED job gets the next free slot, as a pure function.

Slurm's idea: a project's usage (decayed slot-seconds, jobs/usagehistory.py,
plus what its running jobs used so far) divided by its share; the next slot
goes to the project furthest below its share, first come first served within
a project. The whole queue is ordered by projecting that choice: each job
placed charges its project one mean attempt, so projects interleave in
proportion to their shares. Caps on running jobs per project and per job type
hold a job back; the jobs behind it in other projects pass.

Cost: O(queued log projects) per call, never O(queued^2).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple

from jobs.usagehistory import decayed_seconds


class Waiting(NamedTuple):
    """A QUEUED job as the policy sees it (a tuple: 10,000 of them are made per pass)."""
    queued_at: float
    sid: str
    project: str
    job: str
    not_before: float | None = None  # a retry's delay: not startable before


class Running(NamedTuple):
    """A job holding a slot (RUNNING or STOPPING); started_at None: it holds the slot but runs nowhere yet."""
    project: str
    job: str
    started_at: float | None


@dataclass(frozen=True)
class Policy:
    """The settings of fair share (from jobs/config.py)."""
    shares: Mapping[str, float] = field(default_factory=dict)  # a project not named has weight 1
    half_life_s: float = 86400.0
    max_running_per_project: int = 0  # 0: no cap
    max_running_per_job: Mapping[str, int] = field(default_factory=dict)  # job type -> cap

    @classmethod
    def from_config(cls, cfg) -> Policy:
        return cls(dict(cfg.project_shares), cfg.fair_share_half_life_hours * 3600.0,
                   cfg.max_running_per_project, dict(cfg.max_running_per_job))

    def share(self, project: str) -> float:
        return self.shares.get(project, 1.0)


@dataclass(frozen=True)
class Plan:
    """Every queued serviceID, first to start first; order[:ready] may start now, in that order.

    Behind them wait the jobs a cap holds back, then those whose retry delay
    has not passed (by the time it ends); next_change: when the first of those
    delays ends.
    """
    order: list[str]
    ready: int
    next_change: float | None = None


def plan(waiting: Iterable[Waiting], running: Iterable[Running], usage: Mapping[str, float],
         policy: Policy, now: float, unit: float = 1.0) -> Plan:
    """The dispatch order under fair share.

    waiting: Waiting tuples (plain tuples in its field order will do); usage: each
    project's decayed usage of ended attempts at `now`; unit: the slot-seconds one
    placed job is expected to cost its project (a mean attempt).
    """
    later: list[Waiting] = []
    queues: dict[str, list[Waiting]] = {}
    for w in sorted(waiting):  # (queued_at, sid): first come, first served within a project
        if w[4] is not None and w[4] > now:
            later.append(w)
        elif w[2] in queues:
            queues[w[2]].append(w)
        else:
            queues[w[2]] = [w]
    load = {p: usage.get(p, 0.0) for p in queues}
    per_project: Counter[str] = Counter()
    per_job: Counter[str] = Counter()
    for project, job, started_at in running:
        per_project[project] += 1
        per_job[job] += 1
        if project in load and started_at is not None:
            load[project] += decayed_seconds(started_at, now, now, policy.half_life_s)
    project_cap, job_caps = policy.max_running_per_project, policy.max_running_per_job
    weight = {p: 1.0 / policy.share(p) for p in queues}
    heap = [(load[p] * weight[p], q[0][0], p, 0) for p, q in queues.items()]
    heapq.heapify(heap)
    order: list[str] = []
    held: list[Waiting] = []
    while heap:
        p, i = heap[0][2], heap[0][3]
        q = queues[p]
        if project_cap and per_project[p] >= project_cap:
            held.extend(q[i:])  # this project waits; the others pass
            i = len(q)
        while job_caps and i < len(q) and per_job[q[i][3]] >= job_caps.get(q[i][3], math.inf):
            held.append(q[i])  # its job type is at its cap: the project's next job may pass
            i += 1
        if i < len(q):
            order.append(q[i][1])
            if project_cap or job_caps:
                per_project[p] += 1
                per_job[q[i][3]] += 1
            load[p] += unit
            i += 1
        if i < len(q):
            heapq.heapreplace(heap, (load[p] * weight[p], q[i][0], p, i))
        else:
            heapq.heappop(heap)
    ready = len(order)
    order.extend(w[1] for w in held)
    later.sort(key=lambda w: (w[4], w[0], w[1]))
    order.extend(w[1] for w in later)
    return Plan(order, ready, later[0][4] if later else None)

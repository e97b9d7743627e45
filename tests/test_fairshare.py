"""Fair share as specifications: the pure policy (supervisor/fairshare.py), the usage history
(jobs/usagehistory.py) and their settings. The supervisor's use of them is in test_supervisor_rules.py."""
from __future__ import annotations

import json
import math
import time

import pytest

from harness import write_env
from jobs import config, usagehistory
from jobs.errors import ConfigError, SpecError
from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.usagehistory import NO_PROJECT, UsageHistory, decayed_seconds, project_of
from supervisor.fairshare import Policy, Running, Waiting, plan

NOW = 1_800_000_000.0
HOUR = 3600.0


def waiting(spec: str, at: float = NOW - 100, job: str = "waiter") -> list[Waiting]:
    """'A3 B2': three jobs of A (a0 a1 a2), then two of B, queued one second apart in that order."""
    jobs = []
    for group in spec.split():
        project, count = group[0], int(group[1:])
        for i in range(count):
            jobs.append(Waiting(at + len(jobs), f"{project.lower()}{i}", project, job))
    return jobs


def order(*args, **kwargs) -> str:
    return " ".join(plan(*args, **kwargs).order)


# -- the policy ------------------------------------------------------------------------------

def test_with_no_usage_projects_alternate_and_each_keeps_its_order():
    """Equal shares, nothing used yet: one job of each project in turn, first come first served within each."""
    assert "a0 b0 a1 b1 a2 a3" == order(waiting("A4 B2"), [], {}, Policy(), NOW)


def test_the_project_that_used_least_goes_first():
    """A used 1000 slot-seconds, B 10: B's jobs come first until B has caught up."""
    assert "b0 b1 b2 a0 a1" == order(waiting("A2 B3"), [], {"A": 1000.0, "B": 10.0}, Policy(), NOW, unit=100)


def test_running_jobs_count_what_they_used_so_far():
    """Two of A's jobs running for an hour weigh as much as usage recorded."""
    running = [Running("A", "waiter", NOW - HOUR), Running("A", "waiter", NOW - HOUR)]
    assert "b0 b1 a0 a1" == order(waiting("A2 B2"), running, {"B": 3000.0}, Policy(), NOW, unit=1000)
    assert "a0 a1 b0 b1" == order(waiting("A2 B2"), [], {"B": 3000.0}, Policy(), NOW, unit=1000)


def test_shares_divide_the_usage():
    """A weighs 3, B 1: the same usage puts A below its share, and A gets three jobs for each of B's."""
    policy = Policy(shares={"A": 3.0})
    assert "a0 a1 b0 a2 a3 a4 b1 a5" == order(waiting("A6 B2"), [], {"A": 20.0, "B": 10.0}, policy, NOW, unit=10)


def test_a_project_cap_holds_its_jobs_behind_everyone_elses():
    """max_running_per_project=2 with one of A's running: one more of A may start, then B's; A's rest wait."""
    p = plan(waiting("A3 B2"), [Running("A", "waiter", NOW)], {}, Policy(max_running_per_project=2), NOW)
    assert (["a0", "b0", "b1", "a1", "a2"], 3) == (p.order, p.ready)


def test_a_job_type_cap_lets_other_types_of_the_same_project_pass():
    """max_running_per_job waiter:1: the second waiter waits, a job of another type behind it may start."""
    jobs = waiting("A2") + [Waiting(NOW, "x0", "A", "other")]
    p = plan(jobs, [], {}, Policy(max_running_per_job={"waiter": 1}), NOW)
    assert (["a0", "x0", "a1"], 2) == (p.order, p.ready)


def test_jobs_waiting_for_a_retry_delay_come_last_in_the_order_their_delays_end():
    """A retry not due yet is not startable; the plan says when the first delay ends."""
    jobs = waiting("A2") + [Waiting(NOW - 500, "late2", "B", "waiter", NOW + 20),
                            Waiting(NOW - 400, "late1", "B", "waiter", NOW + 10)]
    p = plan(jobs, [], {}, Policy(), NOW)
    assert (["a0", "a1", "late1", "late2"], 2, NOW + 10) == (p.order, p.ready, p.next_change)


def test_ten_thousand_jobs_of_fifty_projects_are_ordered_in_well_under_a_second():
    """The policy is O(queued log projects): 10,000 jobs over 50 projects."""
    jobs = [Waiting(NOW + i, f"j{i}", f"p{i % 50}", "waiter") for i in range(10_000)]
    usage = {f"p{i}": float(i) for i in range(50)}
    t0 = time.process_time()
    p = plan(jobs, [Running("p1", "waiter", NOW - 60)] * 4, usage, Policy(max_running_per_project=100), NOW)
    took = time.process_time() - t0
    print(f"plan() of 10,000 jobs over 50 projects: {took * 1000:.1f} ms CPU")
    assert 10_000 == len(p.order) == len(set(p.order)) and 50 * 100 - 4 == p.ready
    assert took < 0.5


# -- the usage history --------------------------------------------------------------------------

def test_a_slot_second_counts_half_after_one_half_life():
    """decayed_seconds weighs each second by 2^(-age / half-life); with a long half-life it is plain seconds."""
    assert math.isclose(50.0, decayed_seconds(NOW - HOUR - 100, NOW - HOUR, NOW, HOUR), rel_tol=0.02)
    assert math.isclose(100.0, decayed_seconds(NOW - 100, NOW, NOW, 1e9), rel_tol=1e-6)
    assert 0.0 == decayed_seconds(NOW, NOW + 50, NOW, HOUR)


def test_the_history_decays_and_survives_its_file():
    """What was charged halves per half-life; usage.json read back gives the same history."""
    h = UsageHistory(HOUR, NOW)
    h.charge("A", NOW - 100, NOW, NOW)
    assert math.isclose(h.usage["A"] / 2, h.weighed_at(NOW + HOUR)["A"])
    again = UsageHistory.parse(json.loads(h.to_json()), HOUR, NOW + 10)
    assert (pytest.approx(h.usage), pytest.approx(h.attempts), NOW) == (again.usage, again.attempts, again.at)
    assert math.isclose(100.0, h.mean_attempt_s(), rel_tol=0.01)


@pytest.mark.parametrize("data, problem", [
    ([], "schema_version"),
    ({"schema_version": 1, "at": "yesterday", "ended_attempts": 0, "usage": {}}, "'at'"),
    ({"schema_version": 1, "at": "2099-01-01T00:00:00+00:00", "ended_attempts": 0, "usage": {}}, "future"),
    ({"schema_version": 1, "at": "2027-01-15T08:00:00+00:00", "ended_attempts": -1, "usage": {}}, "attempts"),
    ({"schema_version": 1, "at": "2027-01-15T08:00:00+00:00", "ended_attempts": 0, "usage": {"A": float("nan")}}, "'A'"),
    ({"schema_version": 1, "at": "2027-01-15T08:00:00+00:00", "ended_attempts": 0, "usage": {"A": "1"}}, "'A'"),
])
def test_a_usage_file_that_is_not_ours_is_refused(data, problem):
    """usage.json is validated: shape, times, finite non-negative amounts."""
    with pytest.raises(SpecError, match=problem):
        UsageHistory.parse(data, HOUR, NOW)


def test_the_history_is_rebuilt_from_the_runs_when_the_file_is_missing_or_bad(tmp_path):
    """Every ended attempt in the runs' state.json is charged to its spec's project; an unreadable run is skipped."""
    spool = Spool(tmp_path / "spool").ensure()
    for sid, project, seconds in (("a", "A", 100.0), ("n", None, 50.0)):
        run = spool.run_dir(sid)
        run.mkdir()
        spec = JobSpec(sid, "waiter", {}, owner={"username": "u", "project": project})
        rs = RunState(sid, "waiter", history=[Attempt(1, NOW - seconds, NOW)])
        (run / "spec.json").write_bytes(spec.to_json())
        (run / "state.json").write_bytes(rs.to_json())
    (spool.run_dir("broken")).mkdir()
    spool.usage_file.write_text("{not json")
    history, why = usagehistory.load(spool, 1e9, NOW)
    assert "not valid JSON" in why
    assert pytest.approx({"A": 100.0, NO_PROJECT: 50.0}) == history.usage
    spool.usage_file.write_bytes(history.to_json())
    assert (pytest.approx(history.usage), None) == (lambda h, w: (h.usage, w))(*usagehistory.load(spool, 1e9, NOW))


def test_a_job_without_a_project_is_accounted_to_none():
    """owner without a project (jobctl) -> "(none)"."""
    assert [NO_PROJECT, NO_PROJECT, "A"] == [project_of({}), project_of({"project": None}), project_of({"project": "A"})]


# -- settings -------------------------------------------------------------------------------------

def test_the_fair_share_settings_parse_into_the_policy(tmp_path):
    """PROJECT_SHARES and MAX_RUNNING_PER_JOB are name:value lists; the half-life is in hours."""
    cfg = config.load(write_env(tmp_path, PROJECT_SHARES="projA:2, projB:0.5", FAIR_SHARE_HALF_LIFE_HOURS="2",
                                MAX_RUNNING_PER_PROJECT="3", MAX_RUNNING_PER_JOB="waiter:2"), {})
    assert Policy({"projA": 2.0, "projB": 0.5}, 7200.0, 3, {"waiter": 2}) == Policy.from_config(cfg)
    assert 1.0 == Policy.from_config(cfg).share("projC")


@pytest.mark.parametrize("key, value, message", [
    ("PROJECT_SHARES", "projA", "must be name:value"),
    ("PROJECT_SHARES", "projA:2,projA:1", "each name once"),
    ("PROJECT_SHARES", "projA:0", r"must be in \[0.001"),
    ("MAX_RUNNING_PER_JOB", "waiter:1.5", "must be an integer"),
    ("FAIR_SHARE_HALF_LIFE_HOURS", "0", r"must be in \[0.01"),
])
def test_a_bad_fair_share_setting_is_named(tmp_path, key, value, message):
    """A bad weight, cap or half-life stops start-up naming the key and what it must be."""
    with pytest.raises(ConfigError, match=message):
        config.load(write_env(tmp_path, **{key: value}), {})

"""console/index.py's gates on a real spool directory, with the clock given: what a pass may skip, and what not."""
from __future__ import annotations

import os
import time

import pytest
from harness import ROOT

from console.index import FULL_CHECK_SECONDS, MTIME_MARGIN, Index
from jobs.definitions import load_definitions
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.states import JobState

DEFINITIONS = load_definitions(ROOT / "jobs" / "definitions")


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "spool").ensure()


def run(spool: Spool, sid: str, state: JobState) -> None:
    """A claimed run as the supervisor leaves it (published through tmp/)."""
    spec = JobSpec(sid, "waiter", {"secondsToWait": 60}, "http://auth/?wsdl", {"username": "u", "project": "p"})
    f = spool.files(sid)
    spool.publish_dir(f.run, {f.spec: spec.to_json(), f.state: state_json(sid, state)}, dirs=(f.attempt(1).dir, f.attempt(1).work))


def state_json(sid: str, state: JobState) -> bytes:
    return RunState(sid, "waiter", state, state.value.lower(), 1, pid=1, started_at=1.0, queued_at=1.0).to_json()


def behind_tmp(spool: Spool, sid: str, state: JobState) -> None:
    """state.json replaced without staging in tmp/ (no peer does this): only a full check can see it."""
    path = spool.files(sid).state
    with open(path + ".x", "wb") as f:
        f.write(state_json(sid, state))
    os.replace(path + ".x", path)


def tmp_mtime(spool: Spool) -> float:
    return os.stat(spool.tmp).st_mtime_ns / 1e9


def test_a_state_written_through_tmp_is_seen_at_the_next_pass(spool):
    run(spool, "j-1", JobState.RUNNING)
    index = Index(spool, DEFINITIONS)
    now = tmp_mtime(spool) + 10
    for _ in range(3):  # quiet passes: the gate closes
        index.refresh(now)
        now += 0.25
    spool.write_atomic(spool.files("j-1").state, state_json("j-1", JobState.SUCCEEDED))
    index.refresh(now)  # tmp/ moved: every hot state.json is looked at
    assert "SUCCEEDED" == index.get("j-1").state


def test_a_quiet_spool_skips_the_state_files_but_not_for_longer_than_a_full_check(spool):
    """The gate really skips (a write that bypasses tmp/ goes unseen) and its safety net really catches up."""
    run(spool, "j-1", JobState.RUNNING)
    index = Index(spool, DEFINITIONS)
    now = tmp_mtime(spool) + MTIME_MARGIN + 5
    index.refresh(now)        # a full check, with tmp/'s stamp already old enough to trust
    behind_tmp(spool, "j-1", JobState.SUCCEEDED)
    index.refresh(now + 0.25)
    assert "RUNNING" == index.get("j-1").state
    index.refresh(now + FULL_CHECK_SECONDS + 0.01)
    assert "SUCCEEDED" == index.get("j-1").state


def test_a_young_tmp_stamp_is_never_trusted(spool):
    """A later write may share a stamp taken within the kernel's clock tick: while the stamp is younger than
    MTIME_MARGIN, every pass looks at every state.json."""
    run(spool, "j-1", JobState.RUNNING)
    index = Index(spool, DEFINITIONS)
    now = tmp_mtime(spool)
    index.refresh(now)
    behind_tmp(spool, "j-1", JobState.SUCCEEDED)  # same tmp/ stamp, as a write in the same tick would leave it
    index.refresh(now + 0.25)
    assert "SUCCEEDED" == index.get("j-1").state


def test_each_running_job_reads_its_progress_every_other_pass(spool):
    for i in range(4):
        run(spool, f"j-{i}", JobState.RUNNING)
    index = Index(spool, DEFINITIONS)
    now = time.time()
    index.refresh(now)
    definition = DEFINITIONS["waiter"]
    for i in range(4):
        with open(spool.files(f"j-{i}").attempt(1).progress(definition), "w") as f:
            f.write("42")
    index.refresh(now + 0.25)
    assert 2 == sum(index.get(f"j-{i}").progress == 42.0 for i in range(4))
    index.refresh(now + 0.5)
    assert all(index.get(f"j-{i}").progress == 42.0 for i in range(4))

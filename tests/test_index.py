"""jobs/index.py, the one read side, and the spool's serviceID, known() and pending commands.

Why: the console, jobctl and the metrics collector all read the spool
through SpoolIndex, so one pass over a new index must give complete rows
(jobctl reads once and exits), later passes must see what the supervisor
and the peers write, and the collector's counters must follow the rows.
The spool here is written as its writers write it: specs through
jobs.submit, states published through tmp/ as the supervisor does,
commands through Spool.send_command.
"""
from __future__ import annotations

import os

import pytest
from harness import ROOT
from prometheus_client.core import Metric

import jobs.index
from jobs.definitions import load_definitions
from jobs.errors import SpecError
from jobs.index import SpoolIndex
from jobs.metrics import SpoolCollector
from jobs.runstate import RunState
from jobs.spool import COMMAND_VERBS, ServiceId, Spool, command_name, parse_command_name, service_id
from jobs.states import DISPLAY_STATES, SUBMITTED, TERMINAL_STATES, JobState
from jobs.submit import submit

DEFINITIONS = load_definitions(ROOT / "jobs" / "definitions")
WAITER = DEFINITIONS["waiter"]
OWNER = {"username": "alice", "project": "demo"}
NOW = 1_790_000_000.0


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "spool").ensure()


def submitted(spool: Spool, sid: str, seconds: int = 60) -> None:
    assert submit(spool, WAITER, sid, {"secondsToWait": seconds}, OWNER, "http://auth/?wsdl").new


def claimed(spool: Spool, sid: str, rs: RunState, progress: str | None = None) -> None:
    """What the supervisor does: rename the spec into runs/<sid>/, then publish state.json through tmp/."""
    submitted(spool, sid)
    f = spool.files(sid)
    os.makedirs(f.attempt(rs.attempt).work)
    os.rename(f.incoming, f.spec)
    spool.write_atomic(f.state, rs.to_json())
    if progress is not None:
        with open(os.path.join(f.attempt(rs.attempt).work, "status.txt"), "w") as out:
            out.write(progress)


def running(sid: str, **fields) -> RunState:
    return RunState(sid, "waiter", JobState.RUNNING, "running", 1, pid=4321, started_at=NOW - 30,
                    queued_at=NOW - 31, **fields)


def test_one_pass_gives_complete_rows(spool):
    """A new index, refreshed once: every job with its spec, state, pid, exit, progress, queue place and commands."""
    submitted(spool, "w-1")
    for n in range(3):  # three running jobs: the progress turns differ, the first pass reads them all
        claimed(spool, f"r-{n}", running(f"r-{n}"), progress=f"{10 * (n + 1)}")
    claimed(spool, "f-1", RunState("f-1", "waiter", JobState.FAILED, "exit code 3", 1, exit_code=3,
                                   started_at=NOW - 20, finished_at=NOW - 5), progress="70")
    claimed(spool, "q-1", RunState("q-1", "waiter", JobState.QUEUED, "waiting for a free slot", 1))
    spool.write_atomic(spool.queue_file, b'{"queued": ["x", "q-1"]}')
    spool.send_command("f-1", "restart", origin="test")

    index = SpoolIndex(spool, DEFINITIONS)
    assert index.refresh(NOW) > 0
    rows = {row.sid: row for row in index.live()}
    assert {"w-1", "r-0", "r-1", "r-2", "f-1", "q-1"} == set(rows)
    assert (SUBMITTED, "waiter", "demo", "alice", {"secondsToWait": 60}) == (
        rows["w-1"].state, rows["w-1"].job, rows["w-1"].project, rows["w-1"].username, rows["w-1"].inputs)
    assert rows["w-1"].run is None and rows["w-1"].spec.service_id == "w-1"
    assert [10.0, 20.0, 30.0] == [rows[f"r-{n}"].progress for n in range(3)]
    assert ("RUNNING", 4321, 30.0) == (rows["r-0"].state, rows["r-0"].pid, rows["r-0"].runtime(NOW))
    failed = rows["f-1"]
    assert ("FAILED", 3, None, 15.0, 70.0, ("restart",)) == (
        failed.state, failed.exit_code, failed.signal, failed.runtime(NOW), failed.progress, failed.pending)
    assert failed.run.reason == "exit code 3"
    assert (2, None) == (rows["q-1"].position, rows["r-0"].position)
    assert {} == index.problems


def test_later_passes_see_claims_states_commands_and_removals(spool):
    """Each change shows at the next pass, bumps seq, and a removed run leaves a tombstone."""
    submitted(spool, "j-1")
    index = SpoolIndex(spool, DEFINITIONS)
    index.refresh(NOW)
    seq = index.seq
    f = spool.files("j-1")
    os.makedirs(f.attempt(1).dir)
    os.rename(f.incoming, f.spec)
    spool.write_atomic(f.state, running("j-1").to_json())
    index.refresh(NOW + 1)
    assert "RUNNING" == index.get("j-1").state
    rows, progress = index.changed_since(seq)
    assert (["j-1"], []) == ([r.sid for r in rows], progress)

    spool.send_command("j-1", "kill", origin="test")
    index.refresh(NOW + 2)
    assert ("kill",) == index.get("j-1").pending
    spool.write_atomic(f.state, RunState("j-1", "waiter", JobState.ABORTED, "killed", 1, started_at=NOW - 30,
                                         finished_at=NOW).to_json())
    for name in os.listdir(spool.commands):  # the supervisor handled it
        os.unlink(spool.commands / name)
    index.refresh(NOW + 3)
    assert ("ABORTED", ()) == (index.get("j-1").state, index.get("j-1").pending)

    seq = index.seq
    os.rename(f.run, spool.root / "gone")  # retention removed it
    index.refresh(NOW + 4)
    assert index.get("j-1") is None
    assert [("j-1", True)] == [(r.sid, r.removed) for r in index.changed_since(seq)[0]]


def test_an_unreadable_state_is_a_problem_not_a_crash(spool):
    """A state.json that is not JSON leaves the row as it was and names the problem until the run goes."""
    claimed(spool, "bad", running("bad"))
    spool.write_atomic(spool.files("bad").state, b"{not json")
    index = SpoolIndex(spool, DEFINITIONS)
    index.refresh(NOW)
    assert "bad" in index.problems and "not valid JSON" in index.problems["bad"]
    os.rename(spool.files("bad").run, spool.root / "gone")
    index.refresh(NOW + 1)
    assert {} == index.problems


def test_without_definitions_rows_come_from_state_json(spool):
    """The metrics collector has no definitions: the job comes from state.json, no spec is parsed."""
    claimed(spool, "m-1", running("m-1"))
    submitted(spool, "m-2")
    index = SpoolIndex(spool, None)
    index.refresh(NOW)
    assert ("waiter", "RUNNING", None) == (index.get("m-1").job, index.get("m-1").state, index.get("m-1").spec)
    assert SUBMITTED == index.get("m-2").state


def samples(collector: SpoolCollector) -> dict[tuple[str, tuple], float]:
    families: list[Metric] = list(collector.collect())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


# -- the spool's serviceID, known() and commands ------------------------------------------

def test_service_id_is_checked_once_and_typed():
    """service_id() gives a ServiceId; a ServiceId passes again as is; a bad one is a SpecError."""
    sid = service_id("abc-1")
    assert type(sid) is ServiceId and sid == "abc-1" and service_id(sid) is sid
    for bad in ("", "../x", "-a", "a" * 129, None, 3):
        with pytest.raises(SpecError, match="serviceID"):
            service_id(bad)


def test_known_means_a_run_or_a_waiting_spec(spool):
    """known(): a spec in incoming/ or a run directory; claimed(): the run directory only."""
    submitted(spool, "in-1")
    claimed(spool, "run-1", running("run-1"))
    assert (True, True, False) == (spool.known("in-1"), spool.known("run-1"), spool.known("other"))
    assert (False, True, False) == (spool.claimed("in-1"), spool.claimed("run-1"), spool.claimed("other"))


def test_command_names_round_trip_and_strangers_are_ignored(spool):
    """What send_command writes, pending_commands reads back by serviceID and verb, oldest first."""
    assert ("a-b-c", "kill") == parse_command_name(command_name("a-b-c", "kill", 12))
    for name in ("x.json", "00000000000000000012-a-b-stop.json", "0000000000000000001x-a-kill.json",
                 "00000000000000000012-../a-kill.json", "00000000000000000012-a-kill.tmp"):
        assert parse_command_name(name) is None, name
    spool.send_command("s-1", "kill", origin="t")
    spool.send_command("s-1", "restart", origin="t")
    (spool.commands / "junk.json").write_text("{}")
    assert {"s-1": ["kill", "restart"]} == spool.pending_commands()
    assert set(COMMAND_VERBS) == {"kill", "restart"}


def test_display_states_and_sets():
    """SUBMITTED leads the display list; the terminal set holds the state values readers compare with."""
    assert ("SUBMITTED", "QUEUED", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "ABORTED") == DISPLAY_STATES
    assert {"SUCCEEDED", "FAILED", "ABORTED"} == TERMINAL_STATES


def test_metrics_see_finished_runs_restarted_within_ten_scrapes(spool, monkeypatch):
    """With many finished runs, each scrape re-checks at least a tenth of them: every restart shows within ten."""
    def write(sid: str, done: bool) -> None:  # in place, not through tmp/: quicker, and the scrapes are 15 s apart
        rs = RunState(sid, "waiter", JobState.SUCCEEDED if done else JobState.QUEUED, "", 1 if done else 2,
                      started_at=NOW - 30, finished_at=NOW - 18 if done else None)
        with open(spool.files(sid).state, "wb") as f:
            f.write(rs.to_json())
    monkeypatch.setattr(jobs.index, "COLD_PER_PASS", 20)  # the rule at a tenth of the scale
    sids = [f"done-{n}" for n in range(210)]  # more than ten sweeps of COLD_PER_PASS
    for sid in sids:
        os.makedirs(spool.files(sid).run)
        write(sid, True)
    collector = SpoolCollector(spool)
    scrapes = iter(range(0, 1000, 15))
    collector.index.clock = lambda: NOW + next(scrapes)
    samples(collector)
    for sid in sids:
        write(sid, False)
    for _ in range(10):
        m = samples(collector)
    assert len(sids) == m[("spoolsoap_jobs", (("job", "waiter"), ("state", "QUEUED")))]

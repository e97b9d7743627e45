"""The accounting ledger (jobs/accounting.py): every ended attempt once, through crashes, torn tails and retention.

Why: `jobctl usage` and the console's usage page read the ledger, not the
runs, so it must hold each attempt exactly once whatever happened to the
supervisor: killed between its append and the state.json save (it appends
again on recovery), killed mid-append (a torn tail), or started for the first
time on a spool that has runs (a backfill). The rules are stepped through a
Supervisor with a fake executor (test_supervisor_rules.Rules); the kill -9 is
a real supervisor process.
"""
from __future__ import annotations

import calendar
import json
import os
import signal
import sys

from harness import Managed, Stack, kill_leftovers, wait_for
from test_supervisor_rules import T0, Rules

from jobs import accounting, usagereport
from jobs.runstate import Attempt, RunState
from jobs.spool import Spool
from jobs.states import JobState
from jobs.usage import Usage

DAY = 86400.0
DEC_1 = calendar.timegm((2026, 12, 1, 0, 0, 0))


def rec(sid: str, finished_at: float, cpu: float = 1.0, attempt: int = 1, project: str = "demo") -> accounting.Record:
    return accounting.record(sid, "waiter", {"project": project, "username": "alice"}, attempt, finished_at - 10,
                             finished_at, Usage(cpu_user_s=cpu, cpu_system_s=0.0, wall_s=10.0, queue_wait_s=1.0))


def append(spool: Spool, *records: accounting.Record) -> accounting.Ledger:
    ledger = accounting.Ledger(spool, 400 * DAY)
    ledger.pending.extend(records)
    ledger.flush()
    return ledger


def frames(path) -> list[accounting.Record]:
    """Every whole frame of a month file, duplicates included (what readers deduplicate)."""
    return accounting.decode(path.read_bytes())[0]


def test_records_are_read_back_in_their_month_files(tmp_path):
    """A record goes to the file of the month (UTC) it ended in; a reader gets each with every figure."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("nov-1", DEC_1 - 1), rec("dec-1", DEC_1, cpu=2.5))
    assert ["2026-11.log", "2026-12.log"] == sorted(os.listdir(spool.root / "accounting"))
    got = {r.sid: r for r in accounting.Reader(spool).records()}
    assert (2.5, 10.0, DEC_1 - 11, "demo", "alice") == (got["dec-1"].cpu_s, got["dec-1"].wall_s,
                                                         got["dec-1"].queued_at, got["dec-1"].project,
                                                         got["dec-1"].username)
    assert Usage(cpu_user_s=2.5, cpu_system_s=0.0, wall_s=10.0, queue_wait_s=1.0) == got["dec-1"].usage()


def test_the_last_record_of_an_attempt_wins_even_a_month_later(tmp_path):
    """An attempt appended again (recovery) counts once, as last appended; a period reads the month after it too."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("a", DEC_1 - 5, cpu=1.0), rec("b", DEC_1 - 5, cpu=7.0))
    append(spool, rec("a", DEC_1 + 5, cpu=1.5))  # recovered after the month turned: the last word
    november = accounting.Reader(spool).records(DEC_1 - 30 * DAY, DEC_1)
    lines = usagereport.report(november, "project", DEC_1 - 30 * DAY, DEC_1)
    assert [("demo", 1, 7.0)] == [(x.key, x.attempt_count, x.cpu_s) for x in lines]
    every = accounting.Reader(spool).records()
    assert {("a", 1.5), ("b", 7.0)} == {(r.sid, r.cpu_s) for r in every}


def test_a_torn_tail_is_ignored_by_readers_and_cut_by_the_supervisor(tmp_path):
    """kill -9 mid-append: readers stop at the last whole frame; at start-up the tail is cut, so the next
    appends are read again."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("a", DEC_1 + 1), rec("b", DEC_1 + 2))
    path = spool.root / "accounting" / "2026-12.log"
    whole = path.stat().st_size
    torn = accounting.frame(rec("c", DEC_1 + 3))
    with open(path, "ab") as f:
        f.write(torn[:len(torn) // 2])
    reader = accounting.Reader(spool)
    assert ["a", "b"] == sorted(r.sid for r in reader.records())
    accounting.Ledger(spool, 400 * DAY).start(DEC_1 + 10)
    assert whole == path.stat().st_size
    append(spool, rec("d", DEC_1 + 4))
    assert ["a", "b", "d"] == sorted(r.sid for r in reader.records())


def test_a_damaged_frame_ends_what_is_read_and_is_cut_before_the_next_append(tmp_path):
    """A frame whose checksum fails is never taken for a record; the supervisor cuts it before appending."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("a", DEC_1 + 1), rec("b", DEC_1 + 2))
    path = spool.root / "accounting" / "2026-12.log"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # b's payload
    path.write_bytes(bytes(data))
    assert ["a"] == [r.sid for r in accounting.Reader(spool).records()]
    append(spool, rec("c", DEC_1 + 3))  # a new Ledger: checks the file before its first append
    assert ["a", "c"] == [r.sid for r in accounting.Reader(spool).records()]
    [cut] = (spool.root / "accounting").glob("2026-12.log.cut-*")  # kept aside for an operator
    assert bytes(data[len(accounting.frame(rec("a", DEC_1 + 1))):]) == cut.read_bytes()


def test_a_reader_reads_only_what_was_appended_and_follows_a_replaced_file(tmp_path):
    """The console's reader keeps what it read; an appended record shows, a file written anew is read anew."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("a", DEC_1 + 1))
    reader = accounting.Reader(spool)
    assert ["a"] == [r.sid for r in reader.records()]
    append(spool, rec("b", DEC_1 + 2))
    assert ["a", "b"] == sorted(r.sid for r in reader.records())
    path = spool.root / "accounting" / "2026-12.log"
    spool.write_atomic(path, accounting.frame(rec("z", DEC_1 + 3)))
    assert ["z"] == [r.sid for r in reader.records()]
    os.unlink(path)
    assert [] == reader.records()


def test_months_older_than_the_retention_go_and_the_old_snapshot_with_them(tmp_path):
    """ACCOUNTING_RETENTION_DAYS bounds the ledger by whole months; the usage snapshot cache is removed."""
    spool = Spool(tmp_path).ensure()
    append(spool, rec("old", DEC_1 - 100 * DAY), rec("new", DEC_1 + 1))
    (spool.root / accounting.OLD_SNAPSHOT).write_bytes(b"cache")
    accounting.Ledger(spool, 60 * DAY).start(DEC_1 + 2)
    assert ["2026-12.log"] == sorted(n for n in os.listdir(spool.root / "accounting") if n.endswith(".log"))
    assert not (spool.root / accounting.OLD_SNAPSHOT).exists()


# -- the supervisor's side ---------------------------------------------------------------------------------

def ended(r: Rules, sid: str, cpu: float) -> None:
    r.ex.usages[sid] = Usage(cpu_user_s=cpu, cpu_system_s=0.0, source="cgroup")
    r.ex.exit(sid, 0)
    r.step(1)


def test_each_ended_attempt_is_appended_before_its_state_is_saved(tmp_path):
    """A retry and the final attempt are two records; the ledger holds each before state.json says it ended,
    and keeps it after retention removes the run."""
    r = Rules(tmp_path, retries=1, MAX_PARALLEL_JOBS="2", RETENTION_DAYS="0.001")
    r.submit("j-1")
    r.step()
    history_on_disk = []  # at each append: the ended attempts state.json holds
    flush = r.sup.ledger.flush

    def flush_and_look():
        flush()
        history_on_disk.append(len(r.state("j-1")["history"]))
    r.sup.ledger.flush = flush_and_look
    r.ex.exit("j-1", 1)
    r.step(1)  # attempt 1 failed: retried in 10 s
    r.step(11)
    ended(r, "j-1", 3.0)
    assert "SUCCEEDED" == r.state("j-1")["state"]
    assert [0, 1] == history_on_disk and 2 == len(r.state("j-1")["history"])
    records = accounting.Reader(r.spool).records()
    assert [(1, None), (2, 3.0)] == sorted((x.attempt, x.cpu_s) for x in records)
    r.sup.reconcile(r.now + 1000)  # retention removes the run ...
    assert not (r.spool.runs / "j-1").exists()
    assert 2 == len(accounting.Reader(r.spool).records())  # ... not its accounting


def test_a_refused_append_is_kept_and_written_at_a_later_pass(tmp_path, monkeypatch):
    """A full disk at the append: the record waits in memory and is appended once the storage takes it."""
    r = Rules(tmp_path, MAX_PARALLEL_JOBS="2")
    r.submit("j-1")
    r.step()
    real = accounting.Ledger._append

    def full(self, name, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(accounting.Ledger, "_append", full)
    ended(r, "j-1", 2.0)
    assert [] == accounting.Reader(r.spool).records() and 1 == len(r.sup.ledger.pending)
    monkeypatch.setattr(accounting.Ledger, "_append", real)
    r.step(1)
    assert [("j-1", 2.0)] == [(x.sid, x.cpu_s) for x in accounting.Reader(r.spool).records()]


def test_the_runs_attempts_are_backfilled_once(tmp_path):
    """The first start on a spool with runs and no ledger copies their ended attempts in; later starts do not."""
    r = Rules(tmp_path, MAX_PARALLEL_JOBS="2")
    r.submit("old-1")
    r.step()
    ended(r, "old-1", 4.0)
    os.unlink(r.spool.root / "accounting" / "2027-01.log")  # as a spool from before the ledger
    sup = r.new_supervisor()
    sup.recover(r.now)
    assert [("old-1", 4.0)] == [(x.sid, x.cpu_s) for x in accounting.Reader(r.spool).records()]
    assert (r.spool.root / "accounting" / accounting.BACKFILLED).exists()
    os.unlink(r.spool.root / "accounting" / "2027-01.log")
    r.new_supervisor().recover(r.now)
    assert [] == accounting.Reader(r.spool).records()  # the marker: not read from the runs again


def test_the_final_state_is_visible_before_the_ledger_fsync_and_after_the_write(tmp_path):
    """The exit path: the record is written before the state that ends the attempt, fsynced only at the pass's
    end, once that state is visible (the fsync is not between an exit and COMPLETED)."""
    r = Rules(tmp_path, MAX_PARALLEL_JOBS="2")
    r.submit("j-1")
    r.step()
    at_sync = []  # at the ledger's fsync: the state on disk, and what a reader finds in the ledger
    sync = r.sup.ledger.sync

    def look_then_sync():
        at_sync.append((r.state("j-1")["state"], [(x.sid, x.cpu_s) for x in accounting.Reader(r.spool).records()]))
        sync()
    r.sup.ledger.sync = look_then_sync
    ended(r, "j-1", 2.0)
    assert [("SUCCEEDED", [("j-1", 2.0)])] == at_sync
    assert {} == r.sup.ledger.unsynced


def test_a_record_a_power_cut_took_is_appended_again_at_start_up(tmp_path):
    """The final state survived, the ledger's unsynced tail did not: the next start appends what ended since the
    newest record and is missing, once; what ended long before that newest record is not looked at again."""
    r = Rules(tmp_path, MAX_PARALLEL_JOBS="3")
    r.submit("old-1", "j-1", "j-2")
    r.step()
    ended(r, "old-1", 1.0)
    r.now += 2 * accounting.CLOCK_MARGIN_S
    ended(r, "j-1", 2.0)
    ended(r, "j-2", 3.0)
    path = r.spool.root / "accounting" / "2027-01.log"
    old, j1, j2 = frames(path)
    path.write_bytes(accounting.frame(j1))  # old-1's record lost long ago (an operator), j-2's by the cut
    r.new_supervisor().recover(r.now + 5)
    assert [("j-1", 2.0), ("j-2", 3.0)] == [(x.sid, x.cpu_s) for x in frames(path)]
    r.new_supervisor().recover(r.now + 10)
    assert 2 == len(frames(path))


def test_records_of_a_run_are_its_ended_attempts_with_usage():
    """What a backfill copies: history's attempts that have a usage record, queued time from the queue wait."""
    u = Usage(cpu_user_s=1.0, cpu_system_s=1.0, queue_wait_s=5.0)
    rs = RunState("s-1", "waiter", JobState.FAILED, attempt=2, finished_at=T0, usage=u,
                  history=[Attempt(1, T0 - 50, T0 - 40), Attempt(2, T0 - 20, T0, usage=u)])
    assert [(2, T0 - 25, T0, "p", None)] == [(x.attempt, x.queued_at, x.finished_at, x.project, x.username)
                                             for x in accounting.records_of(rs, {"project": "p"})]


# -- a real supervisor killed between the append and the save ---------------------------------------------

DIE_AFTER_APPEND = """
import os, signal, sys
from jobs import accounting
real = accounting.Ledger._append
def append_then_die(self, name, data):
    real(self, name, data)
    os.kill(os.getpid(), signal.SIGKILL)  # before the state.json save that ends the attempt
accounting.Ledger._append = append_then_die
from supervisor.daemon import main
sys.exit(main())
"""


def killed_while_it_ends(s: Stack, script: str, sid: str):
    """Run a supervisor that kills itself (script) while a short waiter, sid, ends; the ledger's directory."""
    m = Managed([sys.executable, "-c", script], s.tmp / "dying.log", {"ENV_FILE": str(s.env)})
    s.submit(sid, secondsToWait=1)
    wait_for(lambda: not m.alive(), 30, what="the supervisor's death")
    assert -signal.SIGKILL == m.stop()
    return s.spool.root / "accounting"


def test_supervisor_killed_between_append_and_save_counts_the_attempt_once(tmp_path):
    """kill -9 right after the ledger append: state.json still says RUNNING; the next supervisor finishes the
    attempt and appends it again; the ledger's readers and `jobctl usage` count it once."""
    s = Stack(tmp_path)
    try:
        month = killed_while_it_ends(s, DIE_AFTER_APPEND, "crash-1")
        assert "RUNNING" == s.state("crash-1")["state"]
        assert ["crash-1"] == [x.sid for p in month.glob("*.log") for x in frames(p)]
        s.start()
        done = s.wait_state("crash-1", "SUCCEEDED")
        assert 1 == len(done["history"])
        wait_for(lambda: len([x for p in month.glob("*.log") for x in frames(p)]) == 2, 10, what="the re-append")
        first, again = [x for p in month.glob("*.log") for x in frames(p)]
        assert first.finished_at < again.finished_at
        assert [again] == accounting.Reader(s.spool).records()
    finally:
        s.stop()
        kill_leftovers(tmp_path)


DIE_BEFORE_SYNC = """
import os, signal, sys
from jobs import accounting
real = accounting.Ledger.sync
def die_first(self):
    if self.unsynced:  # an attempt's record: after the final state.json save, before the ledger's fsync
        os.kill(os.getpid(), signal.SIGKILL)
    real(self)
accounting.Ledger.sync = die_first
from supervisor.daemon import main
sys.exit(main())
"""


def test_supervisor_killed_before_the_ledger_fsync_keeps_the_record_once(tmp_path):
    """kill -9 once the final state is visible and before the ledger's fsync: the record written before that
    state is there (the page cache keeps it), and the next supervisor does not append it again."""
    s = Stack(tmp_path)
    try:
        month = killed_while_it_ends(s, DIE_BEFORE_SYNC, "cut-1")
        assert "SUCCEEDED" == s.state("cut-1")["state"]
        assert ["cut-1"] == [x.sid for p in month.glob("*.log") for x in frames(p)]
        s.start()  # ready once it has recovered
        assert ["cut-1"] == [x.sid for p in month.glob("*.log") for x in frames(p)]
    finally:
        s.stop()
        kill_leftovers(tmp_path)


def test_jobctl_usage_counts_the_recovered_attempt_once(tmp_path, capsys):
    """The same ledger through `jobctl usage --json`: one job, one attempt."""
    spool = Spool(tmp_path / "spool").ensure()
    append(spool, rec("crash-1", DEC_1 + 1, cpu=1.0))
    append(spool, rec("crash-1", DEC_1 + 9, cpu=1.25))
    env = tmp_path / "env"
    env.write_text(f"SPOOL_DIR={spool.root}\n")
    from jobctl.cli import main
    assert 0 == main(["--env-file", str(env), "usage", "--json"])
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [("demo", 1, 1, 1.25)] == [(g["key"], g["jobs"], g["attempt_count"], g["cpu_s"]) for g in groups]

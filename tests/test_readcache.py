"""The poll path's read cache: a file is read again whenever it may have changed, never served stale.

Why: a cached read saves a poll its opens, but a job must never stay RUNNING
in answers after it finished; timestamps are coarse, so only a read of a
file already older than their granularity may be reused (git's racy rule).
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from facade import jobview
from facade.readcache import ReadCache
from jobs.runstate import RunState
from jobs.states import JobState

pytestmark = pytest.mark.fast


class Counted:
    """A reader that counts its calls and returns the file's text."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path: str) -> str:
        self.calls += 1
        with open(path) as f:
            return f.read()


def aged(path, text: str) -> None:
    """Write text and wait until the file is older than the cache's granularity (0.05 s here)."""
    with open(path, "w") as f:
        f.write(text)
    time.sleep(0.06)


def fake_stat(mtime_s: float, size: int = 2, ino: int = 7):
    """An lstat result of a regular file with the given identity."""
    ns = int(mtime_s * 1e9)
    return SimpleNamespace(st_mode=0o100644, st_ino=ino, st_size=size, st_mtime_ns=ns, st_ctime_ns=ns)


def test_an_unchanged_settled_file_is_read_once(tmp_path):
    """A file older than the granularity and unchanged since is not read again."""
    path = tmp_path / "f"
    aged(path, "41")
    cache, reader = ReadCache(granularity_s=0.05), Counted()
    assert [cache.read(str(path), reader) for _ in range(3)] == ["41"] * 3
    assert reader.calls == 1


def test_a_file_replaced_is_read_again(tmp_path):
    """A state.json renamed into place (the supervisor's way) is seen at the next read, whatever its size."""
    path = tmp_path / "state.json"
    aged(path, "RUNNING!")
    cache, reader = ReadCache(granularity_s=0.05), Counted()
    assert cache.read(str(path), reader) == "RUNNING!"
    (tmp_path / "new").write_text("FINISHED")  # same size
    os.replace(tmp_path / "new", path)
    assert cache.read(str(path), reader) == "FINISHED"


def test_a_file_changed_within_the_timestamp_granularity_is_never_trusted(tmp_path):
    """Same inode, size and timestamps but modified too recently: read every time (the racy rule)."""
    path = tmp_path / "status.txt"
    path.write_text("41")
    now = time.time()
    cache = ReadCache(clock=lambda: now, lstat=lambda p: fake_stat(now - 0.01), granularity_s=0.05)
    reader = Counted()
    assert cache.read(str(path), reader) == "41"
    path.write_text("42")  # the same identity as far as the (fake) lstat can tell
    assert cache.read(str(path), reader) == "42"
    assert reader.calls == 2


def test_a_settled_identity_is_trusted_until_max_age(tmp_path):
    """The rule above is what decides: the same identity, settled, is reused; after max_age it is read again."""
    path = tmp_path / "status.txt"
    path.write_text("41")
    clock = [time.time()]
    settled = fake_stat(clock[0] - 1)
    cache = ReadCache(clock=lambda: clock[0], lstat=lambda p: settled, granularity_s=0.05,
                      max_age_s=2)
    reader = Counted()
    assert cache.read(str(path), reader) == "41"
    path.write_text("42")
    clock[0] += 0.5
    assert cache.read(str(path), reader) == "41"  # reused: only a writer stalled mid-write could do this
    clock[0] += 2
    assert cache.read(str(path), reader) == "42"


def test_errors_and_odd_files_are_left_to_the_reader(tmp_path):
    """A missing file or a symlink goes to the reader each time: its own rules apply, nothing is cached."""
    target = tmp_path / "target"
    aged(target, "secret")
    (tmp_path / "link").symlink_to(target)
    cache = ReadCache(granularity_s=0.05)
    seen = []

    def reader(path):
        seen.append(path)
        return None
    cache.read(str(tmp_path / "missing"), reader)
    cache.read(str(tmp_path / "missing"), reader)
    cache.read(str(tmp_path / "link"), reader)
    cache.read(str(tmp_path / "link"), reader)
    assert len(seen) == 4


def test_a_finished_job_is_never_answered_running(tmp_path):
    """read_run through the cache: the supervisor's SUCCEEDED record replaces RUNNING at the very next read."""
    run = tmp_path / "runs" / "job-1"
    run.mkdir(parents=True)
    files = SimpleNamespace(sid="job-1", state=str(run / "state.json"))
    (run / "state.json").write_bytes(RunState("job-1", "waiter", state=JobState.RUNNING).to_json())
    time.sleep(0.06)
    cache = ReadCache(granularity_s=0.05)
    assert jobview.read_run(files, cache).state is JobState.RUNNING
    assert jobview.read_run(files, cache).state is JobState.RUNNING  # from the cache
    (run / "new").write_bytes(RunState("job-1", "waiter", state=JobState.SUCCEEDED).to_json())
    os.replace(run / "new", run / "state.json")
    assert jobview.read_run(files, cache).state is JobState.SUCCEEDED


def test_a_running_view_is_rebuilt_when_its_progress_changes(tmp_path):
    """The memo hands back the same view only while state, percentage and output are the ones it was built from."""
    from jobs.spool import Spool
    from test_facade_app import DEFS, claim
    spool = Spool(tmp_path / "spool").ensure()
    work = claim(spool, "job-1", JobState.RUNNING)
    (work / "status.txt").write_text("10\n")
    time.sleep(0.06)
    files, d, cache, memo = spool.files("job-1"), DEFS["waiter"], ReadCache(granularity_s=0.05), {}
    run = jobview.read_run(files, cache)
    first = jobview.running_view(files, d, run, cache, memo)
    assert jobview.running_view(files, d, jobview.read_run(files, cache), cache, memo) is first
    (work / "status.txt").write_text("20\n")
    second = jobview.running_view(files, d, jobview.read_run(files, cache), cache, memo)
    assert (first.percent, second.percent) == (10.0, 20.0)

"""Concurrent starts share incoming/'s fsync (jobs.spool.DirectorySync) and each is durable before its answer.

Why: a start is acknowledged only once its spec is on disk (README "A dying
server process loses no acknowledged start"). Sharing the directory's fsync
between concurrent starts must not let any of them answer before an fsync
that began after its own link has ended, and a round that fails must fault
exactly the starts it covered and acknowledge none of them. These run real
starts on real threads over a real filesystem: os.fsync and os.link are only
timed on their way through (and one fsync is made to fail), never replaced.
"""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time

import pytest

from facade.auth import Identity
from facade.errors import FacadeError, ServiceUnavailable
from facade.operations import Operations
from jobs.definitions import load_definition
from jobs.spec import JobSpec
from jobs.spool import Spool

STARTS = 16
EXTRA = "auth=http://auth.example/?wsdl,"
GROUP_TOML = """\
service = "Group"
namespace = "group.test"
start_method = "startGroup"
argv = ["true"]
"""


class Auth:
    def identify(self, token, url):
        return Identity("alice", "demo")


class Syscalls:
    """The real os.fsync and os.link, recorded with their inode and times (monotonic ns).

    hold_first_dir_fsync: the first fsync of a directory, once done, does not
    return until that many links are made, after it: they must wait for another. fail_dir_fsync: the
    number (1-based) of the directory fsync that fails with EIO after it ran.
    """

    def __init__(self, monkeypatch, hold_first_dir_fsync: int = 0, fail_dir_fsync: int = 0):
        self.fsyncs: list[tuple[str, int, int, int, bool]] = []  # kind, inode, began, ended, succeeded
        self.links: dict[str, tuple[int, int]] = {}  # dest name -> inode, ended
        self.lock = threading.Condition()
        self.hold, self.fail, self.dir_fsyncs = hold_first_dir_fsync, fail_dir_fsync, 0
        real_fsync, real_link = os.fsync, os.link

        def fsync(fd):
            st = os.fstat(fd)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            began = time.monotonic_ns()
            real_fsync(fd)
            with self.lock:
                number = self.dir_fsyncs = self.dir_fsyncs + (kind == "dir")
                failing = kind == "dir" and number == self.fail
                self.fsyncs.append((kind, st.st_ino, began, time.monotonic_ns(), not failing))
                if kind == "dir" and number == 1 and self.hold:
                    assert self.lock.wait_for(lambda: len(self.links) >= self.hold, timeout=30)
            if failing:
                raise OSError(errno.EIO, "Input/output error (injected)")

        def link(src, dst, *args, **kwargs):
            real_link(src, dst, *args, **kwargs)
            with self.lock:
                self.links[os.path.basename(dst)] = (os.stat(dst).st_ino, time.monotonic_ns())
                self.lock.notify_all()

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", link)

    def of(self, kind: str) -> list[tuple[str, int, int, int, bool]]:
        return [f for f in self.fsyncs if f[0] == kind]

    def durable_before(self, spool: Spool, sid: str, answered: int) -> bool:
        """Was sid's spec fsynced before its link, and incoming/ fsynced (successfully) after it, before the answer?"""
        ino, linked = self.links[f"{sid}.json"]
        directory = os.stat(spool.incoming).st_ino
        file_synced = any(i == ino and end <= linked and ok for _, i, _, end, ok in self.of("file"))
        dir_synced = any(i == directory and began >= linked and end <= answered and ok
                         for _, i, began, end, ok in self.of("dir"))
        return file_synced and dir_synced


@pytest.fixture
def group(tmp_path):
    (tmp_path / "group.toml").write_text(GROUP_TOML)
    return load_definition(tmp_path / "group.toml")


def start_all(spool: Spool, d, sids: list[str]) -> dict[str, tuple[object, int]]:
    """Each serviceID started on its own thread, all at once: sid -> ("ok" or the fault, answered at)."""
    ops = Operations(spool, {d.name: d}, Auth(), abort_wait_seconds=1)
    barrier = threading.Barrier(len(sids))
    outcome: dict[str, tuple[object, int]] = {}

    def one(sid: str) -> None:
        barrier.wait()
        try:
            ops.start(d, sid, "token", EXTRA, {})
            outcome[sid] = ("ok", time.monotonic_ns())
        except FacadeError as e:
            outcome[sid] = (e, time.monotonic_ns())

    threads = [threading.Thread(target=one, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcome) == len(sids)
    return outcome


def held(outcome) -> tuple[set[str], set[str]]:
    """(acknowledged serviceIDs, faulted serviceIDs)."""
    ok = {sid for sid, (result, _) in outcome.items() if result == "ok"}
    return ok, set(outcome) - ok


def assert_specs_match(spool: Spool, d, acknowledged: set[str]) -> None:
    """incoming/ holds a whole, valid spec for each acknowledged start and nothing else; tmp/ is empty."""
    assert {f"{sid}.json" for sid in acknowledged} == set(os.listdir(spool.incoming))
    for sid in acknowledged:
        assert JobSpec.parse_bytes(spool.incoming_path(sid).read_bytes(), {d.name: d}).service_id == sid
    assert [] == os.listdir(spool.tmp)


def test_concurrent_starts_share_the_directory_fsync_and_each_is_durable_before_its_answer(tmp_path, group,
                                                                                        monkeypatch):
    """16 starts at once: 16 file fsyncs, fewer of incoming/ (shared), each start durable before its answer."""
    spool = Spool(tmp_path / "spool").ensure()
    calls = Syscalls(monkeypatch, hold_first_dir_fsync=STARTS)
    sids = [f"group-{i:02d}" for i in range(STARTS)]
    outcome = start_all(spool, group, sids)
    assert (set(sids), set()) == held(outcome)
    assert STARTS == len(calls.of("file"))
    assert 2 <= len(calls.of("dir")) < STARTS  # the first round is held until every spec is linked
    assert [] == [sid for sid in sids if not calls.durable_before(spool, sid, outcome[sid][1])]
    assert_specs_match(spool, group, set(sids))


def test_a_failed_directory_fsync_faults_exactly_the_starts_it_covered(tmp_path, group, monkeypatch):
    """The second round's fsync fails: its starts are faulted and taken back; every other start is acknowledged."""
    spool = Spool(tmp_path / "spool").ensure()
    calls = Syscalls(monkeypatch, hold_first_dir_fsync=STARTS, fail_dir_fsync=2)
    sids = [f"group-{i:02d}" for i in range(STARTS)]
    outcome = start_all(spool, group, sids)
    acknowledged, faulted = held(outcome)
    assert acknowledged and faulted
    failed_round_began = calls.of("dir")[1][2]
    for sid in faulted:  # covered by the failed round: linked before it began
        fault = outcome[sid][0]
        assert isinstance(fault, ServiceUnavailable) and "(EIO)" in fault.message
        assert calls.links[f"{sid}.json"][1] <= failed_round_began
    assert [] == [sid for sid in acknowledged if not calls.durable_before(spool, sid, outcome[sid][1])]
    assert_specs_match(spool, group, acknowledged)


def test_starts_on_a_full_spool_fault_exactly_those_that_did_not_fit(tmp_path, group, monkeypatch):
    """A tiny tmpfs with room for a few specs: the rest are faulted (ENOSPC), none half-written or acknowledged."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the spool needs root")
    root = tmp_path / "spool"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)], check=True, capture_output=True)
    try:
        spool = Spool(root).ensure()
        filler = os.open(root / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        os.ftruncate(filler, os.fstat(filler).st_size - 4 * 4096)  # room for about four specs
        os.close(filler)
        calls = Syscalls(monkeypatch)
        sids = [f"full-{i:02d}" for i in range(STARTS)]
        outcome = start_all(spool, group, sids)
        acknowledged, faulted = held(outcome)
        assert acknowledged and faulted
        for sid in faulted:
            fault = outcome[sid][0]
            assert isinstance(fault, ServiceUnavailable) and "(ENOSPC)" in fault.message
        assert [] == [sid for sid in acknowledged if not calls.durable_before(spool, sid, outcome[sid][1])]
        assert_specs_match(spool, group, acknowledged)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)

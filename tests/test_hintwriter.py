"""facade.json written off the event loop, and each worker's own record seen at its next poll.

Why: a page sent from the event loop records its digest in facade.json; on
ext4 that write can wait for a journal commit, and every connection of the
worker would wait with it. The loop hands the record to a thread, but the
poller must still get UNCHANGED only for the page it was sent.
"""
from __future__ import annotations

import time

import pytest

from facade.operations import UNCHANGED
from jobs.states import JobState
from test_bridge_inline import poll_body, serve, stack  # noqa: F401  (the fixture)
from test_facade_app import NOW, answer, claim

pytestmark = pytest.mark.fast


def hint_of(spool, sid: str) -> bytes:
    return (spool.runs / sid / "facade.json").read_bytes()


def test_a_page_sent_from_the_loop_is_recorded_by_the_thread_and_seen_meanwhile(stack):  # noqa: F811
    """The disk stalled: the loop answers anyway, its next poll is UNCHANGED from memory, the file follows."""
    bridge, spool, threads, calls, metrics, ops = stack
    work = claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    (work / "status.txt").write_text("10\n")
    serve(bridge, poll_body("job-1"))  # in a thread (the token to validate): written there and then
    written = hint_of(spool, "job-1")
    (work / "status.txt").write_text("20\n")
    with ops.hints._io:  # the writer thread cannot write: as if the journal were committing
        threads.seen.clear()
        page = serve(bridge, poll_body("job-1"))
        again = serve(bridge, poll_body("job-1"))
        assert threads.seen == ["loop", "loop"]
        assert answer(page[1]) not in ("", UNCHANGED) and answer(again[1]) == UNCHANGED
        assert hint_of(spool, "job-1") == written  # not on disk yet
    deadline = time.monotonic() + 5
    while ops.hints.pending(spool.files("job-1")) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hint_of(spool, "job-1") != written
    assert answer(serve(bridge, poll_body("job-1"))[1]) == UNCHANGED  # from the file now


def test_a_write_in_a_thread_replaces_an_older_pending_record(stack):  # noqa: F811
    """A record written synchronously (a pool thread) wins over an older one still waiting for the writer."""
    bridge, spool, threads, calls, metrics, ops = stack
    claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    files = spool.files("job-1")
    old, new = b"{}".ljust(1023) + b"\n", b'{"sent": []}'.ljust(1023) + b"\n"
    with ops.hints._io:
        ops.hints.later(files, old)
        assert ops.hints.pending(files) == old
    ops.hints.now(files, new)
    time.sleep(0.1)  # the thread finds nothing left to write
    assert ops.hints.pending(files) is None
    assert hint_of(spool, "job-1") == new

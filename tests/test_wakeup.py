"""The daemon's inotify wake-up (supervisor/wakeup.py): readable when work may have arrived, quiet otherwise."""
from __future__ import annotations

import os
import select

import pytest

from supervisor.wakeup import Watch

# not in the fast tier: inotify_simple's first descriptor finds libc with ctypes.util.find_library, which runs ldconfig


def readable(w: Watch, timeout: float = 1.0) -> bool:
    return bool(select.select([w.fd], [], [], timeout)[0])


def test_a_file_linked_or_renamed_in_wakes_the_loop_and_a_reader_does_not(tmp_path):
    """A link or a rename into a watched directory makes the descriptor readable; reading files there does not."""
    incoming, tmp = tmp_path / "incoming", tmp_path / "tmp"
    incoming.mkdir()
    tmp.mkdir()
    (tmp / "a").write_bytes(b"{}")
    w = Watch([str(incoming)])
    try:
        assert not readable(w, 0.05)
        os.link(tmp / "a", incoming / "a.json")
        assert readable(w)
        w.drain()
        assert not readable(w, 0.05)
        (incoming / "a.json").read_bytes()  # a console or jobctl looking
        os.listdir(incoming)
        assert not readable(w, 0.05)
        os.rename(tmp / "a", incoming / "b.json")
        assert readable(w)
    finally:
        w.close()


def test_a_directory_that_is_not_there_is_refused():
    """OSError (the daemon then falls back to watchdog's observer)."""
    with pytest.raises(OSError):
        Watch(["/nonexistent/incoming"])

"""The spool's small reads (read_bytes, tail_lines) on a bare descriptor: the same refusals, any size.

Why: a poll reads four or five small files, and they are read with one
pread after the open and fstat instead of through a buffered file object.
The rules every reader of the spool relies on must not move with it: a
symlink or FIFO is refused without blocking, a file over the limit is an
error, and a file that grows or shrinks between the fstat and the read is
read as it is, never cut short at the size fstat saw.
"""
from __future__ import annotations

import os

import pytest

from jobs.errors import SpecError
from jobs.spool import NotRegularFile, _open_fd, _read_at, read_bytes, tail_lines


def test_read_bytes_reads_a_file_up_to_its_limit_and_refuses_one_byte_more(tmp_path):
    f = tmp_path / "state.json"
    f.write_bytes(b"x" * 64)
    assert read_bytes(f, 64) == b"x" * 64
    with pytest.raises(SpecError, match="larger than 63 bytes"):
        read_bytes(f, 63)
    f.write_bytes(b"")
    assert read_bytes(f, 64) == b""


@pytest.mark.parametrize("odd", ["fifo", "symlink", "directory"])
def test_a_file_that_is_not_regular_is_refused_at_once(tmp_path, odd):
    path = tmp_path / "status.txt"
    target = tmp_path / "elsewhere"
    target.write_text("42")
    if odd == "fifo":
        os.mkfifo(path)  # an open() that followed the rules of a plain file would block here forever
    elif odd == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    with pytest.raises(NotRegularFile):
        read_bytes(path)
    assert tail_lines(path) == []


def test_a_missing_file_is_file_not_found_for_read_bytes_and_no_lines_for_tail_lines(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "nothing")
    assert tail_lines(tmp_path / "nothing") == []


def test_tail_lines_gives_the_last_lines_and_drops_a_line_cut_by_the_window(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    assert tail_lines(log, 3) == ["line 997", "line 998", "line 999"]
    window = tail_lines(log, 10_000, max_bytes=100)
    assert window[-1] == "line 999" and all(line.startswith("line ") for line in window)
    assert len("\n".join(window)) < 100  # the partial first line of the window is not shown
    log.write_bytes(b"only\n")
    assert tail_lines(log, 3) == ["only"]


def test_a_file_that_grew_after_the_fstat_is_read_on_and_one_that_shrank_up_to_its_end(tmp_path):
    """What a program appends between our fstat and our read is read too (up to the cap), not cut off."""
    f = tmp_path / "stdout.log"
    f.write_bytes(b"a" * 100)
    fd, st = _open_fd(f)
    try:
        assert _read_at(fd, 0, st.st_size, 1000) == b"a" * 100
        with open(f, "ab") as w:
            w.write(b"b" * 50)  # grew after the fstat
        assert _read_at(fd, 0, st.st_size, 1000) == b"a" * 100 + b"b" * 50
        assert _read_at(fd, 0, st.st_size, 120) == b"a" * 100 + b"b" * 20  # never past the cap
        assert _read_at(fd, 90, st.st_size, 1000) == b"a" * 10 + b"b" * 50
        os.truncate(f, 30)  # shrank after the fstat
        assert _read_at(fd, 0, st.st_size, 1000) == b"a" * 30
        assert _read_at(fd, 50, st.st_size, 1000) == b""
    finally:
        os.close(fd)

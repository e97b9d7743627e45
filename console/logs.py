"""Reading a run's files for people: an attempt's stdout/stderr (sizes, new lines, the whole download)
and its notifications. Every file is opened with open_regular: a link planted in a run is never followed."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from jobs.runfiles import AttemptFiles
from jobs.spool import NotRegularFile, open_regular

LOG_CHUNK = 64 * 1024
LOG_FIRST_BYTES = 256 * 1024   # a followed log starts with at most this much; the download has all
MAX_NOTIFICATIONS = 200
STREAMS = ("stdout", "stderr")


def path_of(files: AttemptFiles, stream: str) -> str:
    return files.stdout if stream == "stdout" else files.stderr


def sizes(files: AttemptFiles) -> dict[str, int | None]:
    """Each stream's size in bytes; None where the log is not there (yet)."""
    out = {}
    for stream in STREAMS:
        try:
            out[stream] = os.lstat(path_of(files, stream)).st_size
        except OSError:
            out[stream] = None
    return out


def chunks(f) -> Iterator[bytes]:
    """The whole of an open log, LOG_CHUNK at a time; closes it at the end."""
    with f:
        while data := f.read(LOG_CHUNK):
            yield data


def read_new(path: str, offset: int) -> tuple[str, int]:
    """New whole lines of a log from offset (-1: the last LOG_FIRST_BYTES); the text and the new offset."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if offset < 0 or offset > size:  # first read, or the file was replaced
                offset = max(0, size - LOG_FIRST_BYTES)
            if size <= offset:
                return "", offset
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    except (FileNotFoundError, NotRegularFile):
        return "", max(offset, 0)
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) < LOG_CHUNK:
        return "", offset  # half a line: wait for its end
    data = data[:cut] if cut else data
    return data.decode("utf-8", "replace"), offset + len(data)


def follow(files: AttemptFiles, offsets: dict[str, int]) -> list[tuple[str, str]]:
    """The new whole lines of both streams from `offsets` (stream -> offset, -1 at first), which move on."""
    out = []
    for stream in STREAMS:
        text, offsets[stream] = read_new(path_of(files, stream), offsets.get(stream, -1))
        if text:
            out.append((stream, text))
    return out


def notifications(path: str) -> list[dict[str, Any]]:
    """The last MAX_NOTIFICATIONS messages passed to the job; a line that is not one is skipped."""
    try:
        with open_regular(path) as f:
            lines = f.read(256 * 1024).decode("utf-8", "replace").splitlines()
    except (FileNotFoundError, NotRegularFile):
        return []
    out = []
    for line in lines[-MAX_NOTIFICATIONS:]:
        try:
            n = json.loads(line)
            out.append({"at": float(n["at"]), "message": str(n["message"])})
        except (ValueError, KeyError, TypeError):
            continue
    return out

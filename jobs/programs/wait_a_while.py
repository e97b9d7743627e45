#!/usr/bin/env python3
"""The demo program: waits, reports progress, stands in for a real solver.

Usage: wait_a_while.py SECONDS STATUS_FILE RESULT_FILE

Writes a 0-100 percentage to STATUS_FILE every second (atomically), `UNSET`
to RESULT_FILE at start and `FINISHED` at the end. On SIGTERM it writes
"aborted after N s" and exits 143. Messages appended to the notifications file
(JOB_NOTIFICATIONS_FILE, one JSON object per line) are echoed to stdout.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

USAGE = "usage: wait_a_while.py SECONDS STATUS_FILE RESULT_FILE\n  SECONDS: a whole number of seconds >= 0"


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Notifications:
    """Reads new lines of the notifications file, remembering how far it got."""

    def __init__(self, path: str | None):
        self.path, self.offset = path, 0

    def poll(self) -> list[str]:
        if not self.path:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # only whole lines
        self.offset += end
        messages = []
        for line in data[:end].splitlines():
            try:
                messages.append(str(json.loads(line)["message"]))
            except (ValueError, KeyError, TypeError):
                messages.append(line.decode("utf-8", "replace"))
        return messages


def parse_args(argv: list[str]) -> tuple[int, str, str]:
    if len(argv) != 3:
        raise ValueError("expected 3 arguments")
    try:
        seconds = int(argv[0])
    except ValueError:
        raise ValueError(f"SECONDS must be a whole number, got {argv[0]!r}") from None
    if seconds < 0:
        raise ValueError(f"SECONDS must be >= 0, got {seconds}")
    for p in argv[1:]:
        if not p or not os.path.isdir(os.path.dirname(p) or "."):
            raise ValueError(f"directory of {p!r} does not exist")
    return seconds, argv[1], argv[2]


class Terminated(Exception):
    """Raised from the SIGTERM handler so a sleep ends at once."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str]) -> int:
    try:
        seconds, status_file, result_file = parse_args(argv)
    except ValueError as e:
        print(f"wait_a_while.py: {e}\n{USAGE}", file=sys.stderr)
        return 2
    start = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    notes = Notifications(os.environ.get("JOB_NOTIFICATIONS_FILE"))
    try:
        write_atomic(result_file, "UNSET")
        write_atomic(status_file, "0")
        print(f"waiting {seconds} s", flush=True)
        last = -1
        while (elapsed := time.monotonic() - start) < seconds:
            for m in notes.poll():
                print(f"notification: {m}", flush=True)
            percent = min(99, int(100 * elapsed / seconds))
            write_atomic(status_file, str(percent))
            if percent != last:
                print(f"{percent}% ({int(elapsed)}/{seconds} s)", flush=True)
                last = percent
            time.sleep(min(1.0, seconds - elapsed))
    except Terminated:
        elapsed = int(time.monotonic() - start)
        write_atomic(result_file, f"aborted after {elapsed} s")
        print(f"aborted after {elapsed} s", flush=True)
        return 143
    for m in notes.poll():
        print(f"notification: {m}", flush=True)
    write_atomic(result_file, "FINISHED")
    write_atomic(status_file, "100")
    print("100% done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

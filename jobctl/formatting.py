"""How jobctl shows times, durations and tables on a terminal or a pipe."""
from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime, timezone


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """Aligned columns; with `width`, the last column is cut (…) so lines fit, but keeps MIN_LAST chars."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = None if width is None else max(MIN_LAST, width - sum(w + 2 for w in widths[:-1]))
    lines = ["  ".join(str(c).ljust(w) for c, w in zip([*r[:-1], clip(str(r[-1]), last)], widths)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


MIN_LAST = 20  # a reason cut shorter than this says nothing


def clip(text: str, width: int | None) -> str:
    text = " ".join(text.split())  # one line per job, whatever the reason holds
    return text if width is None or len(text) <= width else text[:width - 1] + "…"


def terminal_width() -> int | None:
    """The width to fit lines to: the terminal's, or $COLUMNS; None (no cut) when stdout is a pipe or file."""
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None

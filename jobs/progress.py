"""A job's progress file, read the same way by the status page and by jobctl.

The file belongs to the program, so anything may be in it. The rule: a
number (after stripping whitespace) is clamped to 0-100; anything else
(empty, text, NaN, infinity, larger than 64 bytes, not a regular file,
missing, unreadable) is None, "unknown", never a made-up 0 or 100 %.
"""
from __future__ import annotations

import math
import os

from .errors import SpecError
from .spool import read_bytes

MAX_PROGRESS_BYTES = 64


def read_percent(path: str | os.PathLike) -> float | None:
    """The percentage in a progress file, 0-100, or None when it says nothing usable."""
    try:
        value = float(read_bytes(path, MAX_PROGRESS_BYTES).decode("utf-8", "replace"))
    except (OSError, SpecError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, min(100.0, value))

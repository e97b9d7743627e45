"""Percentiles and summaries: every figure is a median with a spread, never one lucky number."""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict:
    """median, p10-p90, IQR, p99, min, max, n of a sample."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values), "median": statistics.median(values), "p10": percentile(values, 10),
        "p25": percentile(values, 25), "p75": percentile(values, 75), "p90": percentile(values, 90),
        "p99": percentile(values, 99), "min": min(values), "max": max(values),
    }

"""How the console writes durations, times, percentages and sizes, and the page templates that use them."""
from __future__ import annotations

import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from jobs.definitions import Definition
from jobs.states import ACTIVE_STATES, DISPLAY_STATES

TEMPLATES = Path(__file__).resolve().parent / "templates"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def clock(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.0f} %"


def size(n: int | None) -> str:
    """A byte count for people: 512 B, 1.5 KiB, ... TiB."""
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def bar_value(job: dict) -> Markup:
    """A progress bar's value attribute: none (the animated "busy" bar) only for a running job whose
    progress is unknown; a job that waits, or ended without a percentage, shows an empty bar."""
    if job["progress"] is not None:
        return Markup(f'value="{float(job["progress"]):g}"')
    return Markup("") if job["state"] in ACTIVE_STATES else Markup('value="0"')


def templates(definitions: dict[str, Definition]) -> Environment:
    """The pages' Jinja environment: autoescaped, with the filters above and the states and job types."""
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(duration=duration, clock=clock, percent=percent, bar_value=bar_value)
    env.globals.update(states=DISPLAY_STATES, definitions=definitions)
    return env

"""The HTML status page the workflow manager shows in an iframe while a job runs.

Self-contained (inline CSS, no script, no external resource), one look for
every state, and every value that comes from the program or a user is escaped.
The card carries what a program needs as data-* attributes (`_data`), so a
client reads the state, reason, exit code and progress without the wording.
`PageView` holds what a page says apart from the clock; its `digest()` decides
whether a poll may answer `UNCHANGED`, so elapsed time and ETA, which change on
every poll, are computed at render time from `now` and never part of it.
The "Resources used" block says what the job used: so far while it waits or
runs (this attempt's wall time, counted at render time, and whatever ended
attempts recorded), in total once it ended (jobs/usagereport.py's words).
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from html import escape
from operator import attrgetter

from jobs.usage import Usage
from jobs.usagereport import facts as usage_facts
from jobs.usagereport import seconds

_MARKUP = re.compile("[&<>\"']")  # what html.escape() replaces


def _e(value: object) -> str:
    """html.escape(str(value)), without its five passes over text with nothing to escape (most of a page)."""
    text = str(value)
    return escape(text) if _MARKUP.search(text) else text


STATES = ("queued", "running", "stopping", "succeeded", "failed", "aborted")
_BADGES = {
    "queued": "Queued", "running": "Running", "stopping": "Stopping",
    "succeeded": "Completed", "failed": "Failed", "aborted": "Aborted",
}


@dataclass(frozen=True)
class PageView:
    """Everything a status page shows that does not depend on the clock."""
    state: str
    title: str
    service_id: str
    headline: str
    detail: str = ""
    percent: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 1
    ahead: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    stopped: str = ""  # how the supervisor's stop ended it: SIGTERM, or SIGKILL after the grace period
    log_title: str = ""
    log_lines: tuple[str, ...] = ()
    usage: Usage | None = None        # the sum of the ended attempts' records (jobs/usage.py)
    queue_wait_s: float | None = None  # this attempt's wait for a slot, once it started

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"unknown page state {self.state!r}")

    def digest(self) -> str:
        """A hash of the content; equal digests mean the user would see the same page.

        Kept on the view once computed: the façade hands one view of an unchanged job to many polls."""
        known = self.__dict__.get("_digest")
        if known is None:
            raw = repr(_CONTENT(self)).encode("utf-8", "surrogatepass")
            known = self.__dict__["_digest"] = hashlib.sha256(raw).hexdigest()[:32]
        return known


_CONTENT = attrgetter(*(f.name for f in fields(PageView)))  # every field, in order, as one tuple


def encode(page: str) -> str:
    """The page as the WFM wants it in `status_base64`: base64 of UTF-8, as ASCII text."""
    return base64.b64encode(page.encode("utf-8")).decode("ascii")


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S UTC")


def _used(view: PageView, now: float) -> tuple[str, list[tuple[str, str]]]:
    """The usage block's title and lines: so far (waiting, running) or in total (ended); no lines: nothing known."""
    ended = view.state in ("succeeded", "failed", "aborted")
    lines: list[tuple[str, str]] = []
    if not ended and view.started_at is not None:
        lines.append(("Wall time, this attempt", seconds(max(0.0, now - view.started_at))))
        if view.queue_wait_s is not None:
            lines.append(("Queue wait, this attempt", seconds(view.queue_wait_s)))
        lines.append(("CPU time and memory", "measured when the attempt ends"))
    if view.usage is not None:
        prefix = "" if ended else "Ended attempts: "
        lines += [(prefix + k, v) for k, v in usage_facts(view.usage)]
    return ("Resources used in total" if ended else "Resources used so far"), lines


def _facts(view: PageView, now: float) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    if view.ahead is not None and view.state == "queued":
        facts.append(("Jobs ahead", str(view.ahead)))
    if view.started_at is not None:
        end = view.finished_at if view.finished_at is not None else now
        elapsed = max(0.0, end - view.started_at)
        facts.append(("Started", _clock(view.started_at)))
        facts.append(("Elapsed" if view.finished_at is None else "Ran for", _duration(elapsed)))
        if view.state == "running" and view.percent and 0 < view.percent < 100 and elapsed > 0:
            remaining = elapsed * (100 - view.percent) / view.percent
            facts.append(("Estimated remaining", f"about {_duration(remaining)}"))
    if view.attempt > 1:
        facts.append(("Attempt", str(view.attempt)))
    if view.exit_code is not None:
        facts.append(("Exit code", str(view.exit_code)))
    if view.stopped:
        facts.append(("Stopped", view.stopped))
    elif view.signal is not None:
        facts.append(("Stopped by signal", str(view.signal)))
    facts.append(("Service ID", view.service_id))
    return facts


_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:12px;background:#f4f6f9;color:#1f2933;
 font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
.card{--accent:#2f6fdb;max-width:760px;width:100%;margin:0 auto;background:#fff;
 border:1px solid #d9e2ec;border-top:4px solid var(--accent);border-radius:8px;padding:18px 22px}
.s-queued{--accent:#7b8794}.s-stopping{--accent:#c77700}.s-succeeded{--accent:#2e9b57}
.s-failed{--accent:#d64545}.s-aborted{--accent:#9a6b00}
.head{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;gap:6px 12px}
h1{font-size:19px;margin:0;font-weight:600;overflow-wrap:anywhere}
.badge{padding:2px 10px;border-radius:999px;background:var(--accent);color:#fff;
 font-size:12px;font-weight:700;letter-spacing:.05em;text-transform:uppercase}
.headline{margin:12px 0 4px;font-size:16px;overflow-wrap:anywhere}
.detail{margin:0 0 12px;color:#52606d;overflow-wrap:anywhere}
.bar{position:relative;height:24px;margin:12px 0;background:#e4e7eb;border-radius:6px;overflow:hidden}
.fill{height:100%;background:var(--accent)}
.bar span{position:absolute;inset:0;text-align:center;line-height:24px;font-size:13px;font-weight:700;color:#102a43}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:12px 0 0}
dt{color:#616e7c}dd{margin:0;overflow-wrap:anywhere}
h2{font-size:13px;margin:16px 0 6px;color:#52606d;text-transform:uppercase;letter-spacing:.05em}
pre{margin:0;padding:10px 12px;overflow:auto;background:#1f2933;color:#e4e7eb;border-radius:6px;
 font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
.foot{margin-top:14px;font-size:12px;color:#7b8794}
"""


def _progress(view: PageView) -> float | None:
    """The percentage the bar shows, None while it is not known (the bar then says "waiting")."""
    if view.state == "succeeded":
        return 100.0
    return None if view.percent is None else max(0.0, min(100.0, view.percent))


def _data(view: PageView, progress: float | None) -> str:
    """The card's data-* attributes: what the page says for programs (waiter-client), apart from its wording."""
    attrs = {"data-state": view.state, "data-reason": view.detail,
             "data-exit-code": view.exit_code, "data-signal": view.signal, "data-stopped": view.stopped or None,
             "data-progress": None if progress is None else f"{progress:.0f}"}
    return "".join(f" {k}=\"{_e(v)}\"" for k, v in attrs.items() if v is not None)


def _dl(pairs: list[tuple[str, str]], attrs: str = "") -> str:
    return f"<dl{attrs}>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs) + "</dl>"


def render(view: PageView, now: float) -> str:
    """The page for `view` as seen at time `now` (a UNIX time)."""
    progress = _progress(view)
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        f"<title>{_e(view.title)}: {_e(_BADGES[view.state])}</title><style>{_CSS}</style></head>",
        f"<body><div class=\"card s-{view.state}\"{_data(view, progress)}>",
        f"<div class=\"head\"><h1>{_e(view.title)}</h1><span class=\"badge\">{_e(_BADGES[view.state])}</span></div>",
        f"<p class=\"headline\">{_e(view.headline)}</p>",
    ]
    if view.detail:
        parts.append(f"<p class=\"detail\">{_e(view.detail)}</p>")
    if view.percent is not None or view.state in ("queued", "running", "stopping", "succeeded"):
        pct = progress if progress is not None else 0.0
        label = f"{pct:.0f} %" if progress is not None else "waiting"
        parts.append(f"<div class=\"bar\"><div class=\"fill\" style=\"width:{pct:.1f}%\"></div>"
                     f"<span>{_e(label)}</span></div>")
    parts.append(_dl(_facts(view, now)))
    used_title, used = _used(view, now)
    if used:
        parts.append(f"<h2>{_e(used_title)}</h2>" + _dl(used, ' class="usage"'))
    if view.log_lines:
        parts.append(f"<h2>{_e(view.log_title or 'Output')}</h2><pre>{_e(chr(10).join(view.log_lines))}</pre>")
    parts.append(f"<p class=\"foot\">Updated {_e(_clock(now))}</p></div></body></html>\n")
    return "".join(parts)

"""The status page: one look for every state, nothing external, everything escaped, stable digests.

Why a real browser: the WFM shows the page in an iframe, so it is rendered in
headless Chromium for every state and the screenshots are kept in
test-artifacts/ for a human to look at; the DOM Chromium builds proves that
program output cannot inject markup.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import html as lhtml

from facade.status_page import STATES, PageView, encode, render
from facade_harness import artifacts  # noqa: F401

NOW = 1_790_000_000.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"> & "quotes" \'single\''

VIEWS = {
    "queued": PageView("queued", "Waiter", "wf-42-step-3", "Waiting for a free slot, 2 ahead",
                       detail="waiting for a free slot", ahead=2),
    "running": PageView("running", "Waiter", "wf-42-step-3", "Running, 37 % done", percent=37.0,
                        started_at=NOW - 74, log_title="Latest output",
                        log_lines=("waiting 200 s",) + tuple(f"{p}% ({p * 2}/200 s)" for p in range(28, 38))),
    "stopping": PageView("stopping", "Waiter", "wf-42-step-3", "Stopping at the user's request (abortService)",
                         percent=52.0,
                         started_at=NOW - 104, log_title="Latest output", log_lines=("52% (104/200 s)",)),
    "succeeded": PageView("succeeded", "Waiter", "wf-42-step-3", "Finished", started_at=NOW - 200,
                          finished_at=NOW - 1),
    "failed": PageView("failed", "Solver", "wf-42-step-3", "The job failed",
                       detail="exited with code 3", started_at=NOW - 12, finished_at=NOW - 2, exit_code=3,
                       attempt=2, log_title="Last lines of the error output",
                       log_lines=("Traceback (most recent call last):", '  File "solve.py", line 7, in <module>',
                                  "ValueError: mesh has 0 cells")),
    "aborted": PageView("aborted", "Waiter", "wf-42-step-3", "The job was aborted",
                        detail="stopped at the user's request (abortService)",
                        started_at=NOW - 30, finished_at=NOW - 29, exit_code=143,
                        log_title="Last lines of the output", log_lines=("14% (28/200 s)", "aborted after 29 s")),
}


def hostile_view() -> PageView:
    return PageView("failed", HOSTILE, "sid-1", HOSTILE, detail=HOSTILE, started_at=NOW - 5, finished_at=NOW,
                    exit_code=1, log_title=HOSTILE, log_lines=(HOSTILE, "</pre></div><h1>injected</h1>"))


def test_every_state_has_a_view_here():
    """The screenshots below cover every state the page knows."""
    assert set(STATES) == set(VIEWS)


@pytest.mark.parametrize("state", STATES)
def test_page_is_self_contained(state):
    """No script, no external stylesheet, font or image: the page works in a sandboxed iframe offline."""
    html = render(VIEWS[state], NOW)
    assert html.startswith("<!DOCTYPE html>")
    for forbidden in ("<script", "<link", "src=", "http://", "https://", "url(", "@import"):
        assert forbidden not in html, forbidden
    assert 'name="viewport"' in html and "max-width:760px" in html


def test_everything_from_the_program_is_escaped():
    """Markup in the title, reason, log title or output lines arrives as text, never as tags."""
    html = render(hostile_view(), NOW)
    assert "<script>" not in html and "<img" not in html and "<h1>injected" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=&quot;alert(2)&quot;" in html and "&#x27;single&#x27;" in html


def test_page_is_base64_ascii():
    """status_base64 is ASCII base64 of the UTF-8 page (the WFM decodes it as such)."""
    view = PageView("running", "Wärme", "sid-1", "Läuft – 5 %", percent=5, started_at=NOW - 1)
    encoded = encode(render(view, NOW))
    assert encoded.isascii()
    assert "Läuft – 5 %" in base64.b64decode(encoded).decode("utf-8")


def test_digest_ignores_the_clock_but_not_the_content():
    """Elapsed time, ETA and time of day change the HTML but not the digest; progress or output change both."""
    view = VIEWS["running"]
    assert render(view, NOW) != render(view, NOW + 7)
    assert view.digest() == replace(view).digest()
    assert view.digest() != replace(view, percent=38.0).digest()
    assert view.digest() != replace(view, log_lines=view.log_lines + ("more",)).digest()


def test_running_page_shows_progress_elapsed_and_eta():
    """The running page has the bar at its percentage, the elapsed time and an estimate of what remains."""
    html = render(VIEWS["running"], NOW)
    assert 'style="width:37.0%"' in html and "37 %" in html
    assert "<dt>Elapsed</dt><dd>1 min 14 s</dd>" in html
    assert "<dt>Estimated remaining</dt><dd>about 2 min 06 s</dd>" in html
    assert "37% (74/200 s)" in html


def card_data(page: str) -> dict[str, str]:
    """The data-* attributes of the page's one element that carries data-state."""
    (card,) = lhtml.document_fromstring(page).xpath("//*[@data-state]")
    return {k: v for k, v in card.attrib.items() if k.startswith("data-")}


@pytest.mark.parametrize("state, expected", [
    ("queued", {"data-state": "queued", "data-reason": "waiting for a free slot"}),
    ("running", {"data-state": "running", "data-reason": "", "data-progress": "37"}),
    ("stopping", {"data-state": "stopping", "data-reason": "", "data-progress": "52"}),
    ("succeeded", {"data-state": "succeeded", "data-reason": "", "data-progress": "100"}),
    ("failed", {"data-state": "failed", "data-reason": "exited with code 3", "data-exit-code": "3"}),
    ("aborted", {"data-state": "aborted", "data-reason": "stopped at the user's request (abortService)",
                 "data-exit-code": "143"}),
])
def test_page_says_state_reason_exit_code_and_progress_in_data_attributes(state, expected):
    """One element carries what a program reads (waiter-client), apart from the page's wording."""
    assert expected == card_data(render(VIEWS[state], NOW))


def test_data_attributes_hold_program_text_as_text():
    """A hostile reason stays one attribute's value: it adds no attribute and no element."""
    page = render(PageView("aborted", "W", "sid", "h", detail=HOSTILE, signal=9, stopped="SIGKILL after 5 s"), NOW)
    assert {"data-state": "aborted", "data-reason": HOSTILE, "data-signal": "9",
            "data-stopped": "SIGKILL after 5 s"} == card_data(page)


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, timeout=120)


# In CI (.ci/run installs it) a missing chromium is a failure, never a silent skip.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="chromium not installed (apt-get install chromium)")


@needs_chromium
@pytest.mark.parametrize("width", [1000, 420])
def test_screenshots_of_every_state(width, tmp_path, artifacts):  # noqa: F811
    """Chromium renders each state's page; the PNGs go to test-artifacts/ for review."""
    for state in STATES:
        html_file = tmp_path / f"{state}.html"
        html_file.write_text(render(VIEWS[state], NOW), encoding="utf-8")
        shot = artifacts / f"status-page-{state}-{width}.png"
        shot.unlink(missing_ok=True)
        done = chromium([f"--screenshot={shot}", f"--window-size={width},700", html_file.as_uri()],
                        tmp_path / "profile")
        assert shot.exists(), done.stderr.decode(errors="replace")[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 5000


@needs_chromium
def test_browser_sees_hostile_output_as_text(tmp_path, artifacts):  # noqa: F811
    """In the DOM Chromium builds, program output made no script, image or heading element."""
    html_file = tmp_path / "hostile.html"
    html_file.write_text(render(hostile_view(), NOW), encoding="utf-8")
    done = chromium(["--dump-dom", html_file.as_uri()], tmp_path / "profile")
    dom = done.stdout.decode("utf-8")
    assert "<body>" in dom
    assert "<script" not in dom and "<img" not in dom and "<h1>injected" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    shot = artifacts / "status-page-hostile.png"
    chromium([f"--screenshot={shot}", "--window-size=1000,700", html_file.as_uri()], tmp_path / "profile")
    assert shot.exists()

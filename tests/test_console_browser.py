"""The console in real headless Chromium (Debian's, driven by Playwright): what a person sees and does."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from console_harness import console  # noqa: F401 - fixture
from facade_harness import artifacts, devauth  # noqa: F401 - fixtures
from test_console import submit_as

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium); with CI set this fails instead",
                allow_module_level=True)


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def browser(chromium):
    """The browser for one test; its pages are closed after it (each holds an event stream, and
    Chromium opens at most 6 HTTP/1.1 connections to one host)."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def logged_in(browser, console, user="alice", password="alice-pw-1", project="demo"):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20000)
    page.goto(console.url + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.fill("input[name=project]", project)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/")
    page.on("dialog", lambda d: d.accept())  # the confirmations
    return page


def test_board_shows_a_new_job_and_its_progress_without_reloading(browser, console, artifacts):
    """A job dropped into the spool appears on the open board and its progress bar moves, with no reload."""
    page = logged_in(browser, console)
    page.evaluate("window.notReloaded = true")
    sid = submit_as(console, "alice", "demo", seconds=8)
    row = page.locator(f"tr[data-sid='{sid}']")
    row.wait_for()
    page.wait_for_function(f"""() => {{
        const p = document.querySelector("tr[data-sid='{sid}'] progress");
        return p && p.value > 0 && p.value < 100; }}""")
    first = float(row.locator("progress").get_attribute("value"))
    page.wait_for_function(f"""() => document.querySelector("tr[data-sid='{sid}'] progress").value > {first}""")
    assert "RUNNING" in row.locator("td.state").inner_text()
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(artifacts / "console-board.png"), full_page=True)


def test_submit_follow_log_kill_and_restart_from_the_pages(browser, console, artifacts):
    """Submit from the form, follow the log live, kill (the outcome is shown), restart."""
    page = logged_in(browser, console)
    page.goto(console.url + "/submit/waiter")
    page.fill("input[name='input.secondsToWait']", "60")
    page.fill("input[name=service_id]", "browser-job-1")
    page.click("#submit")
    page.wait_for_url(console.url + "/jobs/browser-job-1")
    page.evaluate("window.notReloaded = true")
    page.wait_for_function("() => document.getElementById('log').textContent.includes('waiting 60 s')")
    page.wait_for_function("() => /\\d+% \\(\\d+\\/60 s\\)/.test(document.getElementById('log').textContent)")
    page.wait_for_function("() => document.getElementById('state').textContent.includes('RUNNING')")
    page.screenshot(path=str(artifacts / "console-job.png"), full_page=True)
    page.click("#kill")
    page.wait_for_url(console.url + "/jobs/browser-job-1")
    page.wait_for_function("() => document.getElementById('state').textContent.includes('ABORTED')")
    page.wait_for_function("() => !document.getElementById('outcome').hidden")
    assert "kill applied" in page.inner_text("#outcome")
    page.click("#restart")
    page.wait_for_url(console.url + "/jobs/browser-job-1")
    page.wait_for_function("() => document.getElementById('state').textContent.includes('RUNNING')")
    page.wait_for_function("() => document.getElementById('log').textContent.includes('waiting 60 s')")
    assert "attempt" in page.inner_text("#job") and page.locator(".attempts tbody tr").count() == 2
    page.click("#kill")
    page.wait_for_function("() => document.getElementById('state').textContent.includes('ABORTED')")


def test_another_projects_job_is_not_shown(browser, console):
    """bob's job: not on alice's board, and its page says there is no such job."""
    sid = submit_as(console, "bob", "other", seconds=1)
    page = logged_in(browser, console)
    response = page.goto(f"{console.url}/jobs/{sid}")
    assert response.status == 404 and "No job" in page.inner_text("main")
    page.goto(f"{console.url}/?q={sid}")
    assert page.locator(f"tr[data-sid='{sid}']").count() == 0 and "0 jobs" in page.inner_text("#board")

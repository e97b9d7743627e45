"""The console in real headless Chromium (Debian's, driven by Playwright): what a person sees and does."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from console_harness import console, second_console  # noqa: F401 - fixtures
from facade_harness import artifacts, devauth, new_sid  # noqa: F401 - fixtures
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
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()  # more pages: page.context
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


def test_a_live_update_keeps_the_board_on_its_page(browser, console, artifacts):
    """On page 2, a new job (which moves every row down) refetches page 2's rows, not page 1's."""
    tag = new_sid("pg")
    for i in (1, 2, 3):
        submit_as(console, "alice", "demo", seconds=0, sid=f"{tag}-{i}")
        time.sleep(0.01)  # the board is ordered by submission time
    page = logged_in(browser, console)
    page.goto(f"{console.url}/?q={tag}&per_page=2&page=2")
    assert [f"{tag}-1"] == page.eval_on_selector_all("tr[data-sid]", "trs => trs.map(t => t.dataset.sid)")
    submit_as(console, "alice", "demo", seconds=0, sid=f"{tag}-4")
    page.wait_for_function("""() => document.querySelectorAll("tr[data-sid]").length == 2""")
    assert [f"{tag}-2", f"{tag}-1"] == page.eval_on_selector_all("tr[data-sid]", "trs => trs.map(t => t.dataset.sid)")
    assert "page 2 of 2" in page.inner_text("#board") and page.url.endswith("page=2")
    page.screenshot(path=str(artifacts / "console-board-page-2.png"), full_page=True)


def test_a_link_from_another_site_lands_logged_in(browser, console, artifacts):
    """A link on another site (the workflow manager, a ticket, a chat) opens the job logged in, and every
    other tab stays logged in."""
    sid = submit_as(console, "alice", "demo", seconds=1)
    board = logged_in(browser, console)
    other = board.context.new_page()
    other.route("http://links.example/", lambda route: route.fulfill(
        content_type="text/html", body=f'<a id="go" href="{console.url}/jobs/{sid}">the job</a>'))
    other.goto("http://links.example/")
    other.click("#go")
    other.wait_for_load_state()
    assert other.url == f"{console.url}/jobs/{sid}" and other.locator("#job").count() == 1
    other.screenshot(path=str(artifacts / "console-cross-site-link.png"), full_page=True)
    board.reload()
    assert board.url == console.url + "/" and board.locator("#board").count() == 1


def test_eight_tabs_of_one_browser_all_load_and_follow_their_jobs(browser, console, artifacts):
    """Eight job pages and the board in one browser (which opens at most six connections to a host): each
    loads, follows its job's log and state; one event stream serves them all."""
    first = logged_in(browser, console)
    sids = [submit_as(console, "alice", "demo", seconds=20) for _ in range(8)]
    pages = [first] + [first.context.new_page() for _ in sids]
    for page, sid in zip(pages[1:], sids):
        page.set_default_timeout(20000)
        page.goto(f"{console.url}/jobs/{sid}")
    for page in pages[1:]:
        page.wait_for_function("() => document.getElementById('log').textContent.includes('waiting 20 s')")
        page.wait_for_function("() => document.getElementById('state').textContent.includes('RUNNING')")
    pages[-1].screenshot(path=str(artifacts / "console-eight-tabs.png"), full_page=True)
    deadline = time.monotonic() + 30  # streams of earlier tests' closed pages end at their next write
    while (streams := first.evaluate("() => fetch('/api/health').then(r => r.json()).then(h => h.event_streams)")) > 1:
        assert time.monotonic() < deadline, f"{streams} event streams open for one browser"
        time.sleep(0.5)
    assert streams == 1


def test_a_lost_connection_is_shown_and_recovers(browser, console, artifacts):
    """With the console down, every tab says the connection is lost (no stale "supervisor up"), throws
    nothing, and comes back by itself when the console is up again."""
    sid = submit_as(console, "alice", "demo", seconds=60)
    board = logged_in(browser, console)
    job = board.context.new_page()
    job.set_default_timeout(20000)
    job.goto(f"{console.url}/jobs/{sid}")
    errors = []
    for page in (board, job):
        page.on("pageerror", lambda e: errors.append(e))
        page.wait_for_function("() => document.querySelector('#health b').textContent == 'up'")
    console.stop()
    try:
        for page in (board, job):
            page.wait_for_selector("#connection", state="visible")
            page.wait_for_function("() => document.querySelector('#health b').textContent == '?'")  # not "up"
        board.screenshot(path=str(artifacts / "console-connection-lost.png"), full_page=True)
        time.sleep(4)  # the pages' own requests fail meanwhile
    finally:
        console.start()
    for page in (board, job):
        page.wait_for_selector("#connection", state="hidden", timeout=30000)
        page.wait_for_function("() => document.querySelector('#health b').textContent == 'up'")
    assert [] == errors
    job.wait_for_function("() => document.getElementById('log').textContent.includes('waiting 60 s')")


def test_the_service_id_pattern_is_one_the_browser_checks(browser, console):
    """The form's serviceID pattern compiles with the `v` flag browsers use, so a bad serviceID is caught."""
    page = logged_in(browser, console)
    page.goto(console.url + "/submit/waiter")
    field = page.locator("input[name=service_id]")
    assert page.evaluate("p => { new RegExp(p, 'v'); return true; }", field.get_attribute("pattern"))
    field.fill("-starts-with-a-dash")
    assert field.evaluate("el => el.validity.patternMismatch")
    field.fill("job_1.a-b")
    assert not field.evaluate("el => el.validity.patternMismatch")


def test_console_stops_promptly_on_sigterm_with_event_streams_open(chromium, second_console):
    """Ten browsers with the board or a job page open (ten event streams) do not keep the console from
    stopping on SIGTERM: the streams end at once, and granian's graceful shutdown completes."""
    c = second_console
    sid = submit_as(c, "alice", "demo", seconds=30)
    cookies = [{"name": k.name, "value": k.value, "url": c.url} for k in c.session("olga").cookies]
    for i in range(10):
        context = chromium.new_context()
        context.add_cookies(cookies)
        context.new_page().goto(c.url + ("/" if i % 2 else f"/jobs/{sid}"))
    s = c.session("olga")
    deadline = time.monotonic() + 30
    while s.get(c.url + "/api/health", timeout=30).json()["event_streams"] < 10:
        assert time.monotonic() < deadline, "ten event streams"
        time.sleep(0.2)
    processes = [psutil.Process(c.proc.pid)] + psutil.Process(c.proc.pid).children(recursive=True)
    started = time.monotonic()
    c.proc.proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=20)
    assert [] == alive and time.monotonic() - started < 15
    for context in chromium.contexts:
        context.close()

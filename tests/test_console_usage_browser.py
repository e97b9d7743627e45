"""What jobs used, in real headless Chromium: the console's usage view, board columns and job page, and the
status page the workflow manager shows (served by the real façade). Screenshots go to test-artifacts/.

The usage records are written as the supervisor writes them (tests/test_usage.py's write_run), into the
spool of a running stack: finished runs, which the supervisor leaves as they are.
"""
from __future__ import annotations

import base64
import time

from console_harness import OPERATOR, console  # noqa: F401 - fixture
from facade_harness import Soap, artifacts, devauth, new_sid  # noqa: F401 - fixtures
from test_console_browser import browser, chromium, logged_in  # noqa: F401 - fixtures (and the skip without Chromium)
from test_usage import used, write_run

from jobs.spool import Spool
from jobs.states import JobState


def keys(page) -> list[str]:
    return page.eval_on_selector_all("#usage-table tbody tr[data-key]", "rows => rows.map(r => r.dataset.key)")


def test_usage_view_board_columns_and_job_page(browser, console, artifacts):  # noqa: F811
    """Operators see every project's usage, a user their own; the board sorts by CPU; the job page shows each attempt."""
    spool, now, tag = Spool(console.stack.spool), time.time(), new_sid("use")
    write_run(spool, f"{tag}-light", JobState.FAILED, [used(2.0, 10.0, 100), used(3.0, 20.0, 300)], now - 600)
    write_run(spool, f"{tag}-heavy", JobState.SUCCEEDED, [used(95.0, 120.0, 700)], now - 300)
    write_run(spool, f"{tag}-bob", JobState.SUCCEEDED, [used(40.0, 60.0, 50)], now - 120, "other", "bob")

    olga = logged_in(browser, console, *OPERATOR)
    olga.goto(console.url + "/usage?since=1d")
    assert {"demo", "other"} <= set(keys(olga))
    assert olga.locator("#usage-chart rect").count() >= 2
    olga.screenshot(path=str(artifacts / "console-usage-operator.png"), full_page=True)

    alice = logged_in(browser, console)
    alice.click("header a[href='/usage']")
    alice.wait_for_url(console.url + "/usage")
    alice.fill("input[name=since]", "1d")
    alice.click("#usage-filters button")
    alice.wait_for_url("**/usage?*")
    assert ["demo"] == keys(alice)
    assert "1 min 40 s" == alice.locator("#usage-table tr[data-key=demo] td.cpu").inner_text()  # 2 + 3 + 95 s
    alice.screenshot(path=str(artifacts / "console-usage-user.png"), full_page=True)

    alice.goto(console.url + f"/?q={tag}")
    alice.click("th.usage-col a:has-text('CPU')")
    alice.wait_for_url("**sort=cpu**")
    sids = alice.eval_on_selector_all("#board tr[data-sid]", "rows => rows.map(r => r.dataset.sid)")
    assert [f"{tag}-heavy", f"{tag}-light"] == sids  # bob's job is not alice's to see
    assert "95.0 s" == alice.locator(f"tr[data-sid='{tag}-heavy'] td.usage-cpu").inner_text()
    assert "700.0 MiB" == alice.locator(f"tr[data-sid='{tag}-heavy'] td.usage-memory").inner_text()
    alice.screenshot(path=str(artifacts / "console-board-usage.png"), full_page=True)

    alice.goto(console.url + f"/jobs/{tag}-light")
    cells = alice.locator("td.attempt-usage").all_inner_texts()
    assert "Peak memory: 100.0 MiB" in cells[0] and "Peak memory: 300.0 MiB" in cells[1]
    assert "5.00 s" in alice.locator("table#usage").inner_text()
    alice.screenshot(path=str(artifacts / "console-job-usage.png"), full_page=True)


def test_status_page_shows_what_the_job_used(browser, console, artifacts):  # noqa: F811
    """The page getServiceStatus answers says what a running job used so far and a failed one in total."""
    stack = console.stack
    soap, token = Soap(stack.wsdl), stack.token("alice")
    running = new_sid("use-run")
    soap.call("zeep", "startWaiter", running, token, stack.extra(), 30)
    stack.wait_state(running, {"RUNNING"})
    failed = new_sid("use-fail")
    write_run(Spool(stack.spool), failed, JobState.FAILED, [used(2.0, 10.0, 100), used(3.0, 20.0, 300)],
              time.time() - 60, auth_url=stack.auth.wsdl)
    page = browser.new_page(viewport={"width": 800, "height": 900})
    for sid, title, name in ((running, "Resources used so far", "status-page-usage-running.png"),
                             (failed, "Resources used in total", "status-page-usage-failed.png")):
        reply = soap.call("zeep", "getServiceStatus", sid, token)
        page.set_content(base64.b64decode(reply.status_base64).decode())
        assert 1 == page.locator(f"h2:has-text('{title}')").count()
        text = page.locator("dl.usage").inner_text()
        if sid == running:
            assert "Wall time, this attempt" in text
        else:
            assert "Peak memory" in text and "300.0 MiB" in text and "CPU time" in text and "5.00 s" in text
        page.screenshot(path=str(artifacts / name), full_page=True)
    soap.call("zeep", "abortService", running, token)

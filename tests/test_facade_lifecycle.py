"""Whole workflows through the façade: real devauth, real supervisor, real programs, zeep and suds.

Why: the façade only matters end to end. A workflow manager starts a job,
polls until COMPLETED, maybe notifies or aborts it; these tests do exactly
that over HTTP against gunicorn and check the processes and spool behind it.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from facade_harness import (CLIENTS, Soap, devauth, make_stack, new_sid, soap_envelope, stack,  # noqa: F401
                            start_devauth, start_facade)
from harness import ROOT, free_port, wait_for
from jobs import config as jobs_config


@pytest.fixture(scope="module")
def soap(stack):  # noqa: F811
    return Soap(stack.wsdl)


@pytest.fixture(scope="module")
def tokens(stack):  # noqa: F811
    return {user: stack.token(user) for user in ("alice", "dave", "bob")}


def page(status_base64: str) -> str:
    return base64.b64decode(status_base64, validate=True).decode("utf-8")


def status_of(reply) -> str:
    """status_base64 of a reply (a bare string when the job has no other outputs)."""
    return reply if isinstance(reply, str) else reply.status_base64


def running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def waiter_programs(sid: str) -> list[psutil.Process]:
    """The live waiter programs (not their shims) of one serviceID: they run in its attempt's work/."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        cmdline, cwd = " ".join(p.info["cmdline"] or []), p.info["cwd"] or ""
        if ("wait_a_while.py" in cmdline and "shim" not in cmdline and f"/runs/{sid}/" in cwd
                and p.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(p)
    return found


def poll_until_completed(soap: Soap, kind: str, sid: str, token: str, timeout: float = 30):
    """Poll like the WFM (faster); return every answer up to and including COMPLETED."""
    answers = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = soap.call(kind, "getServiceStatus", sid, token)
        answers.append(reply)
        if reply.status_base64 == "COMPLETED":
            return answers
        time.sleep(0.2)
    raise AssertionError(f"{sid} not COMPLETED after {timeout}s: {[a.status_base64[:20] for a in answers]}")


@pytest.mark.parametrize("kind", CLIENTS)
def test_full_lifecycle_reaches_completed_with_finished(kind, soap, stack, tokens):  # noqa: F811
    """startWaiter answers at once with a 0 % page and UNSET; polling ends in COMPLETED with result FINISHED."""
    sid = new_sid(kind)
    began = time.monotonic()
    reply = soap.call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 1)
    assert time.monotonic() - began < 2
    assert "UNSET" == reply.result
    first = page(reply.status_base64)
    assert "Job accepted" in first and "0 %" in first and sid in first
    answers = poll_until_completed(soap, kind, sid, tokens["alice"])
    assert ("COMPLETED", "FINISHED") == (answers[-1].status_base64, answers[-1].result)
    for a in answers[:-1]:
        assert a.result == "UNSET"
        assert a.status_base64 == "UNCHANGED" or "<html" in page(a.status_base64)
    again = soap.call(kind, "getServiceStatus", sid, tokens["alice"])
    assert ("COMPLETED", "FINISHED") == (again.status_base64, again.result)
    spec = json.loads((stack.spool / "runs" / sid / "spec.json").read_text())
    assert {"username": "alice", "project": "demo"} == spec["owner"]
    assert stack.auth.wsdl == spec["auth_url"]
    assert {"secondsToWait": 1} == spec["inputs"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_every_method_works(kind, soap, stack, tokens):  # noqa: F811
    """start, getServiceStatus, notifyService and abortService all answer through this client."""
    sid = new_sid(kind)
    soap.call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 30)
    stack.wait_state(sid, {"RUNNING"})
    running = page(wait_for(lambda: (r := soap.call(kind, "getServiceStatus", sid, tokens["alice"]))
                            .status_base64 != "UNCHANGED" and r.status_base64, 30, what="a page"))
    assert "Running" in running
    assert f"message 1 delivered to {sid}" == soap.call(kind, "notifyService", sid, tokens["alice"], "one")
    assert f"message 2 delivered to {sid}" == soap.call(kind, "notifyService", sid, tokens["alice"], "two")
    assert soap.call(kind, "abortService", sid, tokens["alice"]) is True
    assert "ABORTED" == stack.state(sid)["state"]


def test_missing_seconds_defaults_to_sixty(soap, stack, tokens):  # noqa: F811
    """A start without secondsToWait (as suds sends it when omitted) runs the waiter for 60 s."""
    sid = new_sid("default")
    soap.suds.service.startWaiter(sid, tokens["alice"], stack.extra())
    spec = json.loads(wait_for(lambda: (stack.spool / "runs" / sid / "spec.json").exists()
                               and (stack.spool / "runs" / sid / "spec.json").read_text(), 30))
    assert 60 == spec["inputs"]["secondsToWait"]
    assert soap.call("zeep", "abortService", sid, tokens["alice"]) is True


@pytest.mark.parametrize("element", ["<w:secondsToWait/>", "<w:secondsToWait> \n </w:secondsToWait>"])
def test_empty_seconds_is_absent_and_defaults_to_sixty(element, soap, stack, tokens):  # noqa: F811
    """An empty optional input (the WFM sends <secondsToWait/> for an empty field) means the default, as in
    the reference waiter, not a schema fault."""
    sid = new_sid("empty")
    extra = stack.extra().replace("&", "&amp;")
    r = stack.post(soap_envelope(
        f"<w:startWaiter><w:serviceID>{sid}</w:serviceID><w:sessionToken>{tokens['alice']}</w:sessionToken>"
        f"<w:extraParameters>{extra}</w:extraParameters>{element}</w:startWaiter>"))
    assert 200 == r.status_code, r.text
    spec = json.loads(wait_for(lambda: (stack.spool / "runs" / sid / "spec.json").exists()
                               and (stack.spool / "runs" / sid / "spec.json").read_text(), 30))
    assert 60 == spec["inputs"]["secondsToWait"]
    assert soap.call("zeep", "abortService", sid, tokens["alice"]) is True


def test_twenty_parallel_workflows_complete(stack, tokens):  # noqa: F811
    """Twenty workflows started and polled concurrently each end COMPLETED with their own result."""
    sids = [new_sid(f"par{i:02d}") for i in range(20)]

    def workflow(i_sid):
        i, sid = i_sid
        kind = CLIENTS[i % 2]
        client = Soap(stack.wsdl)  # one client per workflow, like separate WFM sessions
        client.call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 2)
        return poll_until_completed(client, kind, sid, tokens["alice"], timeout=60)[-1]

    with ThreadPoolExecutor(20) as pool:
        finals = list(pool.map(workflow, enumerate(sids)))
    assert [("COMPLETED", "FINISHED")] * 20 == [(f.status_base64, f.result) for f in finals]
    for sid in sids:
        state = stack.state(sid)
        assert ("SUCCEEDED", 1) == (state["state"], state["attempt"])


def test_repeated_start_is_idempotent(soap, stack, tokens):  # noqa: F811
    """The same serviceID started again (sequentially and concurrently, by both clients) runs one process in one run dir."""
    sid = new_sid("again")
    first = soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 30)
    assert "UNSET" == first.result

    def again(kind):
        return Soap(stack.wsdl).call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 30)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(again, CLIENTS * 3))
    assert all("<html" in page(r.status_base64) for r in replies)
    stack.wait_state(sid, {"RUNNING"})
    time.sleep(0.5)
    retried = soap.call("suds", "startWaiter", sid, tokens["alice"], stack.extra(), 5)
    assert "Running" in page(retried.status_base64)
    assert [sid] == [d for d in (p.name for p in (stack.spool / "runs").iterdir()) if d == sid]
    assert not (stack.spool / "incoming" / f"{sid}.json").exists()
    assert 1 == len(waiter_programs(sid))
    assert not list((stack.spool / "rejected").glob(f"*{sid}*"))
    assert soap.call("zeep", "abortService", sid, tokens["alice"]) is True


def test_abort_stops_the_program_and_its_children(stack, tokens):  # noqa: F811
    """abortService on a process tree (a child that ignores SIGTERM) answers true only when all of it is gone."""
    tree = Soap(stack.url("Tree") + "?wsdl")
    sid = new_sid("tree")
    tree.call("zeep", "startTree", sid, tokens["alice"], stack.extra())
    pids_file = stack.attempt_file(sid, "pids.txt")
    pids = [int(p) for p in wait_for(lambda: pids_file.exists() and pids_file.read_text().split(),
                                     30, what="tree pids")]
    procs = [psutil.Process(p) for p in pids]
    assert all(p.is_running() for p in procs)
    assert tree.call("suds", "abortService", sid, tokens["alice"]) is True
    assert "ABORTED" == stack.state(sid)["state"]
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert [] == [p.pid for p in alive if running(p)]


def test_abort_of_ended_and_aborted_jobs(soap, stack, tokens):  # noqa: F811
    """Aborting a finished job answers false; aborting an aborted job again answers true."""
    done = new_sid("done")
    soap.call("zeep", "startWaiter", done, tokens["alice"], stack.extra(), 0)
    stack.wait_state(done, {"SUCCEEDED"})
    assert soap.call("zeep", "abortService", done, tokens["alice"]) is False
    assert soap.call("suds", "abortService", done, tokens["alice"]) is False
    killed = new_sid("killed")
    soap.call("suds", "startWaiter", killed, tokens["alice"], stack.extra(), 30)
    assert soap.call("suds", "abortService", killed, tokens["alice"]) is True
    assert soap.call("zeep", "abortService", killed, tokens["alice"]) is True
    assert [] == waiter_programs(killed)


def text_of(log) -> str:
    """A job's log as far as it is written; nothing yet while RUNNING is saved before the shim opens it."""
    try:
        return log.read_text()
    except FileNotFoundError:
        return ""


def test_notify_reaches_the_programs_stdout(soap, stack, tokens):  # noqa: F811
    """A message passed with notifyService is read by the running program and shows in its stdout.log."""
    sid = new_sid("notify")
    soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 30)
    stack.wait_state(sid, {"RUNNING"})
    message = 'mesh refined: <b>"10%"</b> & done'
    assert f"message 1 delivered to {sid}" == soap.call("suds", "notifyService", sid, tokens["alice"], message)
    stdout = stack.attempt_file(sid, "stdout.log")
    wait_for(lambda: f"notification: {message}" in text_of(stdout), 10, what="notification in stdout.log")
    assert soap.call("zeep", "abortService", sid, tokens["alice"]) is True


@pytest.mark.parametrize("kind", CLIENTS)
def test_notify_after_the_end_is_a_fault(kind, soap, stack, tokens):  # noqa: F811
    """A finished job cannot be notified: JobNotActiveFault says it has ended."""
    sid = new_sid("late")
    soap.call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 0)
    stack.wait_state(sid, {"SUCCEEDED"})
    f = soap.fault(kind, "notifyService", sid, tokens["alice"], "too late")
    assert "JobNotActive" in f.code
    assert f"job {sid} has already ended (SUCCEEDED)" in f.message


def test_unchanged_between_unchanged_polls(stack, tokens):  # noqa: F811
    """While a job's page would say the same (a quiet program), polls answer UNCHANGED; the page returns when it changes."""
    tree = Soap(stack.url("Tree") + "?wsdl")
    sid = new_sid("quiet")
    tree.call("suds", "startTree", sid, tokens["alice"], stack.extra())
    stack.wait_state(sid, {"RUNNING"})
    wait_for(lambda: "tree started" in text_of(stack.attempt_file(sid, "stdout.log")), 30, what="tree output")
    first = status_of(tree.call("zeep", "getServiceStatus", sid, tokens["alice"]))
    assert "tree started" in page(first)
    time.sleep(1.1)  # the elapsed time on the page changes, which must not count
    assert "UNCHANGED" == status_of(tree.call("suds", "getServiceStatus", sid, tokens["alice"]))
    assert "UNCHANGED" == status_of(tree.call("zeep", "getServiceStatus", sid, tokens["alice"]))
    assert tree.call("zeep", "abortService", sid, tokens["alice"]) is True
    after = status_of(tree.call("zeep", "getServiceStatus", sid, tokens["alice"]))
    assert "The job was aborted" in page(after)


def test_progress_changes_the_page(soap, stack, tokens):  # noqa: F811
    """A waiter's progress shows as a changing page with percent, elapsed time and its output."""
    sid = new_sid("progress")
    soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 30)
    stack.wait_state(sid, {"RUNNING"})
    status = stack.attempt_file(sid, "status.txt")
    wait_for(lambda: status.exists() and status.read_text() not in ("", "0"), 10, what="progress")
    one = page(soap.call("zeep", "getServiceStatus", sid, tokens["alice"]).status_base64)
    time.sleep(1.2)
    two = page(soap.call("zeep", "getServiceStatus", sid, tokens["alice"]).status_base64)
    assert one != two
    for p in (one, two):
        assert "Running," in p and "% done" in p and "Elapsed" in p and "Estimated remaining" in p
        assert "waiting 30 s" in p
    assert soap.call("zeep", "abortService", sid, tokens["alice"]) is True


@pytest.mark.parametrize("kind", CLIENTS)
def test_failed_job_shows_a_failure_page_then_faults(kind, stack, tokens):  # noqa: F811
    """A job that exits 3 is shown once as a failure page (reason, exit code, stderr), then every poll raises JobFailedFault."""
    exit_with = Soap(stack.url("ExitWith") + "?wsdl")
    sid = new_sid("fail")
    reply = exit_with.call(kind, "startExitWith", sid, tokens["alice"], stack.extra(), 0, 3)
    assert "<html" in page(status_of(reply))
    stack.wait_state(sid, {"FAILED"})
    failure = page(status_of(exit_with.call(kind, "getServiceStatus", sid, tokens["alice"])))
    assert "The job failed" in failure and "exiting with 3" in failure
    assert "<dt>Exit code</dt><dd>3</dd>" in failure
    for _ in range(2):
        f = exit_with.fault(kind, "getServiceStatus", sid, tokens["alice"])
        assert "JobFailed" in f.code
        assert f.message.startswith(f"job {sid} failed: ") and "exit code 3" in f.message
        assert "exiting with 3" in f.message
    retried = exit_with.call(kind, "startExitWith", sid, tokens["alice"], stack.extra(), 0, 3)
    assert "The job failed" in page(status_of(retried))


def test_retried_start_after_completion_answers_completed(soap, stack, tokens):  # noqa: F811
    """A start call repeated after the job succeeded starts nothing and reports COMPLETED with the result."""
    sid = new_sid("redo")
    soap.call("suds", "startWaiter", sid, tokens["alice"], stack.extra(), 0)
    stack.wait_state(sid, {"SUCCEEDED"})
    again = soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 0)
    assert ("COMPLETED", "FINISHED") == (again.status_base64, again.result)
    assert 1 == stack.state(sid)["attempt"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_other_project_cannot_see_or_touch_a_job(kind, soap, stack, tokens):  # noqa: F811
    """A valid token of another project gets WrongProjectFault on every operation; the owner's project colleague does not."""
    sid = new_sid("mine")
    soap.call(kind, "startWaiter", sid, tokens["alice"], stack.extra(), 30)
    for op, args in (("getServiceStatus", ()), ("abortService", ()), ("notifyService", ("hi",))):
        f = soap.fault(kind, op, sid, tokens["bob"], *args)
        assert "WrongProject" in f.code, op
        assert f"job {sid} belongs to another project" in f.message
    f = soap.fault(kind, "startWaiter", sid, tokens["bob"], stack.extra(), 30)
    assert "WrongProject" in f.code
    assert "<html" in page(soap.call(kind, "getServiceStatus", sid, tokens["dave"]).status_base64)
    assert soap.call(kind, "abortService", sid, tokens["alice"]) is True


def test_queued_page_says_how_many_are_ahead(tmp_path, devauth):  # noqa: F811
    """With one slot, the third job's page says it waits with one job ahead of it."""
    s = make_stack(tmp_path, devauth, MAX_PARALLEL_JOBS="1")
    try:
        client = Soap(s.wsdl)
        token = s.token()
        sids = [new_sid(f"q{i}") for i in range(3)]
        for sid in sids:
            client.call("zeep", "startWaiter", sid, token, s.extra(), 30)
        s.wait_state(sids[0], {"RUNNING"})
        s.wait_state(sids[2], {"QUEUED"})
        wait_for(lambda: json.loads((s.spool / "queue.json").read_text())["queued"] == sids[1:], 30, what="queue")
        queued = page(client.call("suds", "getServiceStatus", sids[2], token).status_base64)
        assert "Waiting for a free slot, 1 ahead" in queued
        assert "<dt>Jobs ahead</dt><dd>1</dd>" in queued
        assert "UNCHANGED" == client.call("suds", "getServiceStatus", sids[2], token).status_base64
        assert client.call("zeep", "abortService", sids[2], token) is True  # QUEUED -> ABORTED
        for sid in sids[:2]:
            assert client.call("zeep", "abortService", sid, token) is True
    finally:
        s.stop()


def test_expired_token_gets_the_reference_fault(tmp_path):
    """Once the token's lifetime is over (and no cached validation is left), every call raises TokenValidationFailedFault."""
    auth = start_devauth(tmp_path / "auth", token_ttl=2)
    s = make_stack(tmp_path / "stack", auth, supervisor=False, AUTH_CACHE_SECONDS="0")
    try:
        client = Soap(s.wsdl)
        token = s.token()
        sid = new_sid("expiry")
        client.call("zeep", "startWaiter", sid, token, s.extra(), 1)
        assert "<html" in page(client.call("suds", "getServiceStatus", sid, token).status_base64)
        time.sleep(2.5)
        for kind in CLIENTS:
            f = client.fault(kind, "getServiceStatus", sid, token)
            assert "Session-token validation failed" == f.message
            assert "unknown or expired" in f.detail
        f = client.fault("zeep", "startWaiter", new_sid(), token, s.extra(), 1)
        assert "Session-token validation failed" == f.message
    finally:
        s.stop()
        auth.stop()


def test_auth_cache_spares_the_auth_manager(tmp_path):
    """Within AUTH_CACHE_SECONDS polls are answered from the cache, even with the authentication manager gone."""
    auth = start_devauth(tmp_path / "auth")
    s = make_stack(tmp_path / "stack", auth, supervisor=False, AUTH_CACHE_SECONDS="60", FACADE_WORKERS="1")
    try:
        client = Soap(s.wsdl)
        token = s.token()
        sid = new_sid("cache")
        client.call("zeep", "startWaiter", sid, token, s.extra(), 1)
        auth.stop()
        for _ in range(5):
            assert "<html" in page(client.call("zeep", "getServiceStatus", sid, token).status_base64)
        f = client.fault("suds", "getServiceStatus", sid, "another-token")
        assert "AuthManagerUnavailable" in f.code
    finally:
        s.stop()
        auth.stop()


def test_logs_are_json_lines_with_the_service_id(stack, soap, tokens):  # noqa: F811
    """The façade prints its WSDL URLs, then logs one JSON object per line with each request's serviceID bound."""
    sid = new_sid("logged")
    soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 0)
    time.sleep(0.3)
    events = []
    for line in stack.facade.output().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    submitted = [e for e in events if e.get("event") == "job_submitted" and e.get("service_id") == sid]
    assert 1 == len(submitted)
    assert ("startWaiter", "alice", "demo") == (submitted[0]["operation"], submitted[0]["username"],
                                                 submitted[0]["project"])
    output = stack.facade.output()
    assert all(line.startswith("{") for line in output.splitlines() if line and not line.startswith("facade: WSDL at"))
    assert f"facade: WSDL at {stack.wsdl}" in output.splitlines()


def test_concurrent_polls_of_one_job_are_consistent(soap, stack, tokens):  # noqa: F811
    """Many simultaneous polls of one job all answer a page or UNCHANGED, never an error."""
    sid = new_sid("hot")
    soap.call("zeep", "startWaiter", sid, tokens["alice"], stack.extra(), 2)
    errors = []

    def poll():
        c = Soap(stack.wsdl)
        for _ in range(10):
            try:
                r = c.call("zeep", "getServiceStatus", sid, tokens["alice"])
                assert r.status_base64 in ("UNCHANGED", "COMPLETED") or "<html" in page(r.status_base64)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    threads = [threading.Thread(target=poll) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [] == errors


QUIET = """\
service = "Quiet"
namespace = "quiet.test"
start_method = "startQuiet"
argv = ["{python}", "-c", "import time; time.sleep(120)"]
[files]
status = "status.txt"
[progress]
file = "status"
[limits]
abort_grace_seconds = 1
"""


def test_jobctl_and_the_status_page_agree_on_odd_progress(tmp_path, devauth):  # noqa: F811
    """A progress file saying NaN or inf is 'unknown' to both readers: no percentage on the page, none in jobctl."""
    defs = tmp_path / "definitions"
    defs.mkdir()
    (defs / "waiter.toml").symlink_to(ROOT / "jobs" / "definitions" / "waiter.toml")  # the façade's readiness check
    (defs / "quiet.toml").write_text(QUIET)
    s = make_stack(tmp_path / "stack", devauth, DEFINITIONS_DIR=str(defs))
    try:
        quiet, token, sid = Soap(s.url("Quiet") + "?wsdl"), s.token(), new_sid("odd")
        quiet.call("zeep", "startQuiet", sid, token, s.extra())
        s.wait_state(sid, {"RUNNING"})
        wait_for(s.attempt_file(sid, "status.txt").parent.is_dir, 10, what="the attempt's work/ (the shim makes it)")
        shown = ""
        for text, percent in (("42", 42.0), ("nan", None), ("inf", None), ("-inf", None), ("250", 100.0)):
            s.attempt_file(sid, "status.txt").write_text(text)
            status = status_of(quiet.call("zeep", "getServiceStatus", sid, token))
            shown = shown if status == "UNCHANGED" else page(status)  # UNCHANGED: the same page as before
            r = subprocess.run([sys.executable, "-m", "jobctl", "list", "--json"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "ENV_FILE": str(s.env_file)})
            row = next(j for j in json.loads(r.stdout) if j["service_id"] == sid)
            on_page = re.search(r'data-progress="(\d+)"', shown)
            assert (text, percent, percent) == (text, row["progress"], on_page and float(on_page[1]))
    finally:
        s.stop()


def test_fast_path_off_answers_the_same_bytes_and_counts_fallbacks(stack, tokens, tmp_path):  # noqa: F811
    """A second façade on the same spool with FACADE_FAST_PATH=false answers polls byte for byte like the
    fast one, and its log counts the polls it handed to spyne."""
    env_off = tmp_path / "env"
    env_off.write_text(re.sub(r"(?m)^FACADE_PORT=.*$", f"FACADE_PORT={free_port()}", stack.env_file.read_text())
                       + "FACADE_FAST_PATH=false\n")
    off = start_facade(env_off, tmp_path / "facade-off.log")
    on_url, off_url = stack.base_url, stack.base_url.replace(f":{stack.config.facade_port}/",
                                                             f":{jobs_config.load(env_off, {}).facade_port}/")
    try:
        done, running_ = new_sid("fp-done"), new_sid("fp-run")
        soap = Soap(stack.wsdl)
        soap.call("zeep", "startWaiter", done, tokens["alice"], stack.extra(), 0)
        soap.call("zeep", "startWaiter", running_, tokens["alice"], stack.extra(), 30)
        stack.wait_state(done, {"SUCCEEDED"})
        stack.wait_state(running_, {"RUNNING"})

        def poll(url: str, sid: str) -> tuple[int, str, bytes]:
            body = soap_envelope(f"<w:getServiceStatus><w:serviceID>{sid}</w:serviceID><w:sessionToken>"
                                 f"{tokens['alice']}</w:sessionToken></w:getServiceStatus>")
            r = requests.post(url, data=body.encode(), timeout=30,
                              headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"getServiceStatus"'})
            return r.status_code, r.headers["Content-Type"], r.content

        assert b"COMPLETED" in poll(on_url, done)[2]
        assert poll(on_url, done) == poll(off_url, done)
        assert b"UNCHANGED" not in poll(on_url, running_)[2]  # a page; the next polls of both say UNCHANGED
        unchanged = poll(off_url, running_)
        assert b"UNCHANGED" in unchanged[2] and unchanged == poll(on_url, running_)
        events = [json.loads(line) for line in off.output().splitlines() if '"fast_path_fallback"' in line]
        assert any(e["reason"] == "off" and e["count"] >= 1 for e in events), events
        assert '"reason": "off"' not in (stack.directory / "facade.log").read_text()
        soap.call("zeep", "abortService", running_, tokens["alice"])
    finally:
        off.stop()

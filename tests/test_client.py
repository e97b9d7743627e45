"""waiter-client as a real subprocess against the real stack: devauth, supervisor and façade."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from lxml import html as lhtml

from client import UNREACHABLE, statuspage
from facade.status_page import PageView, render
from facade_harness import USERS, devauth, new_sid, stack, suds_client  # noqa: F401  (fixtures)
from harness import ROOT, free_port
from jobs.cli import INTERRUPTED


def client(stack, *args: str, token: str | None = None, stdin: str | None = None, timeout: float = 120,
           env_file: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m client ARGS` pointed at the stack (env file for the façade, --auth for devauth)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_TOKEN", "ENV_FILE")}
    if env_file:
        env["ENV_FILE"] = str(stack.env_file)
    if token is not None:
        env["SESSION_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=ROOT, env=env, input=stdin, text=True,
                          capture_output=True, timeout=timeout)


def auth_args(stack) -> list[str]:
    return ["--auth", stack.auth.wsdl]


def test_token_logs_in_and_prints_a_valid_token(stack):
    """`token` prints a session token the authentication manager then validates."""
    password, project = USERS["alice"]
    r = client(stack, "token", "--user", "alice", "--project", project, "--password-stdin", *auth_args(stack),
               stdin=password + "\n")
    assert 0 == r.returncode, r.stderr
    token = r.stdout.strip()
    assert token and "\n" not in token
    assert suds_client(stack.auth.wsdl).service.validateSessionToken(token) is True


def test_token_with_a_wrong_password_says_login_failed(stack):
    """A rejected login is one clear line with the authentication manager's reason, exit 1."""
    r = client(stack, "token", "--user", "alice", "--project", "demo", "--password-stdin", *auth_args(stack),
               stdin="not-the-password\n")
    assert 1 == r.returncode
    assert r.stderr.startswith("waiter-client: login of alice to project demo failed: ")
    assert 1 == len(r.stderr.strip().splitlines())


def test_run_follows_the_job_to_completed_and_prints_the_result(stack):
    """`run` starts a job, polls until COMPLETED and prints the final output result=FINISHED."""
    r = client(stack, "run", "--seconds", "2", "--interval", "0.5", *auth_args(stack), token=stack.token())
    assert 0 == r.returncode, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    sid = lines[0].removeprefix("serviceID: ")
    assert sid.startswith("client-")
    assert "COMPLETED" in lines
    assert "result: FINISHED" == lines[-1]
    assert any(line.startswith("progress: ") for line in lines)
    assert "SUCCEEDED" == stack.state(sid)["state"]


def test_run_logs_in_with_user_and_project(stack):
    """`run --user --project --password-stdin` fetches its own token and uses --id as the serviceID."""
    sid = new_sid("cli")
    password, project = USERS["alice"]
    r = client(stack, "run", "--id", sid, "--seconds", "1", "--interval", "0.3", "--user", "alice",
               "--project", project, "--password-stdin", *auth_args(stack), stdin=password + "\n")
    assert 0 == r.returncode, r.stdout + r.stderr
    assert f"serviceID: {sid}" == r.stdout.splitlines()[0]
    assert "result: FINISHED" in r.stdout


def test_start_status_notify_abort(stack):
    """The single calls: start shows progress, status polls, notify delivers, abort stops the job."""
    token = stack.token()
    sid = new_sid("cli")
    r = client(stack, "start", "--id", sid, "--seconds", "60", *auth_args(stack), token=token)
    assert 0 == r.returncode, r.stderr
    assert f"serviceID: {sid}" in r.stdout and "result: UNSET" in r.stdout
    stack.wait_state(sid, {"RUNNING"})
    s = client(stack, "status", "--id", sid, "--page", token=token)
    assert 0 == s.returncode, s.stderr
    assert "result: UNSET" in s.stdout
    n = client(stack, "notify", "--id", sid, "hello there", token=token)
    assert 0 == n.returncode, n.stderr
    assert "delivered" in n.stdout
    a = client(stack, "abort", "--id", sid, token=token)
    assert 0 == a.returncode, a.stderr
    assert f"aborted {sid}" in a.stdout
    assert "ABORTED" == stack.state(sid)["state"]


def test_status_after_an_abort_says_who_aborted_and_exits_1(stack):
    """Right after abortService the page says ABORTED (in the user's words), exit 1; the next poll is the fault."""
    token = stack.token()
    sid = new_sid("cli")
    assert 0 == client(stack, "start", "--id", sid, "--seconds", "60", *auth_args(stack), token=token).returncode
    stack.wait_state(sid, {"RUNNING"})
    assert 0 == client(stack, "abort", "--id", sid, token=token).returncode
    r = client(stack, "status", "--id", sid, token=token)
    assert 1 == r.returncode, r.stdout + r.stderr
    assert r.stdout.startswith("status: ABORTED: stopped at the user's request (abortService); exit code 143"), r.stdout
    again = client(stack, "status", "--id", sid, token=token)
    assert 1 == again.returncode
    assert f"job {sid} was aborted: stopped at the user's request (abortService)" in again.stderr


def test_run_drives_another_service_and_reports_its_failure(stack):
    """`run --service ExitWith --input ...` types the inputs from the WSDL; a failed job: its reason, exit 1."""
    ok = client(stack, "run", "--service", "ExitWith", "--input", "seconds=0.2", "--input", "code=0",
                "--interval", "0.3", "--json", *auth_args(stack), token=stack.token())
    assert 0 == ok.returncode, ok.stdout + ok.stderr
    assert "COMPLETED" == json.loads(ok.stdout)["status"]
    bad = client(stack, "run", "--service", "ExitWith", "--input", "seconds=0.2", "--input", "code=4",
                 "--interval", "0.3", *auth_args(stack), token=stack.token())
    assert 1 == bad.returncode, bad.stdout + bad.stderr
    assert "FAILED: exit code 4" == bad.stdout.splitlines()[-1]
    sid = bad.stdout.splitlines()[0].removeprefix("serviceID: ")
    assert ("FAILED", {"seconds": 0.2, "code": 4}) == (stack.state(sid)["state"],
                                                      json.loads((stack.spool / "runs" / sid / "spec.json").read_text())["inputs"])


def test_services_are_listed_with_their_typed_inputs(stack):
    """`services` reads the façade's list and each WSDL; a wrong --service or input names what exists."""
    r = client(stack, "services", "--json")
    assert 0 == r.returncode, r.stderr
    listed = {x["service"]: x for x in json.loads(r.stdout)}
    assert {"Waiter", "ExitWith", "Tree"} <= set(listed)
    assert ("startExitWith", {"seconds": "double", "code": "integer"}) == (listed["ExitWith"]["start"],
                                                                         listed["ExitWith"]["inputs"])
    before = stack.spool_entries()
    wrong = client(stack, "start", "--service", "Nope", token=stack.token())
    assert 2 == wrong.returncode and "ExitWith, Tree, Waiter" in wrong.stderr
    typed = client(stack, "start", "--service", "ExitWith", "--input", "code=x", token=stack.token())
    assert 2 == typed.returncode and "input code: 'x' is not an integer" in typed.stderr
    assert before == stack.spool_entries()  # nothing was started


def test_every_command_speaks_json(stack):
    """--json: one JSON value on stdout for token, start, status, notify and abort."""
    password, project = USERS["alice"]
    tok = client(stack, "token", "--json", "--user", "alice", "--project", project, "--password-stdin",
                 *auth_args(stack), stdin=password + "\n")
    token = json.loads(tok.stdout)["token"]
    sid = new_sid("cli")
    start = json.loads(client(stack, "start", "--json", "--id", sid, "--seconds", "60", *auth_args(stack),
                              token=token).stdout)
    assert (sid, "QUEUED", {"result": "UNSET"}) == (start["serviceID"], start["status"], start["outputs"])
    stack.wait_state(sid, {"RUNNING"})
    status = json.loads(client(stack, "status", "--json", "--id", sid, token=token).stdout)
    assert status["status"] in ("RUNNING", "UNCHANGED")
    assert "delivered" in json.loads(client(stack, "notify", "--json", "--id", sid, "hi", token=token).stdout)["response"]
    assert {"serviceID": sid, "aborted": True} == json.loads(client(stack, "abort", "--json", "--id", sid,
                                                                    token=token).stdout)
    ended = client(stack, "status", "--json", "--id", sid, token=token)
    assert (1, "ABORTED") == (ended.returncode, json.loads(ended.stdout)["status"])
    assert "stopped at the user's request (abortService)" == json.loads(ended.stdout)["reason"]


def test_status_of_an_unknown_id_shows_the_fault(stack):
    """A SOAP fault is printed as its faultstring on one line, exit 1, no traceback."""
    r = client(stack, "status", "--id", new_sid("nobody"), token=stack.token())
    assert 1 == r.returncode
    assert r.stderr.startswith("waiter-client: getServiceStatus: SOAP fault: ")
    assert 1 == len(r.stderr.strip().splitlines())
    assert "Traceback" not in r.stderr


def test_a_bad_token_is_refused_with_the_services_message(stack):
    """A token the authentication manager does not know gives the reference fault string."""
    r = client(stack, "start", "--seconds", "1", *auth_args(stack), token="not-a-token")
    assert 1 == r.returncode
    assert "Session-token validation failed (" in r.stderr


def test_connection_refused_says_what_to_do(stack):
    """With nothing listening, the client names the URL and suggests bin/up, exit 3."""
    url = f"http://127.0.0.1:{free_port()}/demo-waiter/Waiter?wsdl"
    r = client(stack, "status", "--id", "x1", "--url", url, token="t", env_file=False)
    assert UNREACHABLE == r.returncode
    assert f"waiter-client: cannot reach the Waiter service at {url}: is it running? (bin/up)\n" == r.stderr


def test_missing_token_is_a_usage_error(stack):
    """Without --token, SESSION_TOKEN or --user/--project the client says how to get a token."""
    r = client(stack, "status", "--id", "x1")
    assert 2 == r.returncode
    assert "no session token" in r.stderr


def test_interrupt_with_abort_on_interrupt_aborts_the_job(stack):
    """Ctrl-C during `run --abort-on-interrupt` aborts the job and exits 130."""
    sid = new_sid("cli")
    env = {k: v for k, v in os.environ.items() if k != "SESSION_TOKEN"}
    env.update(ENV_FILE=str(stack.env_file), SESSION_TOKEN=stack.token())
    p = subprocess.Popen([sys.executable, "-m", "client", "run", "--id", sid, "--seconds", "60", "--interval", "0.3",
                          "--abort-on-interrupt", *auth_args(stack)], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        stack.wait_state(sid, {"RUNNING"})
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert INTERRUPTED == p.returncode, out + err
    assert f"aborted {sid}" in out
    assert "ABORTED" == stack.state(sid)["state"]


def test_a_refused_start_prints_no_service_id(stack):
    """A start the service refuses started no job: stdout stays empty, the fault is the one line on stderr."""
    r = client(stack, "start", "--seconds", "1", *auth_args(stack), token="not-a-token")
    assert (1, "") == (r.returncode, r.stdout)
    assert 1 == len(r.stderr.strip().splitlines())


def test_a_refusal_with_json_is_one_json_object_saying_what_was_refused(stack):
    """--json: a SOAP fault prints one JSON object on stdout naming the operation, fault and serviceID."""
    sid = new_sid("cli")
    r = client(stack, "start", "--json", "--id", sid, "--seconds", "1", *auth_args(stack), token="not-a-token")
    assert 1 == r.returncode
    refused = json.loads(r.stdout)
    assert ("refused", "startWaiter", "TokenValidationFailedFault", sid, 1) == (
        refused["error"], refused["operation"], refused["fault"], refused["serviceID"], refused["exit_code"])
    assert refused["faultstring"].startswith("Session-token validation failed")
    assert r.stderr == f"waiter-client: {refused['message']}\n"


def test_a_job_failure_is_one_line_on_stderr_and_says_its_exit_code_once(stack):
    """After the failure page, the JobFailed fault is one line on stderr (exit code once); --json keeps its output lines."""
    token = stack.token()
    sid = new_sid("cli")
    started = client(stack, "start", "--service", "ExitWith", "--id", sid, "--input", "seconds=0", "--input", "code=2",
                     *auth_args(stack), token=token)
    assert 0 == started.returncode, started.stderr
    stack.wait_state(sid, {"FAILED"})
    page = client(stack, "status", "--service", "ExitWith", "--id", sid, token=token)
    assert (1, "status: FAILED: exit code 2") == (page.returncode, page.stdout.splitlines()[0])
    fault = client(stack, "status", "--service", "ExitWith", "--id", sid, token=token)
    assert (1, "") == (fault.returncode, fault.stdout)
    assert f"waiter-client: getServiceStatus: SOAP fault: job {sid} failed: exit code 2\n" == fault.stderr
    as_json = client(stack, "status", "--json", "--service", "ExitWith", "--id", sid, token=token)
    refused = json.loads(as_json.stdout)
    assert ("JobFailedFault", "FAILED") == (refused["fault"], refused["detail"].get("state"))
    assert refused["faultstring"].endswith("\nexiting with 2")
    assert 1 == len(as_json.stderr.splitlines())


# -- pure parsing ---------------------------------------------------------------------

def test_status_values_are_decoded():
    """COMPLETED and UNCHANGED pass through; anything else is a base64 page with a percentage."""
    import base64
    page = base64.b64encode(b'<div class="bar" data-progress="37"><span>37 %</span></div>').decode()
    assert (statuspage.Status("COMPLETED"), statuspage.Status("UNCHANGED")) == (statuspage.decode_status("COMPLETED"),
                                                                  statuspage.decode_status("UNCHANGED"))
    assert ("PAGE", 37.0) == (statuspage.decode_status(page).kind, statuspage.decode_status(page).percent)


@pytest.mark.parametrize("percent", [0.0, 42.0, 99.0])
def test_progress_is_read_from_the_facades_own_page(percent):
    """The percentage drawn by the client is the one on the façade's status page, not its CSS."""
    html = render(PageView("running", "Waiter", "sid", "Waiting", percent=percent, started_at=1.0), 100.0)
    assert percent == statuspage.page_percent(html)


def test_original_waiters_page_is_understood():
    """The reference waiter's page (a bare NN% in an h1) still yields its percentage."""
    page = '<html><head><title>Waiter status</title></head><body><div style="width: 800px"><h1>28%</h1></div></body>'
    assert 28.0 == statuspage.page_percent(page)



def _reworded(page: str) -> str:
    """The page with every word and class changed (another wording, another look); data-* attributes kept."""
    doc = lhtml.document_fromstring(page)
    for el in doc.iter():
        el.attrib.pop("class", None)
        el.text = "reworded" if el.text and el.tag not in ("style", "title") else el.text
        el.tail = "." if el.tail else el.tail
    return lhtml.tostring(doc, encoding="unicode")


@pytest.mark.parametrize("view", [
    PageView("failed", "Solver", "sid", "The job failed", detail="exit code 3", exit_code=3, started_at=1.0,
             finished_at=5.0, log_title="Last lines of the error output", log_lines=("50% done", "error")),
    PageView("aborted", "Waiter", "sid", "The job was aborted", detail="stopped at the user's request (abortService)",
             exit_code=143, stopped="SIGTERM", started_at=1.0, finished_at=5.0),
    PageView("running", "Waiter", "sid", "Running, 42 % done", percent=42.0, started_at=1.0),
    PageView("running", "Quiet", "sid", "Running", started_at=1.0, log_lines=("75% of the mesh",)),
], ids=["failed", "aborted", "running", "no-percentage"])
def test_a_wording_change_of_the_page_does_not_change_the_reading(view):
    """State, reason, exit code, how it stopped and progress come from the page's data-* attributes, not its words."""
    page = render(view, 10.0)
    before, after = statuspage.decode_status(page), statuspage.decode_status(_reworded(page))
    assert "The job" not in _reworded(page) and "Exit code" not in _reworded(page)
    assert (view.state, view.detail, view.exit_code, view.stopped, view.percent) == (
        after.state, after.reason, after.exit_code, after.stopped, after.percent)
    assert (before.summary(), before.ended) == (after.summary(), after.ended)


def test_failed_page_summary_names_the_exit_code_once():
    """A failure whose reason is its exit code reads "FAILED: exit code 2", not the code twice."""
    view = PageView("failed", "ExitWith", "sid", "The job failed", detail="exit code 2", exit_code=2)
    assert "FAILED: exit code 2" == statuspage.decode_status(render(view, 10.0)).summary()


def test_page_text_puts_each_block_and_fact_on_its_own_line():
    """--page shows the page as lines: headline, reason, "name: value" facts, output; no CSS, entities decoded."""
    view = PageView("failed", "Solver", "sid-1", "The job failed", detail="a < b & \"c\"", exit_code=3,
                    log_title="Last lines of the error output", log_lines=("one", "two"))
    lines = statuspage.page_text(render(view, 10.0)).splitlines()
    assert ["Solver", "Failed", "The job failed", 'a < b & "c"', "Exit code: 3", "Service ID: sid-1",
            "Last lines of the error output", "one", "two"] == lines[:-1]
    assert lines[-1].startswith("Updated ")

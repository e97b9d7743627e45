"""The operator console over HTTP: real devauth, supervisor, façade and console (granian) processes;
and, at the end, rules of its view model checked in this process."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import stat
import time

import psutil
import pytest
import requests
from console_harness import board, console, second_console  # noqa: F401 - fixtures
from facade_harness import Soap, devauth, new_sid  # noqa: F401 - fixture
from harness import start_supervisor, wait_for

from console.access import User
from console.sessions import Sessions
from jobs.proxies import TrustedProxies
from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.states import JobState
from jobs.submit import SubmitError


def submit_as(c, user: str, project: str, seconds: int = 60, sid: str | None = None) -> str:
    """A job dropped into the spool as the façade would, owned by (user, project)."""
    sid = sid or new_sid("c")
    spec = JobSpec(sid, "waiter", {"secondsToWait": seconds}, c.stack.auth.wsdl, {"username": user, "project": project})
    assert c.stack.config and c.stack.spool
    from jobs.spool import Spool
    assert Spool(c.stack.spool).submit(spec.to_json(), sid)
    return sid


def commands(c) -> list[dict]:
    d = c.stack.spool / "commands"
    return [json.loads((d / n).read_text()) for n in sorted(os.listdir(d))]


def test_console_yields_the_cpu_to_the_facade_and_the_supervisor(console):
    """The console and its worker run at CONSOLE_NICE (10 by default); the façade and supervisor at 0."""
    proc = psutil.Process(console.proc.pid)
    assert [p.nice() for p in [proc] + proc.children(recursive=True)] == [10] * (1 + len(proc.children(True)))
    assert proc.children(recursive=True), "granian's worker"
    assert psutil.Process(console.stack.supervisor.pid).nice() == 0


def test_unauthenticated_requests_get_only_the_login_page(console):
    """Pages redirect to the login page; the API and the event streams answer 401."""
    for path in ("/", "/jobs/x-1", "/submit/waiter", "/board"):
        r = requests.get(console.url + path, timeout=30)
        assert r.url.startswith(console.url + "/login") and "password" in r.text, path
    for path in ("/api/jobs", "/api/jobs/x-1", "/api/health", "/events", "/jobs/x-1/events"):
        assert requests.get(console.url + path, timeout=30).status_code == 401, path


def test_session_cookie_is_signed_httponly_and_samesite_lax(console):
    """The session cookie cannot be read by scripts nor sent with another site's requests, but comes along
    when a link on another site is followed (SameSite=Lax); it names a server-side session and does not
    carry the platform session token. The key and the sessions are the console's alone (0600)."""
    s = console.session()
    cookie = next(c for c in s.cookies if c.name == "console_session")
    assert cookie.has_nonstandard_attr("httponly") and cookie.get_nonstandard_attr("samesite").lower() == "lax"
    assert not cookie.secure
    payload = base64.b64decode(cookie.value.strip('"').split(".")[0] + "==")
    token = console.stack.token("alice")
    assert token.split(".")[0] not in payload.decode() and b"token" not in payload
    for name in ("console-secret", "console-secret.sessions.json"):
        assert stat.S_IMODE((console.stack.directory / name).stat().st_mode) == 0o600, name


def test_the_login_page_never_overwrites_a_session(console):
    """A browser that did not send its cookie (another site's request) gets the login page without a new
    session cookie, which would log out every tab; the form's CSRF token lives in a cookie of its own."""
    r = requests.get(console.url + "/login", timeout=30)
    assert r.status_code == 200
    assert [c.name for c in r.cookies] == ["console_login"]


def test_logging_out_revokes_every_copy_of_the_session(console):
    """After logout, a copy of the session cookie made before is refused: the session is revoked on the server."""
    s = console.session()
    copy = requests.Session()
    copy.cookies.update(s.cookies)
    assert copy.get(console.url + "/api/jobs", timeout=30).status_code == 200
    r = s.post(console.url + "/logout", data={"csrf_token": console.csrf(s)}, timeout=30)
    assert r.url == console.url + "/login"
    assert copy.get(console.url + "/api/jobs", timeout=30).status_code == 401
    assert copy.get(console.url + "/", timeout=30).url.startswith(console.url + "/login")


def test_session_cookie_is_secure_behind_https(console):
    """Behind a reverse proxy we trust (FORWARDED_ALLOW_IPS, here 127.0.0.1) that says X-Forwarded-Proto:
    https, the session cookie is marked Secure."""
    s = requests.Session()
    r = s.post(console.url + "/login", data={"username": "alice", "password": "alice-pw-1", "project": "demo",
                                            "csrf_token": console.csrf(s, "/login")},
               headers={"x-forwarded-proto": "https"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    cookie = next(c for c in r.raw.headers.getlist("set-cookie") if c.startswith("console_session="))
    assert "secure" in cookie.lower().split("; ")


def test_https_is_believed_only_from_a_trusted_proxy():
    """The scheme comes from the connection, or from X-Forwarded-Proto when the peer is a trusted proxy."""
    sessions = Sessions(None, "k" * 40, TrustedProxies(["10.0.0.0/8"]))
    forwarded = [(b"x-forwarded-proto", b"https")]
    assert sessions.https({"scheme": "https", "client": ("192.0.2.1", 1), "headers": []})
    assert sessions.https({"scheme": "http", "client": ("10.1.2.3", 1), "headers": forwarded})
    assert not sessions.https({"scheme": "http", "client": ("192.0.2.1", 1), "headers": forwarded})
    assert not sessions.https({"scheme": "http", "client": ("10.1.2.3", 1), "headers": []})


def test_sessions_survive_a_console_restart(console):
    """The server-side sessions are kept in a file: a restart logs nobody out."""
    s = console.session()
    console.restart()
    assert s.get(console.url + "/api/jobs", timeout=30).status_code == 200


def test_login_returns_to_the_page_asked_for_with_its_query(console):
    """A link to a filtered board page goes through the login page and lands on the same URL, query included."""
    s = requests.Session()
    asked = "/?state=QUEUED&job=waiter"
    r = s.get(console.url + asked, timeout=30)
    assert r.url.startswith(console.url + "/login?next=")
    nxt = re.search(r'name="next" value="([^"]+)"', r.text).group(1)
    assert asked == html.unescape(nxt)
    r = s.post(console.url + "/login", data={"username": "alice", "password": "alice-pw-1", "project": "demo",
                                            "next": html.unescape(nxt), "csrf_token": console.csrf(s, "/login")},
               timeout=30)
    assert r.url == console.url + asked


def test_wrong_password_is_refused(console):
    """A wrong password is refused by the authentication manager and logs nobody in."""
    s = requests.Session()
    r = s.post(console.url + "/login", data={"username": "alice", "password": "nope", "project": "demo",
                                            "csrf_token": console.csrf(s, "/login")}, timeout=30)
    assert r.status_code == 401 and "Invalid username or password" in r.text
    assert s.get(console.url + "/api/jobs", timeout=30).status_code == 401


def test_every_post_without_the_csrf_token_is_refused(console):
    """Login, logout, kill, restart and submit refuse a request without the session's CSRF token."""
    sid = submit_as(console, "alice", "demo")
    s = console.session()
    for path, data in (("/jobs/%s/kill" % sid, {}), ("/jobs/%s/restart" % sid, {}),
                       ("/submit/waiter", {"input.secondsToWait": "1"}), ("/logout", {}),
                       ("/jobs/%s/kill" % sid, {"csrf_token": "forged"})):
        r = s.post(console.url + path, data=data, timeout=30, allow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text, path
    fresh = requests.Session()
    r = fresh.post(console.url + "/login", data={"username": "alice", "password": "alice-pw-1", "project": "demo"},
                   timeout=30)
    assert r.status_code == 403
    assert not [c for c in commands(console) if c["service_id"] == sid]
    assert s.get(console.url + "/api/jobs", timeout=30).status_code == 200  # still logged in


def test_a_user_sees_only_their_projects_jobs(console):
    """bob's job is invisible to alice (404 on page, API and actions); the operator sees both."""
    mine, theirs = submit_as(console, "alice", "demo"), submit_as(console, "bob", "other")
    alice = console.session("alice")
    wait_for(lambda: mine in [j["service_id"] for j in alice.get(console.url + "/api/jobs", timeout=30).json()["jobs"]],
             10, what="alice's job on the board")
    listed = [j["service_id"] for j in alice.get(console.url + "/api/jobs?per_page=500", timeout=30).json()["jobs"]]
    assert theirs not in listed
    assert alice.get(f"{console.url}/jobs/{theirs}", timeout=30).status_code == 404
    assert alice.get(f"{console.url}/api/jobs/{theirs}", timeout=30).status_code == 404
    assert alice.get(f"{console.url}/jobs/{theirs}/attempts/1/stdout", timeout=30).status_code == 404
    r = alice.post(f"{console.url}/jobs/{theirs}/kill", data={"csrf_token": console.csrf(alice)}, timeout=30)
    assert r.status_code == 404
    assert not [c for c in commands(console) if c["service_id"] == theirs]
    assert alice.get(f"{console.url}/api/jobs/{mine}", timeout=30).json()["project"] == "demo"

    olga = console.session("olga")
    seen = {j["service_id"]: j for j in olga.get(console.url + "/api/jobs", timeout=30).json()["jobs"]}
    assert {mine, theirs} <= set(seen) and seen[theirs]["username"] == "bob"
    assert olga.get(f"{console.url}/jobs/{theirs}", timeout=30).status_code == 200


def test_submit_validates_inputs_with_the_soap_start_messages(console):
    """The form's errors are the SOAP start's faultstrings; a valid submit drops a spec owned by the user.

    A text the input's XML Schema type refuses (a word, an Arabic-Indic digit)
    never reaches the definition's check over SOAP: the form refuses it the same way.
    """
    s = console.session("dave")
    soap = Soap(console.stack.wsdl)
    token = console.stack.token("dave")

    def refused(value: str) -> str:
        r = s.post(console.url + "/submit/waiter", data={"input.secondsToWait": value, "csrf_token": console.csrf(s)},
                   timeout=30)
        assert r.status_code == 400
        return html.unescape(r.text)
    for value, start in (("-5", "invalid input secondsToWait: must be >="),
                         ("99999999", "invalid input secondsToWait: must be <="),
                         ("99999999999999999999", "invalid input secondsToWait: must be <="),
                         ("\u0663", "invalid request: element 'secondsToWait': '\u0663' is not a valid value"),
                         ("ten", "invalid request: element 'secondsToWait': 'ten' is not a valid value")):
        fault = soap.fault("suds", "startWaiter", new_sid(), token, console.stack.extra(), value)
        assert fault.message.startswith(start) and fault.message in refused(value)
    assert not [sid for sid in os.listdir(console.stack.spool / "incoming")]
    r = s.post(console.url + "/submit/waiter", data={"input.secondsToWait": "1", "service_id": "dave-form-1",
                                                     "csrf_token": console.csrf(s)}, timeout=30)
    assert r.status_code == 200 and r.url.endswith("/jobs/dave-form-1")
    job = s.get(console.url + "/api/jobs/dave-form-1", timeout=30).json()
    assert (job["username"], job["project"], job["inputs"]) == ("dave", "demo", {"secondsToWait": 1})
    console.stack.wait_state("dave-form-1", {"SUCCEEDED"})


def test_kill_and_restart_drop_command_files_and_wait_for_a_stopped_supervisor(console):
    """With the supervisor down, kill is dropped into commands/ and the page says it is queued; it applies later."""
    stack = console.stack
    stack.supervisor.stop()
    stack.supervisor = None
    sid = submit_as(console, "alice", "demo", seconds=30)
    s = console.session()
    wait_for(lambda: s.get(f"{console.url}/api/health", timeout=30).json()["supervisor"] == "down", 10,
             what="health says down")
    r = s.post(f"{console.url}/jobs/{sid}/kill", data={"csrf_token": console.csrf(s)}, timeout=30)
    assert r.status_code == 200 and "kill queued: the supervisor is down" in r.text
    assert [(c["verb"], c["origin"]) for c in commands(console) if c["service_id"] == sid] == [("kill", "console:alice")]
    stack.supervisor = start_supervisor(stack.env_file, stack.directory / "supervisor-2.log")
    stack.wait_state(sid, {"ABORTED"})
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["state"] == "ABORTED", 10,
             what="console shows ABORTED")
    r = s.post(f"{console.url}/jobs/{sid}/restart", data={"csrf_token": console.csrf(s)}, timeout=30)
    assert "restart requested; waiting for the supervisor" in r.text
    assert [c["verb"] for c in commands(console) if c["service_id"] == sid] in (["restart"], [])
    stack.wait_state(sid, {"RUNNING"})
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["state"] == "RUNNING", 10,
             what="console shows the restarted job running")


def test_commands_are_offered_and_accepted_only_where_the_supervisor_applies_them(console):
    """A finished job offers restart, not kill, and a kill sent anyway is refused with the reason (the
    supervisor would ignore it, and the page would wait for it forever); nothing reaches commands/."""
    sid = submit_as(console, "alice", "demo", seconds=1)
    console.stack.wait_state(sid, {"SUCCEEDED"})
    s = console.session()
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["state"] == "SUCCEEDED", 10,
             what="console sees the end")
    page = s.get(f"{console.url}/jobs/{sid}", timeout=30).text
    assert 'id="restart"' in page and 'id="kill"' not in page
    r = s.post(f"{console.url}/jobs/{sid}/kill", data={"csrf_token": console.csrf(s)}, timeout=30)
    assert r.status_code == 409
    assert f"kill refused: job {sid} is SUCCEEDED; kill applies only to a SUBMITTED or QUEUED or RUNNING job" \
        == r.text.strip()
    assert not [c for c in commands(console) if c["service_id"] == sid]


def test_a_succeeded_jobs_page_shows_its_outputs(console):
    """The outputs the SOAP status call returns with COMPLETED are on the job's page once it succeeded."""
    sid = submit_as(console, "alice", "demo", seconds=1)
    console.stack.wait_state(sid, {"SUCCEEDED"})
    s = console.session()
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["state"] == "SUCCEEDED", 10,
             what="console sees the end")
    assert [{"name": "result", "value": "FINISHED"}] == s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["outputs"]
    page = s.get(f"{console.url}/jobs/{sid}", timeout=30).text
    assert re.search(r"<h2>Outputs</h2>.*<td>result</td><td><pre>FINISHED</pre>", page, re.S)


def test_a_job_page_follows_the_log_by_short_requests(console):
    """/jobs/<id>/output answers the new lines from the offsets asked for, and the offsets to ask next."""
    sid = submit_as(console, "alice", "demo", seconds=3)
    s = console.session()
    wait_for(lambda: "waiting 3 s" in s.get(f"{console.url}/jobs/{sid}/output", timeout=30).text, 20,
             what="the log's first line")
    first = s.get(f"{console.url}/jobs/{sid}/output", timeout=30).json()
    again = s.get(f"{console.url}/jobs/{sid}/output", params={"attempt": first["attempt"], **first["offsets"]},
                  timeout=30).json()
    assert "waiting 3 s" not in "".join(c["text"] for c in again["chunks"])
    assert again["offsets"]["stdout"] >= first["offsets"]["stdout"] > 0
    assert console.session("bob").get(f"{console.url}/jobs/{sid}/output", timeout=30).status_code == 404


def test_metrics_need_an_operator_or_the_scrapers_bearer_token(second_console):
    """/metrics counts every project's jobs (the spool's series are the console's alone): refused to nobody logged
    in (401) and to a user (403); an operator and a scraper with CONSOLE_METRICS_TOKEN_FILE's token read it. The
    façade's open /metrics has none of them. /healthz stays open."""
    c = second_console
    sid = submit_as(c, "alice", "demo", seconds=0)
    url = c.url + "/metrics"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert c.session("alice").get(url, timeout=30).status_code == 403
    r = c.session("olga").get(url, timeout=30)
    assert r.status_code == 200 and "spoolsoap_queue_length" in r.text
    c.stack.wait_state(sid, {"SUCCEEDED"})
    r = requests.get(url, headers={"authorization": f"Bearer {c.metrics_token}"}, timeout=30)
    assert r.status_code == 200
    for series in ("spoolsoap_queue_length", 'spoolsoap_usage_jobs_total{job="waiter",project="demo"}',
                   'spoolsoap_console_spool_writes_refused_total{errno="ENOSPC"} 0.0', "spoolsoap_build_info"):
        assert series in r.text, series
    facade = requests.get(f"http://127.0.0.1:{c.stack.config.facade_port}/metrics", timeout=30).text
    assert "spoolsoap_facade_request_duration_seconds" in facade
    assert "spoolsoap_queue_length" not in facade and "spoolsoap_usage_" not in facade
    assert requests.get(c.url + "/healthz", timeout=30).status_code == 200


def test_event_stream_resumes_from_last_event_id(console):
    """A reconnecting client gets what changed since its Last-Event-ID, and a snapshot without one."""
    s = console.session()
    seq = s.get(console.url + "/api/jobs", timeout=30).json()["seq"]
    sid = submit_as(console, "alice", "demo", seconds=1)
    console.stack.wait_state(sid, {"SUCCEEDED"})
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{sid}", timeout=30).json()["state"] == "SUCCEEDED", 10,
             what="console sees the end")
    with s.get(console.url + "/events", headers={"Last-Event-ID": str(seq)}, stream=True, timeout=30) as r:
        events = _read_events(r, lambda evs: any(e.get("event") == "jobs" and any(
            j["service_id"] == sid and j["state"] == "SUCCEEDED" for j in json.loads(e["data"])) for e in evs))
    assert all(int(e["id"]) > seq for e in events if e.get("event") == "jobs")
    with s.get(console.url + "/events", stream=True, timeout=30) as r:
        first = _read_events(r, lambda evs: len(evs) >= 1)[0]
    assert first["event"] == "snapshot" and sid in [j["service_id"] for j in json.loads(first["data"])["jobs"]]


def test_event_stream_sends_a_moving_percentage_as_a_small_map_and_only_to_who_may_see_it(console):
    """With every running job reporting each second, most changes are a new percentage: a `progress`
    event {serviceID: percent}, not whole rows; alice's stream and the operator's are made apart."""
    mine, theirs = submit_as(console, "alice", "demo", seconds=30), submit_as(console, "bob", "other", seconds=30)
    seen: dict[str, dict[str, list]] = {}
    for user in ("alice", "olga"):
        s = console.session(user)
        seq = s.get(console.url + "/api/jobs", timeout=30).json()["seq"]
        with s.get(console.url + "/events", headers={"Last-Event-ID": str(seq)}, stream=True, timeout=30) as r:
            events = _read_events(r, lambda evs: sum(1 for e in evs if e.get("event") == "progress"
                                                     and mine in json.loads(e["data"])) >= 2)
        progress = [json.loads(e["data"]) for e in events if e.get("event") == "progress"]
        rows = [j for e in events if e.get("event") == "jobs" for j in json.loads(e["data"])]
        seen[user] = {"moved": [sid for p in progress for sid in p], "rows": [j["service_id"] for j in rows]}
        assert all(isinstance(v, float) and 0 <= v <= 100 for p in progress for v in p.values() if v is not None)
        assert len({p[mine] for p in progress if mine in p}) >= 2  # it moved, and each step was sent
        ids = [int(e["id"]) for e in events if "id" in e]
        assert ids == sorted(ids) and all(i > seq for i in ids)
        assert all("id" in e for e in events if e.get("event") == "jobs")  # a batch's last event carries the id
    assert theirs not in seen["alice"]["moved"] + seen["alice"]["rows"]
    s = console.session("olga")
    wait_for(lambda: s.get(f"{console.url}/api/jobs/{theirs}", timeout=30).json()["progress"] is not None, 20,
             what="bob's job reports progress")
    assert mine in seen["olga"]["moved"]


def test_an_open_event_stream_is_counted_until_it_closes(console):
    """While a stream is open the index is refreshed every 0.25 s, else every 2 s: the count must come back
    down when a browser goes away, or the console would never go idle again."""
    s = console.session("olga")

    def streams():
        return s.get(console.url + "/api/health", timeout=30).json()["event_streams"]
    wait_for(lambda: streams() == 0, 10, what="no stream open")
    with s.get(console.url + "/events", stream=True, timeout=30) as r, \
            s.get(console.url + "/events", stream=True, timeout=30) as r2:
        _read_events(r, lambda evs: len(evs) >= 1)
        _read_events(r2, lambda evs: len(evs) >= 1)
        wait_for(lambda: streams() == 2, 10, what="two streams counted")
    wait_for(lambda: streams() == 0, 20, what="closed streams no longer counted")


def _read_events(response, enough, limit: int = 500, seconds: float = 30) -> list[dict]:
    events, current = [], {}
    deadline = time.monotonic() + seconds
    for line in response.iter_lines(decode_unicode=True):
        assert time.monotonic() < deadline, f"not enough after {seconds} s: {events[-5:]}"
        if line == "":
            if current:
                events.append(current)
                if enough(events):
                    return events
            current = {}
            limit -= 1
            assert limit, events
        elif ":" in line and not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.lstrip(" ")
    raise AssertionError(f"stream ended: {events}")


# -- the view model in this process ----------------------------------------------------

DAVE = User("dave", "demo", (), False)


def form_refusal(board, value: str) -> str:
    """The form's answer to secondsToWait=value, which must be a refusal that drops nothing."""
    with pytest.raises(SubmitError) as refused:
        board.submit(DAVE, board.definitions["waiter"], {"input.secondsToWait": value})
    assert [] == os.listdir(board.spool.incoming)
    return refused.value.message


def test_form_refuses_an_arabic_indic_digit_as_the_soap_start_does(board):
    """'٣' is no xs:integer, so the SOAP start refuses it before any rule of the job: the form too, in its words."""
    expected = "invalid request: element 'secondsToWait': '\u0663' is not a valid value of the atomic type 'xs:integer'."
    assert expected == form_refusal(board, "\u0663")


def test_form_gives_a_too_large_integer_the_range_message(board):
    """An integer of 20 digits is an integer: the form names the input's range, as the SOAP start does."""
    expected = "invalid input secondsToWait: must be <= 86400, got 99999999999999999999"
    assert expected == form_refusal(board, "99999999999999999999")


def test_form_submits_what_passes_and_refuses_a_known_service_id(board):
    """A valid form drops one spec owned by the user; the same serviceID again is refused, not a retry."""
    d = board.definitions["waiter"]
    assert "dave-1" == board.submit(DAVE, d, {"service_id": " dave-1 ", "input.secondsToWait": "7"})
    spec = json.loads((board.spool.incoming / "dave-1.json").read_text())
    assert ({"secondsToWait": 7}, {"username": "dave", "project": "demo"}) == (spec["inputs"], spec["owner"])
    with pytest.raises(SubmitError, match="serviceID 'dave-1' is already taken"):
        board.submit(DAVE, d, {"service_id": "dave-1", "input.secondsToWait": ""})
    assert ["dave-1.json"] == os.listdir(board.spool.incoming)


def place_run(board, rs: RunState, project: str) -> None:
    """A run as the supervisor leaves it: the spec claimed into runs/<id>/ and its state.json."""
    run = board.spool.run_dir(rs.service_id)
    (run / "attempts" / str(rs.attempt)).mkdir(parents=True)
    spec = JobSpec(rs.service_id, rs.job, {"secondsToWait": 5}, None, {"username": "u", "project": project})
    (run / "spec.json").write_bytes(spec.to_json())
    (run / "state.json").write_bytes(rs.to_json())
    board.index.refresh()


def test_a_live_update_of_the_board_keeps_its_page(board):
    """The board's query, which its live updates refetch with, names the page shown (page 1 needs none)."""
    for i in range(3):
        place_run(board, RunState(f"q-{i}", "waiter"), "demo")
    assert {"page": 2, "per_page": 2} == board.board(DAVE, {"page": "2", "per_page": "2"})["query"]
    assert {"per_page": 2} == board.board(DAVE, {"per_page": "2"})["query"]
    assert ["q-0"] == [j["service_id"] for j in board.board(DAVE, {"page": "2", "per_page": "2"})["jobs"]]


def test_the_header_counts_only_the_queued_jobs_a_user_may_see(board):
    """alice's header: her project's queue; an operator's: every project's."""
    for sid, project in (("a-1", "demo"), ("b-1", "other"), ("b-2", "other")):
        place_run(board, RunState(sid, "waiter"), project)
    board.refresh()
    assert (1, 3) == (board.health(DAVE)["queue_length"], board.health(User("olga", "ops", (), True))["queue_length"])


def test_a_crash_by_a_signal_reads_crashed_and_a_stop_reads_stopped(board):
    """SIGSEGV the supervisor did not send is a crash; SIGTERM of a kill is a stop."""
    rs = RunState("seg-1", "waiter", JobState.FAILED, "killed by SIGSEGV", attempt=2, signal=11, exit_code=None)
    rs.history = [Attempt(1, 1.0, 2.0, None, 15, "aborted by console:olga (stopped by SIGTERM)"),
                  Attempt(2, 3.0, 4.0, None, 11, "killed by SIGSEGV")]
    place_run(board, rs, "demo")
    d = board.detail(board.visible(DAVE, "seg-1"))
    assert ["stopped by SIGTERM", "crashed (SIGSEGV, segmentation fault)"] == [a["stopped"] for a in d["attempt_history"]]
    rs = RunState("seg-2", "waiter", JobState.FAILED, "killed by SIGSEGV", signal=11, exit_code=None)
    place_run(board, rs, "demo")
    assert ["crashed (SIGSEGV, segmentation fault)"] == [
        a["stopped"] for a in board.detail(board.visible(DAVE, "seg-2"))["attempt_history"]]


def test_only_a_running_job_without_a_percentage_shows_the_busy_bar(board):
    """A queued job's bar is empty, not the animated "busy" bar of a job that runs without a percentage."""
    place_run(board, RunState("wait-1", "waiter"), "demo")
    place_run(board, RunState("run-1", "waiter", JobState.RUNNING, "running", started_at=time.time()), "demo")
    html_text = board.templates.get_template("_board.html").render(**board.board(DAVE, {}), history=[])
    bars = dict(re.findall(r'<tr data-sid="([^"]+)".*?<progress max="100" ?([^>]*)>', html_text, re.S))
    assert {"wait-1": 'value="0"', "run-1": ""} == bars


def test_commands_apply_to_the_states_the_supervisor_acts_in(board):
    """kill: a job not finished (not STOPPING); restart: a running or finished one."""
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.STOPPING, JobState.SUCCEEDED, JobState.ABORTED):
        place_run(board, RunState(f"s-{state.value.lower()}", "waiter", state, ""), "demo")
    offered = {sid: board.detail(board.visible(DAVE, sid))["commands"] for sid in
               ("s-queued", "s-running", "s-stopping", "s-succeeded", "s-aborted")}
    assert {"s-queued": ["kill"], "s-running": ["kill", "restart"], "s-stopping": [], "s-succeeded": ["restart"],
            "s-aborted": ["restart"]} == offered

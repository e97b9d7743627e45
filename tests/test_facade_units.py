"""The façade's parts without processes: extraParameters, the token cache, the guard, the spool reads, the answers.

Why: these are the rules the end-to-end tests can only sample (which poll is
UNCHANGED, when a failure becomes a fault, what the cache remembers), checked
here directly and fast, with state.json files written by hand.
"""
from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import types
from pathlib import Path

import clfpy
import pytest
import suds

from facade import jobview
from facade.auth import Authenticator, AuthManagers, ExtraParameters, Identity, parse_extra_parameters
from facade.errors import (AuthManagerUnavailable, FacadeError, InvalidRequest, JobFailed, JobNotActive,
                           TokenValidationFailed, UnknownServiceID, WrongProject)
from facade.guard import RequestGuard
from facade.operations import COMPLETED, UNCHANGED, Operations
from harness import ROOT
from jobs.authclient import AuthManagerClient, AuthUnavailable
from jobs.definitions import load_definitions
from jobs.wait import wait_for
from jobs.errors import ConfigError
from jobs.progress import read_percent
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.states import JobState

AUTH = "http://auth.example/authManager/AuthManager?wsdl"
ALLOWED = AuthManagers([AUTH, "http://other/auth?wsdl"])
DEFS = load_definitions(ROOT / "jobs" / "definitions")
WAITER = DEFS["waiter"]


# -- extraParameters ------------------------------------------------------------------

def test_values_may_contain_equals_signs():
    """Each pair splits on its first '=' only, unlike clfpy's own parser."""
    raw = "gss=http://g/x?wsdl=1&a=b,auth=http://a/AuthManager?wsdl=1,"
    assert {"gss": "http://g/x?wsdl=1&a=b", "auth": "http://a/AuthManager?wsdl=1"} == parse_extra_parameters(raw)
    assert "http://a/AuthManager?wsdl" == clfpy.ExtraParameters(raw).get_auth_WSDL_URL()  # clfpy cuts it
    assert "http://g/x?wsdl=1&a=b" == ExtraParameters(raw).get_GSS_WSDL_URL()


def test_trailing_comma_is_optional_and_blanks_are_ignored():
    """The WFM's trailing comma, a missing one, and spaces around pairs all parse the same."""
    expected = {"auth": AUTH, "WFM": "http://w"}
    for raw in (f"auth={AUTH},WFM=http://w,", f"auth={AUTH},WFM=http://w", f" auth={AUTH} , ,WFM=http://w ,"):
        assert expected == parse_extra_parameters(raw)


@pytest.mark.parametrize("raw,message", [
    (None, "extraParameters: missing"), ("", "extraParameters: missing"), ("  ", "extraParameters: missing"),
    ("auth", "malformed entry 'auth'"), ("=x,", "malformed entry '=x'"),
    ("gss=http://g,", "no 'auth=' entry"), ("auth=,", "is not an http(s) URL"),
    ("auth=javascript:alert(1),", "is not an http(s) URL"), ("x" * 20000, "longer than 16384"),
])
def test_bad_extra_parameters_name_the_problem(raw, message):
    """Every way extraParameters can be wrong has its own message."""
    with pytest.raises(InvalidRequest) as e:
        ExtraParameters(raw).auth_url()
    assert message in e.value.message


# -- the authenticator ------------------------------------------------------------------

class FakeAuthClient(AuthManagerClient):
    """The real client with a WSDL that needs no server: clfpy's calls answer from a dict, counted."""

    def __init__(self, tokens: dict, calls: list):
        super().__init__("http://unused/auth?wsdl", 1)
        self.tokens, self.calls = tokens, calls

    def _connect(self):
        pass

    def call(self, step, method, *args):
        self.calls.append(step)
        return super().call(step, method, *args)

    def validate_session_token(self, token):
        answer = self.tokens.get(token, False)
        return answer if not isinstance(answer, tuple) else True

    def get_project(self, token):
        return self.tokens[token][1]

    def get_username(self, token):
        return self.tokens[token][0]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_auth(tokens: dict, cache_seconds: float = 30, built: list | None = None, keep_warm_seconds: float = 0):
    """An Authenticator on a clock the test moves; by default it keeps no idle token warm (a test of that says so),
    so that the refresh thread's sweeps, on real time, never change a count a test makes."""
    calls, clock = [], Clock()
    built = built if built is not None else []

    def factory(url, timeout):
        built.append(url)
        return FakeAuthClient(tokens, calls)
    return Authenticator(ALLOWED, timeout=1, cache_seconds=cache_seconds, clock=clock, client_factory=factory,
                         keep_warm_seconds=keep_warm_seconds), calls, clock


def test_valid_tokens_are_cached_for_auth_cache_seconds():
    """A second validation within the cache period asks nobody; after it, the manager is asked again."""
    auth, calls, clock = make_auth({"t": ("alice", "demo")})
    assert Identity("alice", "demo") == auth.identify("t", AUTH)
    assert ["validateSessionToken", "getProject", "getUsername"] == calls
    clock.now += 20  # not yet in the last quarter (see the next test)
    auth.identify("t", AUTH)
    assert 3 == len(calls)
    clock.now += 11
    auth.identify("t", AUTH)
    assert 6 == len(calls)


def test_a_token_in_use_is_validated_again_in_the_background_before_it_runs_out():
    """In the last quarter of its cached validation a poll answers from the cache and the refresh thread asks
    the manager once; the poll after the old expiry asks nobody. A token refused meanwhile is dropped at once."""
    tokens = {"t": ("alice", "demo")}
    auth, calls, clock = make_auth(tokens)
    auth.identify("t", AUTH)
    clock.now += 25
    for _ in range(5):  # many polls in the window: one refresh
        assert Identity("alice", "demo") == auth.identify("t", AUTH)
    wait_for(lambda: len(calls) == 6 and not auth._refreshing, 5, 0.01, "the background refresh")
    assert 6 == len(calls)
    clock.now += 10  # 35 s after the first validation, 10 after the refresh
    assert Identity("alice", "demo") == auth.identify("t", AUTH)
    assert 6 == len(calls)
    del tokens["t"]  # revoked
    clock.now += 15  # in the last quarter of the refreshed validation: refreshed, refused, dropped
    auth.identify("t", AUTH)
    wait_for(lambda: len(calls) == 7 and not auth._refreshing, 5, 0.01, "the background refresh")
    with pytest.raises(TokenValidationFailed):
        auth.identify("t", AUTH)


def test_a_token_used_recently_is_kept_validated_through_an_idle_spell():
    """No poll for a while: the refresh thread still validates a recently used token in the last quarter of its
    cached validation, until KEEP_WARM_FACTOR x AUTH_CACHE_SECONDS after its last use; then it runs out."""
    tokens = {"t": ("alice", "demo")}
    auth, calls, clock = make_auth(tokens, keep_warm_seconds=120)
    auth.identify("t", AUTH)  # used at 1000, valid until 1030
    clock.now += 20
    with auth._lock:
        assert ([], 2.5) == auth.due(clock.now)  # not in its last quarter yet: due in 2.5 s
    for step in range(4):  # 1023, 1046, 1069, 1092 (last used at 1000): refreshed each time, no poll
        clock.now += 3 if step == 0 else 23
        wait_for(lambda: len(calls) == 3 * (step + 2) and not auth._refreshing, 5, 0.01, "the sweep's refresh")
    clock.now += 30  # 1122: its validation of 1092 runs out at 1122, its last use was 122 s ago
    time.sleep(1.5)  # a sweep or more (SWEEP_MAX_SECONDS)
    assert 15 == len(calls) and not auth._used
    auth.identify("t", AUTH)  # used again: asked at once, then kept warm again
    assert 18 == len(calls)
    del tokens["t"]  # revoked while idle: the next sweep's refusal drops it
    clock.now += 23
    wait_for(lambda: len(calls) == 19 and not auth._refreshing, 5, 0.01, "the sweep's refresh")
    with pytest.raises(TokenValidationFailed):
        auth.identify("t", AUTH)


class GatedAuthClient(FakeAuthClient):
    """A manager that answers only once `gate` is set; `entered` says a validation has begun."""

    def __init__(self, tokens: dict, calls: list, gate: threading.Event, entered: threading.Event,
                 outage: bool = False):
        super().__init__(tokens, calls)
        self.gate, self.entered, self.outage = gate, entered, outage

    def validate_session_token(self, token):
        self.entered.set()
        self.gate.wait(10)
        if self.outage:
            raise OSError("connection reset")
        return super().validate_session_token(token)


def concurrent_misses(tokens: dict, outage: bool = False, timeout: float = 1, hold: float = 0.3):
    """Five requests that miss the cache for one token together; what each got, and the manager's calls."""
    calls, gate, entered = [], threading.Event(), threading.Event()
    auth = Authenticator(ALLOWED, timeout=timeout, cache_seconds=30, clock=Clock(),
                         client_factory=lambda url, t: GatedAuthClient(tokens, calls, gate, entered, outage))
    results: list = []

    def one():
        try:
            results.append(auth.identify("t", AUTH))
        except FacadeError as e:
            results.append(e)
    threads = [threading.Thread(target=one) for _ in range(5)]
    threads[0].start()
    assert entered.wait(5)
    for t in threads[1:]:
        t.start()
    time.sleep(hold)  # the others reach the cache miss while the first one's validation is under way
    gate.set()
    for t in threads:
        t.join(10)
    return results, calls


def test_requests_that_miss_the_cache_together_ask_the_manager_once():
    """After a token's idle spell, the polls that arrive during its validation wait for it (no herd)."""
    results, calls = concurrent_misses({"t": ("alice", "demo")})
    assert [Identity("alice", "demo")] * 5 == results
    assert ["validateSessionToken", "getProject", "getUsername"] == calls


def test_a_refusal_or_an_outage_is_every_waiting_requests_answer():
    """The one validation's refusal is each request's typed fault; so is an outage, in words."""
    results, calls = concurrent_misses({})
    assert ["validateSessionToken"] == calls
    assert all(isinstance(r, TokenValidationFailed) and r.detail == {"reason": "the token is unknown or expired"}
               for r in results), results
    results, calls = concurrent_misses({"t": ("alice", "demo")}, outage=True)
    assert 5 == len(results) and all(isinstance(r, AuthManagerUnavailable) for r in results), results
    assert 1 == len({r.message for r in results}) and "unavailable: http://unused/auth?wsdl" in results[0].message


def test_a_request_waits_for_another_validation_of_its_token_for_a_bounded_time():
    """A manager slower than FOLLOW_FACTOR x AUTH_TIMEOUT: the waiting requests fail clearly, not hang."""
    results, calls = concurrent_misses({"t": ("alice", "demo")}, timeout=0.05, hold=1.0)
    waited = [r for r in results if isinstance(r, AuthManagerUnavailable)]
    assert 4 == len(waited) and all("did not end in 0.2 s" in r.message for r in waited), results
    assert Identity("alice", "demo") in results  # the one that asked got its answer


def test_cache_is_per_token_and_auth_url():
    """The same token checked against another authentication manager is validated there."""
    built = []
    auth, calls, _ = make_auth({"t": ("alice", "demo")}, built=built)
    auth.identify("t", AUTH)
    auth.identify("t", "http://other/auth?wsdl")
    auth.identify("t", AUTH)
    assert 6 == len(calls)
    assert [AUTH, "http://other/auth?wsdl"] == built  # one client per URL


def test_invalid_tokens_are_never_cached():
    """A rejected token is asked about every time (it may become valid by a new login? no: but never trust a miss)."""
    auth, calls, _ = make_auth({})
    for _ in range(2):
        with pytest.raises(TokenValidationFailed) as e:
            auth.identify("nope", AUTH)
        assert "Session-token validation failed" == e.value.message
        assert {"reason": "the token is unknown or expired"} == e.value.detail
    assert ["validateSessionToken"] * 2 == calls


def test_zero_cache_seconds_disables_the_cache():
    """AUTH_CACHE_SECONDS=0 validates on every call."""
    auth, calls, _ = make_auth({"t": ("a", "p")}, cache_seconds=0)
    auth.identify("t", AUTH)
    auth.identify("t", AUTH)
    assert 6 == len(calls)


@pytest.mark.parametrize("answer", ["true", 1, None, "True"])
def test_only_a_real_true_validates(answer):
    """clfpy hands back whatever suds returned; anything but True is a failed validation."""
    auth, _, _ = make_auth({"t": answer})
    with pytest.raises(TokenValidationFailed):
        auth.identify("t", AUTH)


def test_a_returned_webfault_is_a_failed_validation():
    """clfpy returns (not raises) a suds WebFault; its faultstring goes into the fault's detail."""
    fault = suds.WebFault(types.SimpleNamespace(faultstring="token malformed"), None)
    auth, _, _ = make_auth({"t": fault})
    auth._clients[AUTH] = FakeAuthClient({}, [])
    auth._clients[AUTH].validate_session_token = lambda token: fault
    with pytest.raises(TokenValidationFailed) as e:
        auth.identify("t", AUTH)
    assert "token malformed" in e.value.detail["reason"]


def test_unavailable_auth_manager_is_not_cached():
    """A failure to reach the manager is retried on the next call, not remembered."""
    attempts = []

    def factory(url, timeout):
        attempts.append(url)
        raise AuthUnavailable(url, "could not be reached", "loading its WSDL")
    auth = Authenticator(ALLOWED, timeout=1, cache_seconds=30, client_factory=factory)
    for _ in range(2):
        with pytest.raises(AuthManagerUnavailable):
            auth.identify("t", AUTH)
    assert 2 == len(attempts)


def test_real_client_to_a_closed_port_fails_fast():
    """AuthManagerClient (clfpy's AuthClient with a timeout) turns a refused connection into AuthManagerUnavailable."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/auth?wsdl"
    auth = Authenticator(AuthManagers([url]), timeout=2, cache_seconds=30)
    began = time.monotonic()
    with pytest.raises(AuthManagerUnavailable) as e:
        auth.identify("t", url)
    assert time.monotonic() - began < 2
    assert f"{url} could not be reached (loading its WSDL)" in e.value.message



ENTRIES = ["http://auth.example/am", "https://sso.example:8443/x/AuthManager?wsdl", "http://[::1]:8081/"]


@pytest.mark.parametrize("url", [
    "http://auth.example/am", "http://auth.example/am/", "http://auth.example/am/AuthManager?wsdl",
    "HTTP://AUTH.example:80/am/AuthManager?wsdl", "https://sso.example:8443/x/AuthManager?wsdl",
    "http://[::1]:8081/authManager/AuthManager?wsdl",
])
def test_allow_list_admits_its_urls_and_what_is_below_a_prefix(url):
    assert AuthManagers(ENTRIES).allows(url)


@pytest.mark.parametrize("url", [
    "http://auth.example/amx", "http://auth.example/", "http://auth.example.evil.com/am",
    "http://auth.example@evil/am", "http://evil@auth.example/am", "http://auth.example:81/am",
    "https://auth.example/am", "http://auth.example/am/../admin", "http://auth.example/am/%2e%2e/admin",
    "http://auth.example/am%2F..%2Fadmin", "http://auth.example/am\\..\\admin", "http://auth.example/am#x",
    "http://evil#@auth.example/am", "http://auth.example/am/x y",
    "https://sso.example:8443/x/AuthManager", "https://sso.example:8443/x/AuthManager?wsdl&x=1",
    "https://sso.example/x/AuthManager?wsdl", "http://[::1]:8082/", "ftp://auth.example/am", "http://auth.example:x/am",
    "http://auth.example:0/am",
])
def test_allow_list_refuses_lookalikes(url):
    """Other hosts, ports, schemes, userinfo, paths past the boundary or dressed up with dot segments."""
    allowed = AuthManagers(ENTRIES)
    assert not allowed.allows(url)
    with pytest.raises(InvalidRequest) as e:
        allowed.check(url)
    assert "is not an allowed authentication manager" in e.value.message


def test_a_refused_auth_manager_is_never_asked():
    """identify() checks the allow-list before the cache and before building a client."""
    built = []
    auth, calls, _ = make_auth({"t": ("alice", "demo")}, built=built)
    with pytest.raises(InvalidRequest):
        auth.identify("t", "http://169.254.169.254/latest/meta-data/")
    assert [] == built and [] == calls


@pytest.mark.parametrize("entries", [[], ["http://me:pw@auth.example/"], ["file:///etc"], ["http://a/x/../y"]])
def test_allow_list_refuses_empty_or_bad_configuration(entries):
    with pytest.raises(ConfigError, match="AUTH_MANAGERS"):
        AuthManagers(entries)

@pytest.mark.parametrize("token", [None, "", "   ", "x" * 5000])
def test_missing_or_absurd_tokens_never_reach_the_manager(token):
    """An empty or oversized token fails at once."""
    auth, calls, _ = make_auth({})
    with pytest.raises(TokenValidationFailed):
        auth.identify(token, AUTH)
    assert [] == calls


# -- the guard ---------------------------------------------------------------------

def run_guard(body: bytes, limit: int = 4096, **environ):
    seen = {}

    def inner(env, start_response):
        seen["body"] = env["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"ok"]
    status = {}
    env = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
           "CONTENT_TYPE": "text/xml", **environ}
    out = b"".join(RequestGuard(inner, limit)(env, lambda s, h: status.setdefault("s", s)))
    return status["s"], out, seen.get("body")


def test_guard_replays_an_accepted_body_unchanged():
    """A harmless body (with a UTF-8 byte-order mark) reaches the application byte for byte."""
    body = "\ufeff<?xml version='1.0' encoding='utf-8'?><a>é</a>".encode("utf-8")
    assert ("200 OK", b"ok", body) == run_guard(body)


def test_guard_lets_get_through_untouched():
    """GET (the WSDL) is not inspected."""
    status, out, _ = run_guard(b"", REQUEST_METHOD="GET")
    assert ("200 OK", b"ok") == (status, out)


@pytest.mark.parametrize("body,environ,status,text", [
    (b"<a/>", {"CONTENT_LENGTH": "abc"}, "400 Bad Request", "invalid Content-Length"),
    (b"<a/>" * 2000, {}, "413 Request Entity Too Large", "larger than 4096 bytes"),
    (b"<a/>" * 2000, {"CONTENT_LENGTH": ""}, "413 Request Entity Too Large", "larger than 4096 bytes"),
    (b"<!DOCTYPE a><a/>", {}, "500 Internal Server Error", "are not accepted"),
    (b"<a>\x00</a>", {}, "500 Internal Server Error", "not UTF-8"),
    (b"<?xml version='1.0' encoding='ebcdic-cp-us'?><a/>", {}, "500 Internal Server Error", "'ebcdic-cp-us'"),
])
def test_guard_refusals(body, environ, status, text):
    """Each rule answers with its HTTP status and a SOAP fault naming the rule; the app never runs."""
    got_status, out, seen = run_guard(body, **environ)
    assert status == got_status
    assert text in out.decode() and b"<faultstring>" in out
    assert seen is None


# -- reading the spool ------------------------------------------------------------------

def test_output_strips_one_newline_caps_and_cleans(tmp_path):
    """Outputs lose one trailing newline, stop at max_bytes, and carry no characters XML cannot hold."""
    f = tmp_path / "out.txt"
    f.write_bytes(b"FINISHED\n\n")
    assert "FINISHED\n" == jobview.read_output(str(f), 100, "UNSET")
    f.write_bytes(b"a\x00b\x1bc\r\n")
    assert "a\ufffdb\ufffdc" == jobview.read_output(str(f), 100, "UNSET")
    f.write_bytes(b"x" * 500)
    assert 10 == len(jobview.read_output(str(f), 10, "UNSET"))
    assert "UNSET" == jobview.read_output(str(tmp_path / "missing"), 10, "UNSET")


@pytest.mark.parametrize("text,percent", [
    ("37", 37.0), (" 12.5\n", 12.5), ("150", 100.0), ("-3", 0.0), ("1e400", None), ("", None), ("abc", None),
    ("nan", None), ("NaN\n", None), ("inf", None), ("-Infinity", None), ("50 %", None), (" 7" + " " * 80, None),
    (b"\xff\xfe9", None)])
def test_progress_is_clamped_or_unknown(tmp_path, text, percent):
    """The one reader of progress files (status page and jobctl): 0-100, anything not a finite number is unknown."""
    f = tmp_path / "status.txt"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert percent == read_percent(str(f)) == read_percent(f)


def test_progress_of_odd_files_is_unknown(tmp_path):
    """Missing, a directory, a FIFO or a symlink: unknown, and nothing blocks or follows the link."""
    target = tmp_path / "real.txt"
    target.write_text("40")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for name in ("missing", "link", "dir", "fifo"):
        assert read_percent(tmp_path / name) is None, name
    assert 40.0 == read_percent(target)


# -- the operations over a hand-made spool ----------------------------------------------

class FixedAuth:
    def __init__(self, project="demo"):
        self.project, self.calls = project, []

    def identify(self, token, url):
        self.calls.append((token, url))
        if token == "bad":
            raise TokenValidationFailed("the token is unknown or expired")
        return Identity("alice" if token != "bob" else "bob", "other" if token == "bob" else self.project)


@pytest.fixture
def ops(tmp_path):
    spool = Spool(tmp_path / "spool").ensure()
    return Operations(spool, DEFS, FixedAuth(), abort_wait_seconds=0.3, clock=lambda: 1_790_000_000.0)


def claim(ops: Operations, sid: str, state: JobState, **fields) -> Path:
    """Do what the supervisor does: move the spec into runs/<sid>/ and write state.json."""
    run = ops.spool.run_dir(sid)
    (run / "attempts" / "1" / "work").mkdir(parents=True)
    incoming = ops.spool.incoming_path(sid)
    if incoming.exists():
        incoming.rename(run / "spec.json")
    else:
        spec = JobSpec(sid, "waiter", {"secondsToWait": 5}, AUTH, {"username": "alice", "project": "demo"})
        (run / "spec.json").write_bytes(spec.to_json())
    set_state(ops, sid, state, **fields)
    return run / "attempts" / "1" / "work"  # the program's files


def set_state(ops: Operations, sid: str, state: JobState, **fields) -> None:
    rs = RunState(sid, "waiter", state=state, **fields)
    (ops.spool.run_dir(sid) / "state.json").write_bytes(rs.to_json())


def html(answer) -> str:
    return base64.b64decode(answer[0]).decode()


def test_start_drops_a_spec_with_owner_and_auth_url(ops):
    """A start writes incoming/<sid>.json (inputs defaulted, owner from the token) and answers a 0 % page."""
    answer = ops.start(WAITER, "s-1", "tok", f"auth={AUTH},", {"secondsToWait": None})
    assert "UNSET" == answer[1]
    assert "Job accepted" in html(answer) and "0 %" in html(answer)
    spec = json.loads(ops.spool.incoming_path("s-1").read_text())
    assert ({"secondsToWait": 60}, AUTH, {"username": "alice", "project": "demo"}) == (
        spec["inputs"], spec["auth_url"], spec["owner"])


def test_start_checks_in_order(ops):
    """serviceID, then extraParameters, then the token, then the inputs: the first problem is the one reported."""
    with pytest.raises(InvalidRequest, match="serviceID"):
        ops.start(WAITER, "../x", "bad", None, {"secondsToWait": -1})
    with pytest.raises(InvalidRequest, match="extraParameters"):
        ops.start(WAITER, "ok", "bad", None, {"secondsToWait": -1})
    with pytest.raises(TokenValidationFailed):
        ops.start(WAITER, "ok", "bad", f"auth={AUTH},", {"secondsToWait": -1})
    with pytest.raises(InvalidRequest, match="secondsToWait"):
        ops.start(WAITER, "ok", "tok", f"auth={AUTH},", {"secondsToWait": -1})
    assert [] == list(ops.spool.incoming.iterdir())


def test_unclaimed_job_is_reported_as_queued(ops):
    """Before the supervisor claims the spec, status says it is waiting, with the queue ahead of it."""
    ops.spool.write_atomic(ops.spool.queue_file, json.dumps({"queued": ["a", "b"]}).encode())
    ops.start(WAITER, "s-2", "tok", f"auth={AUTH},", {})
    page = html(ops.status(WAITER, "s-2", "tok"))
    assert "Waiting for a free slot, 2 ahead" in page
    assert "Waiting for a free slot, 2 ahead" in html(ops.status(WAITER, "s-2", "tok"))  # no run dir: no UNCHANGED


def test_the_queue_is_read_again_once_it_changed(ops):
    """queue.json is parsed once while it stays as it was (ReadCache), and the supervisor's next version is seen."""
    queue = ops.spool.queue_file
    ops.spool.write_atomic(queue, json.dumps({"queued": ["a", "b", "c"]}).encode())
    os.utime(queue, (time.time() - 10, time.time() - 10))  # settled: the façade may keep what it parsed
    assert "ahead</dt><dd>3</dd>" in html(ops.start(WAITER, "s-q", "tok", f"auth={AUTH},", {}))
    assert "Waiting for a free slot, 3 ahead" in html(ops.status(WAITER, "s-q", "tok"))
    ops.spool.write_atomic(queue, json.dumps({"queued": ["b", "s-q"]}).encode())
    assert "Waiting for a free slot, 1 ahead" in html(ops.status(WAITER, "s-q", "tok"))


def test_unchanged_only_while_the_content_is_the_same(ops):
    """Polls repeat UNCHANGED until percent or output change; the next page is sent once, then UNCHANGED again."""
    adir = claim(ops, "s-3", JobState.RUNNING, started_at=1_789_999_990.0)
    (adir / "status.txt").write_text("40")
    (adir.parent / "stdout.log").write_text("working\n")
    assert "Running, 40 % done" in html(ops.status(WAITER, "s-3", "tok"))
    assert UNCHANGED == ops.status(WAITER, "s-3", "tok")[0]
    ops.clock = lambda: 1_790_000_100.0  # elapsed time and ETA change: still unchanged
    assert UNCHANGED == ops.status(WAITER, "s-3", "tok")[0]
    (adir / "status.txt").write_text("41")
    assert "41 % done" in html(ops.status(WAITER, "s-3", "tok"))
    assert UNCHANGED == ops.status(WAITER, "s-3", "tok")[0]
    with (adir.parent / "stdout.log").open("a") as f:
        f.write("more\n")
    assert "more" in html(ops.status(WAITER, "s-3", "tok"))


def test_failure_is_a_page_once_then_a_fault(ops):
    """FAILED: the first poll shows reason, exit code and stderr; every later poll raises JobFailed."""
    adir = claim(ops, "s-4", JobState.FAILED, reason="exited with code 2", exit_code=2,
                 started_at=1_789_999_990.0, finished_at=1_789_999_995.0)
    (adir.parent / "stderr.log").write_text("error: <mesh> is empty\n")
    page = html(ops.status(WAITER, "s-4", "tok"))
    assert "The job failed" in page and "exited with code 2" in page and "error: &lt;mesh&gt; is empty" in page
    for _ in range(2):
        with pytest.raises(JobFailed) as e:
            ops.status(WAITER, "s-4", "tok")
        assert e.value.message.startswith("job s-4 failed: exited with code 2; exit code 2")
        assert "error: <mesh> is empty" in e.value.message
        assert {"state": "FAILED", "reason": "exited with code 2"} == e.value.detail
    assert "The job failed" in html(ops.start(WAITER, "s-4", "tok", f"auth={AUTH},", {}))  # a retried start: page


def test_stopping_job_says_who_stopped_it(ops):
    """STOPPING: the headline names who asked, in words, not the command file's origin."""
    claim(ops, "s-10", JobState.STOPPING, reason="restarted by jobctl:ann", stop_reason="restarted by jobctl:ann",
          stop_target="QUEUED", started_at=1.0e9)
    page = html(ops.status(WAITER, "s-10", "tok"))
    assert "Restarting by an operator (jobctl, user ann)" in page and "jobctl:ann" not in page


def test_aborted_job_reads_aborted(ops):
    """ABORTED: the page and then the fault say the job was aborted, and by whom."""
    adir = claim(ops, "s-5", JobState.ABORTED, reason="aborted by facade", exit_code=143, started_at=1.0e9)
    (adir.parent / "stdout.log").write_text("aborted after 3 s\n")
    page = html(ops.status(WAITER, "s-5", "tok"))
    assert "The job was aborted" in page and "stopped at the user&#x27;s request (abortService)" in page
    with pytest.raises(JobFailed, match=r"job s-5 was aborted: stopped at the user's request \(abortService\)"):
        ops.status(WAITER, "s-5", "tok")


def test_success_answers_completed_with_outputs(ops):
    """SUCCEEDED: COMPLETED (not encoded) and the result file's text."""
    adir = claim(ops, "s-6", JobState.SUCCEEDED, exit_code=0)
    (adir / "result.txt").write_text("FINISHED\n")
    assert (COMPLETED, "FINISHED") == ops.status(WAITER, "s-6", "tok")
    assert (COMPLETED, "FINISHED") == ops.status(WAITER, "s-6", "tok")


def test_other_project_and_unknown_ids(ops):
    """Another project's token gets WrongProject; an unknown serviceID gets UnknownServiceID."""
    claim(ops, "s-7", JobState.RUNNING, started_at=1.0e9)
    with pytest.raises(WrongProject):
        ops.status(WAITER, "s-7", "bob")
    with pytest.raises(UnknownServiceID):
        ops.status(WAITER, "s-404", "tok")
    with pytest.raises(UnknownServiceID):  # a job of another definition is not this service's
        ops.status(DEFS["waiter"].__class__(**{**WAITER.__dict__, "name": "other", "service": "Other"}),
                   "s-7", "tok")


def test_abort_without_a_supervisor_answers_false_in_bounded_time(ops):
    """If nobody acts on the kill command within ABORT_WAIT_SECONDS, abortService answers false."""
    claim(ops, "s-8", JobState.RUNNING, started_at=1.0e9)
    began = time.monotonic()
    assert ops.abort(WAITER, "s-8", "tok") is False
    assert 0.25 < time.monotonic() - began < 2
    commands = [json.loads(p.read_text()) for p in ops.spool.commands.iterdir()]
    assert [("s-8", "kill", "facade")] == [(c["service_id"], c["verb"], c["origin"]) for c in commands]


def test_abort_of_finished_jobs_sends_nothing(ops):
    """SUCCEEDED and FAILED answer false, ABORTED true, and none of them writes a command."""
    for sid, state, expected in (("a1", JobState.SUCCEEDED, False), ("a2", JobState.FAILED, False),
                                 ("a3", JobState.ABORTED, True)):
        claim(ops, sid, state)
        assert expected is ops.abort(WAITER, sid, "tok")
    assert [] == list(ops.spool.commands.iterdir())


def test_notify_appends_numbered_messages(ops):
    """Messages go to notifications.txt as JSON lines; the response counts them."""
    claim(ops, "s-9", JobState.RUNNING, started_at=1.0e9)
    assert "message 1 delivered to s-9" == ops.notify(WAITER, "s-9", "tok", "first")
    assert "message 2 delivered to s-9" == ops.notify(WAITER, "s-9", "tok", "zwei\nlines")
    lines = (ops.spool.run_dir("s-9") / "notifications.txt").read_text().splitlines()
    assert ["first", "zwei\nlines"] == [json.loads(x)["message"] for x in lines]


def test_notify_refuses_unclaimed_finished_and_empty(ops):
    """No message for a job not yet claimed or already ended, and none without a message."""
    ops.start(WAITER, "n-1", "tok", f"auth={AUTH},", {})
    with pytest.raises(JobNotActive, match="not been picked up"):
        ops.notify(WAITER, "n-1", "tok", "hi")
    claim(ops, "n-2", JobState.SUCCEEDED)
    with pytest.raises(JobNotActive, match=r"already ended \(SUCCEEDED\)"):
        ops.notify(WAITER, "n-2", "tok", "hi")
    with pytest.raises(InvalidRequest, match="message: required"):
        ops.notify(WAITER, "n-2", "tok", None)


def test_a_job_waiting_in_the_cluster_shows_why(ops):
    """RUNNING without a start time (handed to Slurm, pending there) shows the executor's reason on the page."""
    claim(ops, "s-slurm", JobState.RUNNING, executor="slurm", executor_id="42",
          reason="pending in Slurm as job 42 (Resources)")
    assert "pending in Slurm as job 42 (Resources)" in html(ops.status(WAITER, "s-slurm", "tok"))


# -- who is told UNCHANGED: each poller (session token) on its own ----------------------

def test_each_token_gets_the_page_before_unchanged(ops):
    """A second token polling the same job gets the page although the first was told UNCHANGED."""
    claim(ops, "p-1", JobState.RUNNING, started_at=1_789_999_990.0)
    assert "Running" in html(ops.status(WAITER, "p-1", "tok"))
    assert UNCHANGED == ops.status(WAITER, "p-1", "tok")[0]
    assert "Running" in html(ops.status(WAITER, "p-1", "tok2"))
    assert UNCHANGED == ops.status(WAITER, "p-1", "tok2")[0]
    assert UNCHANGED == ops.status(WAITER, "p-1", "tok")[0]


def test_the_hint_keeps_the_last_pollers_in_a_file_of_fixed_size(ops):
    """Many pollers do not grow facade.json: the one least recently sent a page drops out and gets the page again."""
    claim(ops, "p-2", JobState.RUNNING, started_at=1_789_999_990.0)
    hint = ops.spool.run_dir("p-2") / "facade.json"
    tokens = [f"poller-{i}" for i in range(jobview.SentPages.MAX_POLLERS + 1)]
    for token in tokens:
        assert "Running" in html(ops.status(WAITER, "p-2", token))
        assert jobview.SentPages.HINT_BYTES == hint.stat().st_size
    for token in tokens[2:]:
        assert UNCHANGED == ops.status(WAITER, "p-2", token)[0]
    assert "Running" in html(ops.status(WAITER, "p-2", tokens[0]))  # dropped: sent whole again
    assert "tok" not in hint.read_text() and "poller" not in hint.read_text()  # digests, never tokens


@pytest.mark.parametrize("content", [b'{"page": "abc", "sent_at": 1.0}\n', b"[]", b'{"sent": [["x\\"", "y", 1]]}',
                                     b'{"sent": 7}', b"\xff" * 10, b'{"sent": []}' + b" " * 2000])
def test_an_odd_or_older_hint_means_the_page_is_sent(ops, content):
    """A facade.json from an older façade, or one that is not ours, costs one page, never an error."""
    claim(ops, "p-3", JobState.RUNNING, started_at=1_789_999_990.0)
    (ops.spool.run_dir("p-3") / "facade.json").write_bytes(content)
    assert "Running" in html(ops.status(WAITER, "p-3", "tok"))
    assert UNCHANGED == ops.status(WAITER, "p-3", "tok")[0]


# -- the token before the serviceID ------------------------------------------------------

def test_a_bad_token_is_refused_before_the_service_id_is_looked_up(ops):
    """Status, abort and notify: a refused token gets TokenValidationFailed for an unknown serviceID too."""
    claim(ops, "k-1", JobState.RUNNING, started_at=1.0e9)
    for call in (ops.status, ops.abort, lambda d, sid, token: ops.notify(d, sid, token, "hi")):
        for sid in ("k-1", "k-404"):
            with pytest.raises(TokenValidationFailed) as e:
                call(WAITER, sid, "bad")
            assert {"reason": "the token is unknown or expired"} == e.value.detail
        with pytest.raises(UnknownServiceID):
            call(WAITER, "k-404", "tok")


def test_a_job_without_an_allowed_manager_is_named_only_to_a_valid_token(ops):
    """A job submitted by jobctl (no auth URL) or recording a manager no longer allowed: a bad token learns nothing."""
    ops.auth = make_auth({"tok": ("alice", "demo")})[0]
    for sid, url in (("k-2", None), ("k-3", "http://gone.example/auth?wsdl")):
        run = ops.spool.run_dir(sid)
        run.mkdir()
        (run / "spec.json").write_bytes(JobSpec(sid, "waiter", {}, url, {"project": "demo"}).to_json())
        with pytest.raises(TokenValidationFailed) as e:
            ops.status(WAITER, sid, "bad")
        assert {"reason": "the token is unknown or expired"} == e.value.detail
    with pytest.raises(TokenValidationFailed, match="validation failed") as e:
        ops.status(WAITER, "k-2", "tok")
    assert "not submitted through SOAP" in e.value.detail["reason"]
    with pytest.raises(InvalidRequest, match="not an allowed authentication manager"):
        ops.status(WAITER, "k-3", "tok")


def test_without_a_job_the_token_is_asked_of_the_whole_allowed_urls_and_loaded_managers():
    """identify(token, None): cached managers first, then whole AUTH_MANAGERS URLs and managers already loaded."""
    built = []
    auth, calls, _ = make_auth({"t": ("alice", "demo")}, built=built)
    assert Identity("alice", "demo") == auth.identify("t", None)
    assert [AUTH, "http://other/auth?wsdl"][:len(built)] == built and 3 == len(calls)
    auth.identify("t", None)
    assert 3 == len(calls)  # cached
    with pytest.raises(TokenValidationFailed) as e:
        auth.identify("nope", None)
    assert {"reason": "the token is unknown or expired"} == e.value.detail
    assert ["validateSessionToken"] * 2 == calls[3:]  # both managers asked
    prefixes = Authenticator(AuthManagers(["http://auth.example/am"]), timeout=1, cache_seconds=30,
                             client_factory=lambda url, timeout: pytest.fail("nothing to ask"))
    with pytest.raises(TokenValidationFailed) as e:
        prefixes.identify("t", None)
    assert {"reason": "the token is unknown or expired"} == e.value.detail
    with pytest.raises(TokenValidationFailed) as e:
        prefixes.identify("", None)
    assert {"reason": "no session token given"} == e.value.detail


def test_without_a_job_an_unreachable_manager_is_said_only_when_none_refused():
    """One manager down and one refusing: the refusal, as the job's own manager would answer."""
    def factory(url, timeout):
        if url == AUTH:
            raise AuthUnavailable(url, "could not be reached", "loading its WSDL")
        return FakeAuthClient({}, [])
    auth = Authenticator(ALLOWED, timeout=1, cache_seconds=30, client_factory=factory)
    with pytest.raises(TokenValidationFailed):
        auth.identify("t", None)
    down = Authenticator(AuthManagers([AUTH]), timeout=1, cache_seconds=30, client_factory=factory)
    with pytest.raises(AuthManagerUnavailable):
        down.identify("t", None)

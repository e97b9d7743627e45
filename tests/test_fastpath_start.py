"""Starts answered by the fast path (facade.fastpath) exactly as spyne answers them, in-process.

Why: the start method is the second hot operation; the fast path reads a
plain start itself, runs the same Operations.start and answers from a
template cut from spyne's answer. What a client gets, and what lands in the
spool, must not depend on which path answered: the same bytes, the same
typed faults, the same spec, the operation run once.
"""
from __future__ import annotations

import io
import json
from html import escape
from pathlib import Path

import pytest

from facade.app import Router, service_app
from facade.fastpath import OPERATION, FastPath
from facade.guard import RequestGuard
from facade.inline import WouldWait, on_loop
from facade.operations import Operations
from harness import ROOT
from jobs.config import load
from jobs.definitions import load_definitions
from jobs.spool import Spool
from test_bench import StubAuth as CountingAuth  # 'good' is alice of project demo; counts the calls

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
pytestmark = pytest.mark.fast  # in-process, no process started (tests/conftest.py)
AUTH = "http://auth.example/authManager/AuthManager?wsdl"
NOW = 1_800_000_000.0
EVERY = """
service = "Every"
namespace = "every.example"
start_method = "startEvery"
argv = ["true"]
[inputs.label]
type = "string"
[inputs.count]
type = "integer"
min = 0
max = 10
[inputs.ratio]
type = "float"
default = 0.5
min = 0
max = 1
[inputs.loud]
type = "boolean"
default = false
[inputs.note]
type = "string"
default = "none"
[files]
out = "out.txt"
[outputs.out]
file = "out"
[outputs.other]
file = "out"
placeholder = "<none> & \\"so\\""
"""


class CountingOperations(Operations):
    """Operations that count the starts run."""

    starts = 0

    def start(self, *args, **kwargs):
        self.starts += 1
        return super().start(*args, **kwargs)


SHIPPED = {**load_definitions(ROOT / "jobs" / "definitions"), **load_definitions(ROOT / "bench" / "definitions")}


def _definitions(tmp_path: Path) -> dict:
    """The shipped definitions and `every` (an input of each type, a required one, two outputs)."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "every.toml").write_text(EVERY)
    return {**SHIPPED, **load_definitions(tmp_path / "defs")}


class Service:
    """One definition's service as make_app mounts it (guard, router, fast path), over its own spool."""

    def __init__(self, tmp_path: Path, defs: dict, name: str, fast: bool):
        self.d = defs[name]
        directory = tmp_path / f"{name}-{'fast' if fast else 'spyne'}"
        directory.mkdir()
        (directory / "env").write_text(f"CONTEXT_ROOT=/t\nSPOOL_DIR={directory / 'spool'}\n"
                                       f"FACADE_FAST_PATH={'true' if fast else 'false'}\n")
        config = load(directory / "env", environ={})
        self.spool = Spool(config.spool_dir).ensure()
        self.auth = CountingAuth()
        self.ops = CountingOperations(self.spool, defs, self.auth, abort_wait_seconds=0, clock=lambda: NOW)
        self.fast = service_app(self.d, self.ops, config)
        self.path = f"/t/{self.d.service}"
        self.spyne_calls = 0
        spyne = self.spyne = self.fast.spyne_app  # spyne itself, uncounted

        def counted_spyne(environ, start_response):
            self.spyne_calls += 1
            return spyne(environ, start_response)
        self.fast.spyne_app = counted_spyne
        namespaces = {self.path: self.d.namespace}
        self.app = RequestGuard(Router({self.path: self.fast}, namespaces=namespaces), config.max_body_bytes, namespaces)

    def environ(self, body: bytes, action: str = "") -> dict:
        return {"REQUEST_METHOD": "POST", "PATH_INFO": self.path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                "CONTENT_TYPE": "text/xml; charset=utf-8", "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
                "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "localhost", "HTTP_SOAPACTION": action}

    def call(self, body: bytes, action: str = "") -> tuple[str, list, bytes]:
        seen = []
        result = self.app(self.environ(body, action), lambda status, headers, exc_info=None: seen.append((status, headers)))
        data = b"".join(result)
        if hasattr(result, "close"):
            result.close()
        return seen[0][0], sorted(seen[0][1]), data

    def specs(self) -> dict[str, dict]:
        """What landed in incoming/, without the submission time."""
        return {p.name: {k: v for k, v in json.loads(p.read_bytes()).items() if k != "submitted_at"}
                for p in sorted(self.spool.incoming.iterdir())}


def start_body(d, sid: str = "s-1", token: str = "good", extra: str = f"auth={AUTH},", inputs: str = "",
               header: str = "") -> bytes:
    """A start request; values are XML text (escape them first); None leaves a global parameter out."""
    params = "".join(f"<w:{name}>{value}</w:{name}>" for name, value in
                     (("serviceID", sid), ("sessionToken", token), ("extraParameters", extra)) if value is not None)
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:w="{d.namespace}">'
            f"{header}<s:Body><w:{d.start_method}>{params}{inputs}</w:{d.start_method}></s:Body></s:Envelope>"
            ).encode()


def awkward(text: str) -> str:
    return escape(text, quote=False)


EVERY_OK = "<w:label>{}</w:label><w:count>3</w:count>"
# name -> (start_body keyword arguments, or a callable of the definition giving them; whether the fast path answers)
EVERY_CASES = {
    "markup and entities": (dict(inputs=EVERY_OK.format(awkward("a & b <c> ]]> \"q\" 'q' &amp;"))), True),
    "CR kept, CRLF read as LF": (dict(inputs=EVERY_OK.format("one&#13;two\r\nthree\rfour")), True),
    "non-ASCII": (dict(inputs=EVERY_OK.format("ünïcødé ✓ 𝄞")), True),
    "blanks kept in a string": (dict(inputs=EVERY_OK.format("  spaced  ")), True),
    "every input given": (dict(inputs=EVERY_OK.format("x") + "<w:ratio> 1e-3 </w:ratio><w:loud>1</w:loud>"
                                      "<w:note>n</w:note>"), True),
    "a boolean with blanks (spyne reads False)": (dict(inputs=EVERY_OK.format("x") + "<w:loud> true </w:loud>"), True),
    "empty optional inputs are absent": (dict(inputs=EVERY_OK.format("x") + "<w:ratio/><w:loud>  </w:loud>"
                                                     "<w:note></w:note>"), True),
    "an empty required string is a value": (dict(inputs="<w:label></w:label><w:count>3</w:count>"), True),
    "missing required inputs": (dict(inputs=""), True),
    "missing required integer": (dict(inputs="<w:label>x</w:label>"), True),
    "empty required integer": (dict(inputs="<w:label>x</w:label><w:count/>"), False),
    "out of bounds": (dict(inputs="<w:label>x</w:label><w:count>+011</w:count>"), True),
    "infinite float": (dict(inputs=EVERY_OK.format("x") + "<w:ratio>INF</w:ratio>"), True),
    "not an integer": (dict(inputs="<w:label>x</w:label><w:count>٣</w:count>"), False),
    "unknown element": (dict(inputs=EVERY_OK.format("x") + "<w:colour>red</w:colour>"), False),
    "inputs out of order": (dict(inputs="<w:count>3</w:count><w:label>x</w:label>"), False),
    "an input twice": (dict(inputs=EVERY_OK.format("x") + "<w:note>a</w:note><w:note>b</w:note>"), False),
    "an over-long integer": (dict(inputs="<w:label>x</w:label><w:count>" + "0" * 1100 + "1</w:count>"), False),
    "markup in the serviceID": (dict(sid=awkward("bad <id> & co"), inputs=EVERY_OK.format("x")), True),
    "bad token": (dict(token="bad", inputs=EVERY_OK.format("x")), True),
    "token with entity and blanks": (dict(token=" go&#111;d ", inputs=EVERY_OK.format("x")), True),
    "no auth entry": (dict(extra="gss=x,", inputs=EVERY_OK.format("x")), True),
    "awkward extraParameters": (dict(extra=awkward(f"auth={AUTH}&x=ü,gss=<a> b,"), inputs=EVERY_OK.format("x")),
                                True),
    "an auth URL with blanks": (dict(extra=awkward(f"auth={AUTH}&x=ü 𝄞,"), inputs=EVERY_OK.format("x")), True),
    "empty extraParameters": (dict(extra="", inputs=EVERY_OK.format("x")), False),
    "no serviceID": (dict(sid=None, inputs=EVERY_OK.format("x")), False),
    "a SOAP header": (dict(header="<s:Header/>", inputs=EVERY_OK.format("x")), False),
    "a comment and a PI (the parser drops them, as spyne's)": (dict(inputs="<!-- c --><?pi x?>" + EVERY_OK.format("x")),
                                                                True),
    "CDATA": (dict(inputs=EVERY_OK.format("<![CDATA[a <b> & ]]>c")), True),
    "an attribute": (dict(inputs=EVERY_OK.format("x").replace("<w:count>", '<w:count w:a="1">')), False),
    "xsi:nil": (dict(inputs=EVERY_OK.format("x").replace(
        "<w:count>3</w:count>", '<w:count xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>')),
        False),
}


class Services(dict):
    """name -> (fast, spyne): a definition's service twice, each over its own spool, made when first asked for."""

    def __init__(self, tmp_path: Path):
        super().__init__()
        self.tmp_path, self.defs = tmp_path, _definitions(tmp_path)

    def __missing__(self, name: str) -> tuple[Service, Service]:
        pair = self[name] = (Service(self.tmp_path, self.defs, name, True), Service(self.tmp_path, self.defs, name, False))
        return pair


@pytest.fixture
def services(tmp_path):
    return Services(tmp_path)


def _both(pair, body: bytes, action: str = "", times: int = 2) -> list:
    """Each service's answers to the same request sent `times` times (a retry after the first), then its specs."""
    return [[s.call(body, action) for _ in range(times)] + [s.specs()] for s in pair]


@pytest.mark.parametrize("case", sorted(EVERY_CASES))
def test_a_start_is_answered_byte_for_byte_like_spyne(services, case):
    """Every kind of start (awkward values, empty and missing inputs, faults, odd shapes) gets the same bytes, a
    retry the same answer, the spool the same spec; plain ones without spyne, each operation run once."""
    fast, spyne = services["every"]
    kwargs, answered_fast = EVERY_CASES[case]
    on_fast, on_spyne = _both((fast, spyne), start_body(fast.d, **kwargs))
    assert on_spyne == on_fast
    assert (fast.ops.starts, fast.auth.calls) == (spyne.ops.starts, spyne.auth.calls)
    faulted = on_fast[0][0].startswith("500")
    assert (answered_fast and not faulted) == (fast.spyne_calls == 0)
    assert spyne.spyne_calls == 2


VARIANTS = {"no-input": "", "given": "<w:{input}>7</w:{input}>", "empty": "<w:{input}/>",
            "blanks-and-sign": "<w:{input}> +05 </w:{input}>", "below-min": "<w:{input}>-1</w:{input}>",
            "not-a-number": "<w:{input}>x</w:{input}>"}


@pytest.mark.parametrize("name,variant", [(name, v) for name, d in sorted(SHIPPED.items())
                                          for v in VARIANTS if d.inputs or v == "no-input"])
def test_starts_of_the_shipped_definitions_answer_like_spyne(services, name, variant):
    """The waiter's and the bench jobs' starts, with their input given, empty, odd or wrong: same bytes, same retry
    answer, same spec on both paths; the valid ones without spyne."""
    fast, spyne = services[name]
    body = start_body(fast.d, inputs=VARIANTS[variant].format(input=fast.d.inputs[0].name if fast.d.inputs else ""))
    on_fast, on_spyne = _both((fast, spyne), body, action=f'"{fast.d.start_method}"')
    assert on_spyne == on_fast
    assert fast.ops.starts == spyne.ops.starts
    assert (fast.spyne_calls == 0) == on_fast[0][0].startswith("200")


def test_a_plain_start_runs_without_spyne_and_a_retry_too(services):
    """A plain start and its retry (same serviceID) are answered by the fast path; the retry submits nothing."""
    fast, spyne = services["waiter"]
    body = start_body(fast.d, inputs="<w:secondsToWait>5</w:secondsToWait>")
    first, again = fast.call(body), fast.call(body)
    assert (first, again) == (spyne.call(body), spyne.call(body))
    assert 0 == fast.spyne_calls and {} == fast.fast.fallbacks
    assert ["s-1.json"] == list(fast.specs())
    assert first[2] != again[2]  # accepted, then the job's status: "as before"


def test_a_failing_start_runs_once_and_is_counted(services):
    """A start that ends in a fault runs the operation (and asks the authentication manager) once, and is
    counted as a fallback of the start method."""
    fast, _ = services["waiter"]
    status, _, data = fast.call(start_body(fast.d, token="bad"))
    assert status.startswith("500") and b"Session-token validation failed" in data
    assert (1, 1, 1) == (fast.ops.starts, fast.auth.calls, fast.spyne_calls)
    assert {("startWaiter", "fault"): 1} == fast.fast.fallbacks


def test_fallbacks_are_counted_per_operation_and_reason(services):
    """Odd starts and polls are handed to spyne and counted by operation and reason; other operations are not."""
    fast, _ = services["waiter"]
    d = fast.d
    fast.call(start_body(d, header="<s:Header/>"))
    fast.call(start_body(d, inputs="<w:secondsToWait>x</w:secondsToWait>"))
    fast.call(start_body(d, inputs="<w:secondsToWait>x</w:secondsToWait>"))
    fast.call(start_body(d).replace(b"<w:serviceID>", b'<w:serviceID w:id="1">'))
    fast.call(start_body(d), action='"getServiceStatus"')  # SOAPAction and body disagree: spyne's fault, uncounted
    poll = (f'<s:Envelope xmlns:s="{SOAP_ENV}" xmlns:w="{d.namespace}"><s:Body><w:getServiceStatus>'
            "<w:serviceID>s-9</w:serviceID><w:sessionToken><w:b/>good</w:sessionToken>"
            "</w:getServiceStatus></s:Body></s:Envelope>").encode()
    fast.call(poll)
    abort = poll.replace(b"getServiceStatus", b"abortService")
    fast.call(abort)
    assert {("startWaiter", "not_plain"): 2, ("startWaiter", "invalid"): 2, (OPERATION, "not_plain"): 1} \
        == fast.fast.fallbacks
    assert 7 == fast.spyne_calls
    assert ["s-1.json"] == list(fast.specs())  # spyne started the one with a header


def test_with_the_fast_path_off_spyne_answers_every_start_and_counts_it(services):
    """FACADE_FAST_PATH=false: no template is cut, each start goes to spyne (counted as 'off') and succeeds."""
    _, spyne = services["stamp"]
    assert {OPERATION: None, "startBenchStamp": None} == spyne.fast.templates
    status, _, data = spyne.call(start_body(spyne.d, inputs="<w:holdMs>5</w:holdMs>"))
    assert status.startswith("200") and b"status_base64" in data
    assert {("startBenchStamp", "off"): 1} == spyne.fast.fallbacks
    assert ["s-1.json"] == list(spyne.specs())


def test_on_the_event_loop_a_start_leaves_before_anything_happens(services):
    """On the worker's event loop a start raises WouldWait before it is parsed, counted or run; the thread then
    answers it in full."""
    fast, spyne = services["waiter"]
    body = start_body(fast.d, inputs="<w:secondsToWait>5</w:secondsToWait>")
    environ = fast.environ(body)
    environ["facade.body"] = body
    with pytest.raises(WouldWait), on_loop():
        fast.fast(environ, lambda *a: None)
    assert (0, 0, {}, {}) == (fast.ops.starts, fast.spyne_calls, fast.fast.fallbacks, fast.specs())
    assert fast.call(body) == spyne.call(body)


def test_the_start_template_is_checked_against_spyne(services):
    """Each definition's start gets its own template, cut from spyne's answer with as many slots as outputs."""
    for name in [*SHIPPED, "every"]:
        fast, _ = services[name]
        templates = fast.fast.templates
        assert {OPERATION, fast.d.start_method} == set(templates)
        assert [1 + len(fast.d.outputs)] * 2 == [t.slots for t in templates.values()], name


def test_a_fast_path_that_cannot_check_its_template_stays_on_spyne(services):
    """If spyne's answer cannot be cut (here: spyne answers the check with an error), that operation is left to
    spyne, the other keeps its template."""
    fast, _ = services["noop"]
    spyne_app = fast.spyne
    calls = {}

    def only_polls(environ, start_response):
        body = environ["wsgi.input"].getvalue()
        calls[b"startBenchNoop" in body] = calls.get(b"startBenchNoop" in body, 0) + 1
        if b"startBenchNoop" in body:
            start_response("500 Internal Server Error", [("Content-Type", "text/xml; charset=utf-8")])
            return [b"<no/>"]
        return spyne_app(environ, start_response)
    only_polls.app = spyne_app.app
    rebuilt = FastPath(only_polls, {OPERATION: fast.fast.ops[OPERATION].call,
                                    "startBenchNoop": fast.fast.ops["startBenchNoop"].call}, fast.path)
    assert rebuilt.templates["startBenchNoop"] is None and rebuilt.templates[OPERATION] is not None
    assert calls[True] == 1 and [] == list(fast.specs())

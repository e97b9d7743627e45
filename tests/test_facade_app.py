"""The façade's WSGI application in-process, both ways a poll is answered: the fast path and spyne.

Why: what a client sees is decided by the SOAP layer as much as by the
operations (which fault, with which <detail>), and the fast path answers
polls without spyne; these rules must hold the same way on both paths, and
are checked here without processes, over a hand-made spool.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from requests.structures import CaseInsensitiveDict
from zeep.transports import Transport

from facade.app import Router, service_app
from facade.auth import Identity
from facade.errors import TokenValidationFailed
from facade.guard import RequestGuard
from facade.operations import UNCHANGED, Operations
from harness import ROOT
from jobs.config import load
from jobs.definitions import load_definitions
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.states import JobState

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "waiter.sintef.no"
PATH = "/demo-waiter/Waiter"
AUTH = "http://auth.example/authManager/AuthManager?wsdl"
NOW = 1_800_000_000.0
DEFS = load_definitions(ROOT / "jobs" / "definitions")


class StubAuth:
    """'good' and 'second' are users of project demo, for any manager; any other token is refused."""

    def identify(self, token, auth_url):
        if token not in ("good", "second"):
            raise TokenValidationFailed("the token is unknown or expired")
        return Identity(token, "demo")


def wsgi(app, body: bytes | None = None, query: str = "") -> tuple[str, bytes]:
    environ = {"REQUEST_METHOD": "POST" if body is not None else "GET", "PATH_INFO": PATH, "SCRIPT_NAME": "",
               "QUERY_STRING": query, "CONTENT_TYPE": "text/xml; charset=utf-8",
               "CONTENT_LENGTH": str(len(body or b"")), "wsgi.input": io.BytesIO(body or b""),
               "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost"}
    seen = []
    result = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    data = b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return seen[0], data


@pytest.fixture(params=[True, False], ids=["fast-path", "spyne"])
def facade(request, tmp_path):
    """The waiter service as make_app mounts it (behind the guard), with the fast path on or off."""
    env = tmp_path / "env"
    env.write_text(f"CONTEXT_ROOT=/demo-waiter\nSPOOL_DIR={tmp_path / 'spool'}\n"
                   f"FACADE_FAST_PATH={'true' if request.param else 'false'}\n")
    config = load(env, environ={})
    spool = Spool(config.spool_dir).ensure()
    ops = Operations(spool, DEFS, StubAuth(), abort_wait_seconds=0, clock=lambda: NOW)
    fast = service_app(DEFS["waiter"], ops, config)
    assert [request.param] * 2 == [t is not None for t in fast.templates.values()]
    namespaces = {PATH: TNS}
    return RequestGuard(Router({PATH: fast}, namespaces=namespaces), config.max_body_bytes, namespaces), spool


def envelope(inner: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:w="{TNS}">'
            f"<s:Body>{inner}</s:Body></s:Envelope>").encode()


def poll(app, sid: str, token: str = "good") -> tuple[str, bytes]:
    return wsgi(app, envelope(f"<w:getServiceStatus><w:serviceID>{sid}</w:serviceID>"
                              f"<w:sessionToken>{token}</w:sessionToken></w:getServiceStatus>"))


def answer(data: bytes) -> str:
    return etree.fromstring(data).findtext(f".//{{{TNS}}}status_base64")


def fault(data: bytes) -> tuple[str, str, etree._Element | None]:
    f = etree.fromstring(data).find(f".//{{{SOAP_ENV}}}Fault")
    detail = f.find("detail")
    return f.findtext("faultcode"), f.findtext("faultstring"), None if detail is None else detail


def claim(spool: Spool, sid: str, state: JobState, auth_url: str | None = AUTH, **fields) -> Path:
    run = spool.runs / sid
    (run / "attempts" / "1" / "work").mkdir(parents=True)
    (run / "spec.json").write_bytes(
        JobSpec(sid, "waiter", {"secondsToWait": 5}, auth_url, {"username": "good", "project": "demo"}).to_json())
    (run / "state.json").write_bytes(RunState(sid, "waiter", state=state, **fields).to_json())
    return run / "attempts" / "1" / "work"  # the program's files


# -- every fault carries its declared element ----------------------------------------------

class WsgiTransport(Transport):
    """zeep over the WSGI application, no sockets."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    def _load_remote_data(self, url):
        status, data = wsgi(self.app, query="wsdl")
        assert status.startswith("200"), status
        return data

    def post(self, address, message, headers):
        status, data = wsgi(self.app, message if isinstance(message, bytes) else message.encode())
        response = requests.Response()
        response.status_code, response._content = int(status.split()[0]), data
        response.headers = CaseInsensitiveDict({"Content-Type": "text/xml; charset=utf-8"})
        response.encoding = "utf-8"
        return response


START = ("<w:startWaiter><w:serviceID>s-1</w:serviceID><w:sessionToken>good</w:sessionToken>"
         f"<w:extraParameters>auth={AUTH},</w:extraParameters>{{inputs}}</w:startWaiter>")


@pytest.mark.parametrize("operation,body", [
    ("startWaiter", envelope(START.format(inputs="<w:secondsToWait>abc</w:secondsToWait>"))),
    ("startWaiter", envelope(START.format(inputs="<w:secondsToWait>1.5</w:secondsToWait>"))),
    ("startWaiter", envelope(START.format(inputs="<w:secondsToWait>1</w:secondsToWait><w:colour>red</w:colour>"))),
    ("getServiceStatus", envelope("<w:getServiceStatus><w:serviceID>s</w:serviceID><w:bogus>1</w:bogus>"
                                  "</w:getServiceStatus>")),
    ("abortService", envelope("<w:abortService><w:serviceID>s</w:serviceID><w:sessionToken>good</w:sessionToken>"
                              "<w:sessionToken>again</w:sessionToken></w:abortService>")),
    ("startWaiter", b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body><oops"),
    ("startWaiter", envelope("<w:deleteEverything/>")),
    ("getServiceStatus", b"<!DOCTYPE x []>" + envelope("<w:getServiceStatus/>")),
    ("getServiceStatus", b" "),
], ids=["abc", "1.5", "unknown-element", "status-unknown-element", "twice", "not-xml", "unknown-operation",
        "doctype", "empty"])
def test_schema_failures_carry_the_declared_invalid_request_element(facade, operation, body):
    """A request the schema (or the guard) refuses gets a Client fault whose <detail> zeep parses as the
    declared InvalidRequestFault element."""
    app, spool = facade
    client = zeep.Client("http://localhost/demo-waiter/Waiter?wsdl", transport=WsgiTransport(app))
    status, data = wsgi(app, body)
    assert status.startswith("500")
    code, text, detail = fault(data)
    assert code.startswith("soap11env:Client.") and text
    assert detail is not None and 1 == len(detail), data
    response = requests.Response()
    response.status_code, response._content = 500, data
    response.headers = CaseInsensitiveDict({"Content-Type": "text/xml; charset=utf-8"})
    binding = client.service._binding
    with pytest.raises(zeep.exceptions.Fault) as e:
        binding.process_reply(client, binding.get(operation), response)
    element = client.get_element(f"{{{TNS}}}InvalidRequestFault")
    parsed = element.parse(e.value.detail[0], client.wsdl.types)
    assert (None, None) == (parsed.reason, parsed.state)
    assert [] == list(spool.incoming.iterdir())


def test_schema_failure_names_the_field(facade):
    """The faultstring still says what is wrong, as before."""
    status, data = wsgi(facade[0], envelope(START.format(inputs="<w:secondsToWait>abc</w:secondsToWait>")))
    code, text, _ = fault(data)
    assert "soap11env:Client.InvalidRequest" == code
    assert "secondsToWait" in text and "'abc'" in text


def test_operation_faults_keep_their_own_element(facade):
    """A fault an operation raises keeps its own declared element and reason."""
    app, spool = facade
    claim(spool, "s-2", JobState.RUNNING, started_at=NOW - 5)
    code, text, detail = fault(poll(app, "s-2", "bad")[1])
    assert "soap11env:Client.TokenValidationFailed" == code
    assert f"{{{TNS}}}TokenValidationFailedFault" == detail[0].tag
    assert "the token is unknown or expired" == detail[0].findtext(f"{{{TNS}}}reason")


# -- each poller gets the whole page before UNCHANGED ------------------------------------------

def test_a_second_poller_gets_the_page_before_unchanged(facade):
    """Two tokens polling one job: each gets the page once, then UNCHANGED; neither's UNCHANGED is the other's."""
    app, spool = facade
    adir = claim(spool, "s-3", JobState.RUNNING, started_at=NOW - 5)
    (adir / "status.txt").write_text("40")
    assert answer(poll(app, "s-3", "good")[1]) not in (UNCHANGED, None)
    assert UNCHANGED == answer(poll(app, "s-3", "good")[1])
    assert answer(poll(app, "s-3", "second")[1]) not in (UNCHANGED, None)
    assert UNCHANGED == answer(poll(app, "s-3", "second")[1])
    assert UNCHANGED == answer(poll(app, "s-3", "good")[1])


def test_a_second_poller_sees_the_failure_page_before_the_fault(facade):
    """After a failure, a poller that has not seen the failure page gets it, not JobFailed."""
    app, spool = facade
    claim(spool, "s-4", JobState.FAILED, reason="exited with code 2", exit_code=2, started_at=NOW - 9,
          finished_at=NOW - 1)
    assert answer(poll(app, "s-4", "good")[1]) is not None
    assert "soap11env:Server.JobFailed" == fault(poll(app, "s-4", "good")[1])[0]
    page = answer(poll(app, "s-4", "second")[1])
    assert page is not None and page != UNCHANGED
    assert "soap11env:Server.JobFailed" == fault(poll(app, "s-4", "second")[1])[0]


# -- the token before the serviceID --------------------------------------------------------------

@pytest.mark.parametrize("token", ["bad", ""])
def test_without_a_valid_token_an_unknown_service_id_looks_like_a_known_one(facade, token):
    """A caller without a valid token gets the same fault, detail included, whether the serviceID exists or not."""
    app, spool = facade
    claim(spool, "s-5", JobState.RUNNING, started_at=NOW - 5)
    claim(spool, "s-6", JobState.RUNNING, auth_url=None, started_at=NOW - 5)  # submitted by jobctl
    known, by_jobctl, unknown = (poll(app, sid, token)[1] for sid in ("s-5", "s-6", "s-404"))
    described = [(code, text, etree.tostring(detail)) for code, text, detail in map(fault, (known, by_jobctl, unknown))]
    assert described[0] == described[1] == described[2]
    assert "soap11env:Client.TokenValidationFailed" == described[0][0]
    assert "soap11env:Client.UnknownServiceID" == fault(poll(app, "s-404", "good")[1])[0]

"""jobs/submit.py: the one submit and the one reading of text inputs, against the SOAP start itself.

Why: the console's form and `jobctl submit` send text, the SOAP start gets
XML; all three must accept and refuse the same values with the same words.
The SOAP start here is the real spyne service (in-process, no server), so
each rule is checked against what a workflow manager would get back.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from lxml import etree
from spyne import Application
from spyne.protocol.soap import Soap11

from facade.app import HostAwareWsgiApplication
from facade.auth import Identity
from facade.errors import InvalidRequest, ServiceUnavailable
from facade.operations import Operations
from facade.service import DefinitionSoap11, build_service
from jobs.definitions import load_definition
from jobs.spec import JobSpec
from jobs.spool import ServiceId, Spool
from jobs.submit import SubmitError, submit, text_inputs

AUTH = "http://auth.example/?wsdl"
OWNER = {"username": "alice", "project": "demo"}
TYPED = """\
service = "Typed"
namespace = "typed.test"
start_method = "startTyped"
argv = ["{python}", "-c", "pass"]
[inputs.req]
type = "integer"
min = 0
max = 10
[inputs.n]
type = "integer"
min = 0
max = 100
default = 5
[inputs.x]
type = "float"
min = -1
max = 1
default = 0.5
[inputs.flag]
type = "boolean"
default = false
[inputs.name]
type = "string"
default = "a"
max_length = 10
"""


class Auth:
    def identify(self, token, url):
        return Identity(OWNER["username"], OWNER["project"])


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("typed")
    (directory / "typed.toml").write_text(TYPED)
    return load_definition(directory / "typed.toml")


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "spool").ensure()


class SoapStart:
    """The definition's SOAP start, called in-process over a WSGI environ; its inputs or its faultstring."""

    def __init__(self, d, spool: Spool):
        logging.getLogger("spyne").setLevel(logging.CRITICAL)
        self.d, self.spool, self.n = d, spool, 0
        ops = Operations(spool, {d.name: d}, Auth(), abort_wait_seconds=0)
        self.app = HostAwareWsgiApplication(Application(
            [build_service(d, ops)], tns=d.namespace, in_protocol=DefinitionSoap11(d), out_protocol=Soap11()))

    def __call__(self, fields: dict[str, str]) -> tuple[str, object]:
        self.n += 1
        sid = f"soap-{self.n}"
        inputs = "".join(f"<t:{i.name}>{escape(fields[i.name])}</t:{i.name}>"
                         for i in self.d.inputs if i.name in fields)  # the schema's order
        body = (f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="{self.d.namespace}">'
                f"<s:Body><t:{self.d.start_method}><t:serviceID>{sid}</t:serviceID><t:sessionToken>t</t:sessionToken>"
                f"<t:extraParameters>auth={AUTH},</t:extraParameters>{inputs}</t:{self.d.start_method}>"
                "</s:Body></s:Envelope>").encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_TYPE": "text/xml; charset=utf-8",
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "HTTP_SOAPACTION": '""',
                   "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http", "SERVER_NAME": "localhost",
                   "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost", "QUERY_STRING": ""}
        fault = etree.fromstring(b"".join(self.app(environ, lambda *a: None))).find(".//faultstring")
        if fault is not None:
            return "refused", fault.text
        return "submitted", json.loads(Path(self.spool.files(sid).incoming).read_bytes())["inputs"]


def through_submit(spool: Spool, d, fields: dict[str, str], sid: str) -> tuple[str, object]:
    try:
        done = submit(spool, d, sid, text_inputs(d, fields), OWNER, AUTH)
    except SubmitError as e:
        return "refused", e.message
    return "submitted", done.spec.inputs


TEXTS = [
    {"req": "3"}, {"req": " 4 "}, {"req": "+4"}, {"req": "-0"}, {"req": ""}, {"req": "0x10"}, {"req": "1_0"},
    {"req": "٣"}, {"req": "99999999999999999999"}, {"req": "1" * 1100}, {"req": " " * 1030 + "1"},
    {"req": "1", "n": ""}, {"req": "1", "n": "  "}, {"req": "1", "n": "5.0"}, {"req": "1", "n": "١٢"},
    {"req": "1", "x": "INF"}, {"req": "1", "x": "NaN"}, {"req": "1", "x": "1e-1"}, {"req": "1", "x": " .5 "},
    {"req": "1", "x": "infinity"}, {"req": "1", "x": "١"}, {"req": "1", "x": "2"}, {"req": "1", "x": "0." + "0" * 1100},
    {"req": "1", "flag": "true"}, {"req": "1", "flag": "1"}, {"req": "1", "flag": "0"}, {"req": "1", "flag": "false"},
    {"req": "1", "flag": "yes"}, {"req": "1", "flag": "TRUE"}, {"req": "1", "flag": " true "}, {"req": "1", "flag": ""},
    {"req": "1", "name": ""}, {"req": "1", "name": " x "}, {"req": "1", "name": "01234567890"}, {"req": "1", "name": "ünï"},
    {},
]


def test_text_inputs_get_the_soap_starts_answer(typed, spool):
    """Every text value is accepted as the same typed value, or refused with the same words, as by the SOAP start."""
    soap = SoapStart(typed, spool)
    for i, fields in enumerate(TEXTS):
        assert soap(fields) == through_submit(spool, typed, fields, f"text-{i}"), fields


def test_an_arabic_indic_digit_is_refused_as_the_soap_start_refuses_it(typed, spool):
    """int() takes '٣' for 3 (the console's form did), XML Schema's xs:integer does not (the SOAP start)."""
    with pytest.raises(SubmitError) as e:
        text_inputs(typed, {"req": "٣"})
    assert "invalid request: element 'req': '٣' is not a valid value of the atomic type 'xs:integer'." == e.value.message


def test_a_huge_integer_gets_the_range_message_not_not_an_integer(typed, spool):
    """'99999999999999999999' is an integer, too big: the SOAP start names the bound (the console said "not an integer")."""
    with pytest.raises(SubmitError) as e:
        submit(spool, typed, "big", text_inputs(typed, {"req": "99999999999999999999"}), OWNER, AUTH)
    assert "invalid input req: must be <= 10, got 99999999999999999999" == e.value.message
    assert "input" == e.value.kind


def test_booleans_are_xml_schema_booleans(typed):
    """true/false/1/0 only, as the SOAP start reads them; jobctl's yes/on/off are refused."""
    assert [True, True, False, False] == [text_inputs(typed, {"flag": t})["flag"] for t in ("true", "1", "false", "0")]
    for text in ("yes", "on", "True"):
        with pytest.raises(SubmitError, match="xs:boolean"):
            text_inputs(typed, {"flag": text})


def test_a_new_serviceid_is_submitted_and_a_known_one_answers_its_spec(typed, spool):
    """The first submit drops incoming/<sid>.json; the second drops nothing and hands back the first spec."""
    first = submit(spool, typed, "job-1", {"req": 2}, OWNER, AUTH)
    again = submit(spool, typed, "job-1", {"req": 7}, {"username": "bob", "project": None}, None)
    assert (True, False) == (first.new, again.new)
    assert first.spec == again.spec == JobSpec.parse_bytes(Path(spool.files("job-1").incoming).read_bytes(),
                                                           {typed.name: typed})
    assert ({"req": 2, "n": 5, "x": 0.5, "flag": False, "name": "a"}, OWNER, AUTH) == (
        first.spec.inputs, first.spec.owner, first.spec.auth_url)
    assert type(first.sid) is ServiceId
    written = json.loads(Path(spool.files("job-1").incoming).read_bytes())
    assert set(written) == {f.name for f in dataclasses.fields(JobSpec)}  # to_json names every field itself


@pytest.mark.parametrize("sid, message", [
    (None, "serviceID: required"), ("", "serviceID: required"),
    ("../x", "serviceID '../x' is invalid: 1-128 characters, letters, digits, '.', '_' or '-', "
             "starting with a letter or digit"),
])
def test_a_bad_serviceid_is_refused_first(typed, spool, sid, message):
    """The serviceID is checked before the inputs, with the SOAP start's words; nothing is written."""
    with pytest.raises(SubmitError) as e:
        submit(spool, typed, sid, {"req": "bad"}, OWNER, AUTH)
    assert (message, "service_id") == (e.value.message, e.value.kind)
    assert [] == list(spool.incoming.iterdir())


def test_a_storage_refusal_is_one_submit_error_with_the_soap_starts_words(typed, spool, monkeypatch):
    """ENOSPC while dropping the spec: kind "storage", the errno's name, the SOAP start's message."""
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(spool, "submit", full)
    with pytest.raises(SubmitError) as e:
        submit(spool, typed, "job-2", {"req": 1}, OWNER, AUTH)
    assert ("storage", "ENOSPC") == (e.value.kind, e.value.errno_name)
    assert ("the service cannot accept work right now: its storage refuses writes (ENOSPC); "
            "nothing was recorded, try again later") == e.value.message


def test_the_soap_start_maps_submit_errors_to_its_faults(typed, spool, monkeypatch):
    """Operations.start: a refused input is InvalidRequest, a refused write ServiceUnavailable, same words."""
    ops = Operations(spool, {typed.name: typed}, Auth(), abort_wait_seconds=0)
    with pytest.raises(InvalidRequest, match="^invalid input req: must be <= 10, got 11$"):
        ops.start(typed, "job-3", "t", f"auth={AUTH},", {"req": 11})
    monkeypatch.setattr(spool, "submit", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "read-only")))
    with pytest.raises(ServiceUnavailable, match=r"storage refuses writes \(EROFS\)"):
        ops.start(typed, "job-3", "t", f"auth={AUTH},", {"req": 1})

"""Bad requests get a clear fault and leave nothing in the spool.

Why: the façade is the only door into the spool, and the WFM shows a
faultstring to a user, so every refusal must name what was wrong, and a
refused request must not have created a job (incoming/ and runs/ stay empty).
The façade here runs without a supervisor, over a spool no valid request ever
reaches, so "empty" is checked after every test.
"""
from __future__ import annotations

import gzip
import threading
import time
import zlib

import pytest
import requests

from facade_harness import (BARE_MAX_BODY, CLIENTS, BrokenAuthManagers, CountingProxy, Soap, bare_stack,  # noqa: F401
                            devauth, fault_string, new_sid, soap_envelope, start_devauth)
from jobs.spec import JobSpec
from jobs.spool import Spool

TOKEN_FAULT = "Session-token validation failed"


def fault_detail_tags(response: requests.Response) -> list[str]:
    from lxml import etree
    detail = etree.fromstring(response.content).find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault/detail")
    return [] if detail is None else [child.tag for child in detail]


@pytest.fixture(scope="module")
def soap(bare_stack):  # noqa: F811
    return Soap(bare_stack.wsdl)


@pytest.fixture(scope="module")
def token(devauth):  # noqa: F811
    return devauth.token("alice")


@pytest.fixture(scope="module")
def broken_auth(bare_stack) -> BrokenAuthManagers:  # noqa: F811
    return bare_stack.broken


@pytest.fixture(autouse=True)
def spool_stays_empty(bare_stack):  # noqa: F811
    assert [] == bare_stack.spool_entries()
    yield
    assert [] == bare_stack.spool_entries()


def start_envelope(sid: str, token: str, extra: str, seconds: str) -> str:
    return soap_envelope(
        f"<w:startWaiter><w:serviceID>{sid}</w:serviceID><w:sessionToken>{token}</w:sessionToken>"
        f"<w:extraParameters>{extra}</w:extraParameters><w:secondsToWait>{seconds}</w:secondsToWait></w:startWaiter>")


# -- inputs --------------------------------------------------------------------------

def test_non_integer_seconds_is_refused_naming_the_field(bare_stack, token):  # noqa: F811
    """secondsToWait=abc (sent raw: zeep and suds would refuse to send it) names the element."""
    r = bare_stack.post(start_envelope(new_sid(), token, bare_stack.extra().replace("&", "&amp;"), "abc"))
    assert 500 == r.status_code
    message = fault_string(r)
    assert "secondsToWait" in message and "'abc'" in message and "integer" in message


@pytest.mark.parametrize("kind", CLIENTS)
def test_negative_seconds_is_refused(kind, soap, bare_stack, token):  # noqa: F811
    """A negative secondsToWait is outside the definition's bounds."""
    f = soap.fault(kind, "startWaiter", new_sid(), token, bare_stack.extra(), -5)
    assert "Client.InvalidRequest" in f.code
    assert "secondsToWait: must be >= 0, got -5" in f.message


@pytest.mark.parametrize("kind", CLIENTS)
def test_huge_seconds_is_refused(kind, soap, bare_stack, token):  # noqa: F811
    """A secondsToWait far beyond a day (and beyond 64 bits) is refused with the bound."""
    f = soap.fault(kind, "startWaiter", new_sid(), token, bare_stack.extra(), 10 ** 30)
    assert "secondsToWait: must be <= 86400" in f.message


@pytest.mark.parametrize("kind", CLIENTS)
def test_missing_extra_parameters_is_refused(kind, soap, token):
    """Without extraParameters there is no authentication manager to ask."""
    f = soap.fault(kind, "startWaiter", new_sid(), token, None, 1)
    assert "Client.InvalidRequest" in f.code
    assert "extraParameters: missing" in f.message


@pytest.mark.parametrize("extra", ["garbage", "auth", "=http://x,", "gss=http://x,nonsense,"])
def test_malformed_extra_parameters_are_refused(extra, soap, token):
    """Entries that are not key=value are named in the fault."""
    f = soap.fault("zeep", "startWaiter", new_sid(), token, extra, 1)
    assert "extraParameters: malformed entry" in f.message


def test_extra_parameters_without_auth_are_refused(soap, token):
    """extraParameters must carry auth=<WSDL URL>."""
    f = soap.fault("suds", "startWaiter", new_sid(), token, "gss=http://gss.example/?wsdl=1,WFM=http://w,", 1)
    assert "no 'auth=' entry" in f.message


@pytest.mark.parametrize("url", ["ftp://host/auth?wsdl", "file:///etc/passwd", "not a url"])
def test_auth_url_must_be_http(url, soap, token):
    """Only http(s) authentication managers are asked; anything else is refused before any request."""
    f = soap.fault("zeep", "startWaiter", new_sid(), token, f"auth={url},", 1)
    assert "is not an http(s) URL" in f.message


# -- authentication ------------------------------------------------------------------

@pytest.mark.parametrize("kind", CLIENTS)
def test_invalid_token_gets_the_reference_fault(kind, soap, bare_stack):  # noqa: F811
    """A token the authentication manager does not know raises TokenValidationFailedFault."""
    f = soap.fault(kind, "startWaiter", new_sid(), "not-a-token", bare_stack.extra(), 1)
    assert TOKEN_FAULT == f.message
    assert "TokenValidationFailed" in f.code
    assert "unknown or expired" in f.detail


def test_empty_token_gets_the_reference_fault(soap, bare_stack):  # noqa: F811
    """An empty session token never reaches the authentication manager."""
    f = soap.fault("zeep", "startWaiter", new_sid(), "", bare_stack.extra(), 1)
    assert TOKEN_FAULT == f.message
    assert "no session token" in f.detail


def test_unreachable_auth_manager_faults_at_once(soap, token, broken_auth):
    """A closed port is reported as 'authentication manager unavailable' without waiting."""
    url = broken_auth.url("dead")
    began = time.monotonic()
    f = soap.fault("suds", "startWaiter", new_sid(), token, f"auth={url},", 1)
    assert time.monotonic() - began < 5
    assert "AuthManagerUnavailable" in f.code
    assert f"authentication manager unavailable: {url} could not be reached" in f.message


def test_silent_auth_manager_faults_within_the_timeout(soap, token, broken_auth):
    """An authentication manager that accepts the connection but never answers costs AUTH_TIMEOUT_SECONDS, not a worker."""
    began = time.monotonic()
    f = soap.fault("zeep", "startWaiter", new_sid(), token, f"auth={broken_auth.url('silent')},", 1)
    elapsed = time.monotonic() - began
    assert 1.0 < elapsed < 10, elapsed
    assert "AuthManagerUnavailable" in f.code and "did not answer within 1.5 s" in f.message


def test_auth_failures_do_not_block_other_requests(bare_stack, soap, token, broken_auth):  # noqa: F811
    """While requests hang on a silent authentication manager, the WSDL and other calls are still served."""
    extra = f"auth={broken_auth.url('silent')},"
    # separate clients per thread: a suds client is not thread-safe
    hung = [threading.Thread(target=lambda: Soap(bare_stack.wsdl).fault(
        "suds", "startWaiter", new_sid(), token, extra, 1)) for _ in range(4)]
    for t in hung:
        t.start()
    try:
        time.sleep(0.3)
        began = time.monotonic()
        assert 200 == requests.get(bare_stack.wsdl, timeout=10).status_code
        f = soap.fault("zeep", "getServiceStatus", new_sid(), token)
        assert "UnknownServiceID" in f.code
        assert time.monotonic() - began < 1.0
    finally:
        for t in hung:
            t.join(30)


def test_auth_manager_errors_are_not_echoed(soap, token, broken_auth):
    """An allowed manager answering 403 with a body: the fault says so, without its status text or body."""
    url, asked = broken_auth.url("error", "/allowed/am?wsdl"), len(broken_auth.requests)
    f = soap.fault("zeep", "startWaiter", new_sid(), token, f"auth={url},", 1)
    assert len(broken_auth.requests) > asked  # it was asked: it is allowed
    assert "AuthManagerUnavailable" in f.code
    assert f"authentication manager unavailable: {url} answered with an error" in f.message
    for leak in (broken_auth.ERROR_BODY, "403", "Forbidden", "HTTP Error"):
        assert leak not in (f.message + f.detail).replace(url, "")


# -- the allow-list AUTH_MANAGERS: nobody else is ever asked ---------------------------------------

def test_rogue_auth_manager_is_refused_unasked(soap, bare_stack, tmp_path):  # noqa: F811
    """A real auth manager of the caller's own, vouching for its own tokens, gets no request and starts no job."""
    rogue = start_devauth(tmp_path / "rogue")
    proxy = CountingProxy(rogue.port)
    try:
        url = f"http://127.0.0.1:{proxy.port}/authManager/AuthManager?wsdl"
        rogue_token = rogue.token("alice")
        for kind in CLIENTS:
            f = soap.fault(kind, "startWaiter", new_sid(), rogue_token, bare_stack.extra(url), 1)
            assert "Client.InvalidRequest" in f.code
            assert f"authentication manager '{url}' is not an allowed authentication manager" in f.message
        assert 0 == proxy.connections
        assert [] == bare_stack.spool_entries()
    finally:
        proxy.close()
        rogue.stop()


@pytest.mark.parametrize("path", ["/other?wsdl", "/allowedx/am?wsdl", "/allowed/../other?wsdl",
                                  "/allowed/%2e%2e/other?wsdl", "/allowed%2Fx?wsdl", "/allowed/am?wsdl#x"])
def test_urls_outside_the_allowed_prefix_are_never_fetched(path, soap, token, broken_auth):
    """Only paths at or below the allowed prefix are asked; tricks around the boundary are refused unasked."""
    url = broken_auth.url("error", path)
    asked = len(broken_auth.requests)
    f = soap.fault("suds", "startWaiter", new_sid(), token, f"auth={url},", 1)
    assert "is not an allowed authentication manager" in f.message
    assert asked == len(broken_auth.requests)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://127.0.0.1:{error}@127.0.0.1:{error}/allowed/am?wsdl",  # userinfo
    "http://localhost:{error}/allowed/am?wsdl",  # another name of the same host is another host
    "https://127.0.0.1:{error}/allowed/am?wsdl",
])
def test_other_hosts_and_userinfo_are_refused_unasked(url, soap, token, broken_auth):
    """Metadata endpoints, userinfo tricks, other names or schemes: a fault naming the URL, and no request."""
    port = broken_auth.url("error", "").rsplit(":", 1)[1]
    url = url.format(error=port)
    asked = len(broken_auth.requests)
    f = soap.fault("zeep", "startWaiter", new_sid(), token, f"auth={url},", 1)
    assert "Client.InvalidRequest" in f.code
    assert f"'{url}' is not an allowed authentication manager" in f.message
    assert "HTTP Error" not in f.message and "Forbidden" not in f.message
    assert asked == len(broken_auth.requests)


def test_polls_check_the_recorded_auth_manager_too(soap, token, bare_stack, broken_auth):  # noqa: F811
    """A spec dropped by other means, naming another manager: polls refuse it without fetching it."""
    sid = new_sid("dropped")
    url = broken_auth.url("error", "/other?wsdl")
    spool = Spool(bare_stack.spool)
    assert spool.submit(JobSpec(sid, "waiter", {"secondsToWait": 1}, url,
                                {"username": "alice", "project": "demo"}).to_json(), sid)
    asked = len(broken_auth.requests)
    try:
        for kind in CLIENTS:
            f = soap.fault(kind, "getServiceStatus", sid, token)
            assert f"'{url}' is not an allowed authentication manager" in f.message
        assert asked == len(broken_auth.requests)
    finally:
        spool.incoming_path(sid).unlink()


# -- serviceIDs ----------------------------------------------------------------------

@pytest.mark.parametrize("sid", ["../../etc", "a/b", "..", ".hidden", "x" * 129, "spaces are bad", "semi;colon",
                                 "\u00e9t\u00e9"])
def test_unsafe_service_ids_are_refused(sid, soap, bare_stack, token):  # noqa: F811
    """A serviceID becomes a directory name: path tricks, odd characters and overlong IDs are refused."""
    f = soap.fault("zeep", "startWaiter", sid, token, bare_stack.extra(), 1)
    assert "Client.InvalidRequest" in f.code
    assert "serviceID" in f.message and "1-128 characters" in f.message


@pytest.mark.parametrize("kind", CLIENTS)
def test_missing_service_id_is_refused(kind, soap, bare_stack, token):  # noqa: F811
    """serviceID is required by every operation."""
    assert "serviceID: required" in soap.fault(kind, "startWaiter", None, token, bare_stack.extra(), 1).message
    assert "serviceID: required" in soap.fault(kind, "getServiceStatus", None, token).message


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("op,extra_args", [("getServiceStatus", ()), ("abortService", ()),
                                           ("notifyService", ("hello",))])
def test_unknown_service_id_faults(kind, op, extra_args, soap, token):
    """Status, abort and notify for a serviceID that was never started raise UnknownServiceIDFault."""
    f = soap.fault(kind, op, "never-started-42", token, *extra_args)
    assert "UnknownServiceID" in f.code
    assert "no Waiter job with serviceID 'never-started-42'" in f.message


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("op,extra_args", [("getServiceStatus", ()), ("abortService", ()),
                                           ("notifyService", ("hello",))])
def test_without_a_valid_token_an_unknown_service_id_is_not_named(kind, op, extra_args, soap):
    """A refused token gets the token fault for a serviceID that was never started, as for one that was."""
    f = soap.fault(kind, op, "never-started-43", "not-a-token", *extra_args)
    assert "TokenValidationFailed" in f.code and TOKEN_FAULT == f.message
    assert "the token is unknown or expired" in f.detail


# -- hostile XML ---------------------------------------------------------------------

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="waiter.sintef.no">
<soapenv:Body><w:getServiceStatus><w:serviceID>&lol3;</w:serviceID></w:getServiceStatus></soapenv:Body>
</soapenv:Envelope>"""
XXE = """<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="waiter.sintef.no">
<soapenv:Body><w:getServiceStatus><w:serviceID>&xxe;</w:serviceID></w:getServiceStatus></soapenv:Body>
</soapenv:Envelope>"""
LOWER = XXE.replace("DOCTYPE", "doctype")
ENTITY_ONLY = '<?xml version="1.0"?><!ENTITY x "y"><a/>'
PARAMETER = '<!DocType a SYSTEM "http://127.0.0.1:1/evil.dtd"><a/>'


@pytest.mark.parametrize("body", [LAUGHS, XXE, LOWER, ENTITY_ONLY, PARAMETER],
                         ids=["billion-laughs", "xxe", "lowercase", "entity", "external-dtd"])
def test_doctype_and_entities_are_refused_before_parsing(body, bare_stack):  # noqa: F811
    """Any <!DOCTYPE or <!ENTITY gets a fault naming the rule; no file content ever comes back."""
    r = bare_stack.post(body)
    assert 500 == r.status_code
    assert "(<!DOCTYPE, <!ENTITY) are not accepted" in fault_string(r)
    assert "root:" not in r.text


@pytest.mark.parametrize("encode", [
    lambda s: s.encode("utf-16"),
    lambda s: s.encode("utf-16-le"),
    lambda s: s.replace('version="1.0"?>', 'version="1.0" encoding="UTF-7"?>').encode(),
    lambda s: "\ufeff".encode("utf-32") + s.encode("utf-32")[4:],
    lambda s: s.encode("latin-1", "ignore") + b"\xe9\xff",
], ids=["utf16-bom", "utf16-no-bom", "utf7-declared", "utf32", "invalid-utf8"])
def test_non_utf8_bodies_are_refused(encode, bare_stack):  # noqa: F811
    """Encodings that could hide a DOCTYPE from a byte check are refused outright."""
    r = bare_stack.post(encode(XXE.replace("<!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>", "")))
    assert 500 == r.status_code
    assert "UnsupportedEncoding" in r.text
    assert "UTF-8" in fault_string(r)


def test_non_utf8_content_type_charset_is_refused(bare_stack):  # noqa: F811
    """A Content-Type charset other than UTF-8 is refused, since spyne would decode with it."""
    r = bare_stack.post(soap_envelope("<w:getServiceStatus/>"), {"Content-Type": "text/xml; charset=utf-7"})
    assert 500 == r.status_code
    assert "charset 'utf-7' is not supported" in fault_string(r)


@pytest.mark.parametrize("name,compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                           ("GZIP, identity", gzip.compress)])
def test_compressed_bodies_are_refused_naming_content_encoding(name, compress, bare_stack):  # noqa: F811
    """A compressed request gets a fault that names Content-Encoding and says what to send instead."""
    r = bare_stack.post(compress(soap_envelope("<w:getServiceStatus/>").encode()), {"Content-Encoding": name})
    assert 500 == r.status_code
    assert "UnsupportedContentEncoding" in r.text
    assert f"Content-Encoding '{name}' is not supported; send an uncompressed body" == fault_string(r)

def test_oversized_body_is_refused_with_413(bare_stack):  # noqa: F811
    """A body over MAX_BODY_BYTES is refused from its Content-Length, before it is read."""
    big = soap_envelope("<w:notifyService><w:message>" + "x" * (BARE_MAX_BODY + 10) + "</w:message></w:notifyService>")
    r = bare_stack.post(big)
    assert 413 == r.status_code
    assert f"request body larger than {BARE_MAX_BODY} bytes" in fault_string(r)
    assert ["{waiter.sintef.no}InvalidRequestFault"] == fault_detail_tags(r)  # the declared element, for typed clients


def test_oversized_chunked_body_is_refused_with_413(bare_stack):  # noqa: F811
    """A chunked body (no Content-Length) is cut off at MAX_BODY_BYTES while reading."""
    def chunks():
        yield soap_envelope("<w:notifyService><w:message>").encode()
        for _ in range(BARE_MAX_BODY // 1024 + 2):
            yield b"y" * 1024
    r = requests.post(bare_stack.base_url, data=chunks(), timeout=30, headers={"Content-Type": "text/xml"})
    assert 413 == r.status_code
    assert "larger than" in fault_string(r)
    assert ["{waiter.sintef.no}InvalidRequestFault"] == fault_detail_tags(r)


# -- wrong operations ----------------------------------------------------------------

def test_unknown_operation_gets_a_fault_listing_the_operations(bare_stack):  # noqa: F811
    """A body element that is no operation of the service is named, with the operations offered."""
    r = bare_stack.post(soap_envelope("<w:deleteEverything><w:serviceID>x</w:serviceID></w:deleteEverything>"))
    assert 500 == r.status_code
    message = fault_string(r)
    assert "unknown operation '{waiter.sintef.no}deleteEverything'" in message
    assert "abortService, getServiceStatus, notifyService, startWaiter" in message


def test_operation_in_another_namespace_is_unknown(bare_stack):  # noqa: F811
    """The right name in the wrong namespace is not the operation."""
    r = bare_stack.post(soap_envelope("<w:getServiceStatus/>", ns="urn:other"))
    assert "unknown operation '{urn:other}getServiceStatus'" in fault_string(r)


def test_soap_action_disagreeing_with_the_body_is_refused(bare_stack, token):  # noqa: F811
    """SOAPAction: abortService on a startWaiter body is a fault, not a start."""
    body = start_envelope(new_sid(), token, bare_stack.extra().replace("&", "&amp;"), "1")
    r = bare_stack.post(body, {"SOAPAction": '"abortService"'})
    assert 500 == r.status_code
    assert "SOAPAction 'abortService' does not match the operation 'startWaiter'" in fault_string(r)


def test_not_xml_gets_a_syntax_fault(bare_stack):  # noqa: F811
    """A body that is not XML at all is a client fault, with the declared InvalidRequestFault element."""
    r = bare_stack.post("this is not xml")
    assert 500 == r.status_code
    assert "Client" in r.text
    assert ["{waiter.sintef.no}InvalidRequestFault"] == fault_detail_tags(r)


def test_unexpected_element_is_named(bare_stack):  # noqa: F811
    """An element the operation does not have is named in the fault."""
    r = bare_stack.post(soap_envelope("<w:getServiceStatus><w:bogus>1</w:bogus></w:getServiceStatus>"))
    message = fault_string(r)
    assert message.startswith("invalid request: element 'bogus'")


@pytest.mark.parametrize("inner,text", [
    ("", "the SOAP envelope has no Body element"),
    ("<soapenv:Body/>", "the SOAP Body is empty"),
    ("<soapenv:Body><!-- nothing --></soapenv:Body>", "the SOAP Body is empty"),
    ("<soapenv:Body><soapenv:Fault><faultcode>x</faultcode></soapenv:Fault></soapenv:Body>",
     "a request cannot carry a SOAP Fault"),
])
def test_malformed_envelopes_get_clear_faults(inner, text, bare_stack):  # noqa: F811
    """Envelopes spyne itself would crash on are answered with a fault saying what is missing."""
    r = bare_stack.post(f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">{inner}'
                        "</soapenv:Envelope>")
    assert 500 == r.status_code
    assert text in fault_string(r)


def test_empty_post_gets_a_clear_fault(bare_stack):  # noqa: F811
    """An empty POST says what to send instead of failing inside spyne."""
    r = bare_stack.post(b"")
    assert 500 == r.status_code
    assert "empty request body" in fault_string(r)

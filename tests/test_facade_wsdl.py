"""The façade's WSDL and mounting: what a workflow registered against the reference waiter relies on.

Why pin it: the workflow manager generated its calls from the reference
waiter's WSDL, so operation, part and element names, their order and XSD types
must not drift; these tests read the WSDL served by the real gunicorn process.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from lxml import etree

from facade_harness import bare_stack, devauth, make_stack, suds_client, zeep_client  # noqa: F401
from harness import ROOT, write_env

WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"
SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
NS = {"wsdl": WSDL, "xs": XSD, "soap": SOAP}
TNS = "waiter.sintef.no"

EXPECTED_TYPES = {
    "startWaiter": [("serviceID", "xs:string"), ("sessionToken", "xs:string"),
                    ("extraParameters", "xs:string"), ("secondsToWait", "xs:integer")],
    "startWaiterResponse": [("status_base64", "xs:string"), ("result", "xs:string")],
    "getServiceStatus": [("serviceID", "xs:string"), ("sessionToken", "xs:string")],
    "getServiceStatusResponse": [("status_base64", "xs:string"), ("result", "xs:string")],
    "abortService": [("serviceID", "xs:string"), ("sessionToken", "xs:string")],
    "abortServiceResponse": [("success", "xs:boolean")],
    "notifyService": [("serviceID", "xs:string"), ("sessionToken", "xs:string"), ("message", "xs:string")],
    "notifyServiceResponse": [("response", "xs:string")],
}
OPERATIONS = ["abortService", "getServiceStatus", "notifyService", "startWaiter"]


@pytest.fixture(scope="module")
def wsdl(bare_stack):  # noqa: F811
    response = requests.get(bare_stack.wsdl, timeout=10)
    assert response.status_code == 200
    return etree.fromstring(response.content)


def test_wsdl_declares_the_four_operations_in_the_waiter_namespace(wsdl):
    """The portType has exactly the protocol's operations and the target namespace is waiter.sintef.no."""
    assert TNS == wsdl.get("targetNamespace")
    ops = sorted(op.get("name") for op in wsdl.findall("wsdl:portType/wsdl:operation", NS))
    assert OPERATIONS == ops


def test_wsdl_pins_element_names_order_and_xsd_types(wsdl):
    """Each request and response element has the reference waiter's fields, in order, with its XSD types."""
    schema = wsdl.find(f"wsdl:types/xs:schema[@targetNamespace='{TNS}']", NS)
    assert "qualified" == schema.get("elementFormDefault")
    for type_name, fields in EXPECTED_TYPES.items():
        ctype = schema.find(f"xs:complexType[@name='{type_name}']", NS)
        assert ctype is not None, type_name
        actual = [(e.get("name"), e.get("type")) for e in ctype.findall("xs:sequence/xs:element", NS)]
        assert fields == actual, type_name
        element = schema.find(f"xs:element[@name='{type_name}']", NS)
        assert f"tns:{type_name}" == element.get("type")


def test_wsdl_messages_are_document_literal_with_one_part_per_element(wsdl):
    """Every message has one part named like its element; the binding is document/literal with soapAction = operation."""
    for op in OPERATIONS:
        for name in (op, op + "Response"):
            parts = wsdl.findall(f"wsdl:message[@name='{name}']/wsdl:part", NS)
            assert [(name, f"tns:{name}")] == [(p.get("name"), p.get("element")) for p in parts]
    binding = wsdl.find("wsdl:binding", NS)
    assert "document" == binding.find("soap:binding", NS).get("style")
    for op in binding.findall("wsdl:operation", NS):
        assert op.get("name") == op.find("soap:operation", NS).get("soapAction")
        assert {"literal"} == {b.get("use") for b in op.iterfind(".//soap:body", NS)}


def test_wsdl_declares_token_validation_fault_on_every_operation(wsdl):
    """TokenValidationFailedFault (the reference's fault) and the job faults are declared where they can occur."""
    faults = {op.get("name"): {f.get("name") for f in op.findall("wsdl:fault", NS)}
              for op in wsdl.findall("wsdl:portType/wsdl:operation", NS)}
    for op in OPERATIONS:
        assert {"TokenValidationFailedFault", "InvalidRequestFault", "AuthManagerUnavailableFault",
                "WrongProjectFault"} <= faults[op], op
    assert "JobFailedFault" in faults["getServiceStatus"]
    assert "UnknownServiceIDFault" in faults["getServiceStatus"]
    assert "JobNotActiveFault" in faults["notifyService"]


def test_wsdl_address_points_at_the_context_root(wsdl, bare_stack):  # noqa: F811
    """The service address is <CONTEXT_ROOT>/Waiter on the façade's port."""
    address = wsdl.find("wsdl:service/wsdl:port/soap:address", NS).get("location")
    assert bare_stack.base_url == address


def test_zeep_and_suds_read_the_signatures(bare_stack):  # noqa: F811
    """Both client libraries see the four methods with the reference's parameter names, in order."""
    z = zeep_client(bare_stack.wsdl)
    binding = next(iter(z.wsdl.bindings.values()))
    s = suds_client(bare_stack.wsdl)
    port = s.wsdl.services[0].ports[0]
    for op, fields in EXPECTED_TYPES.items():
        if op.endswith("Response"):
            continue
        names = [name for name, _ in fields]
        assert names == [name for name, _ in binding.get(op).input.body.type.elements], op
        method = port.methods[op]
        assert names == [p[0] for p in method.binding.input.param_defs(method)], op


def test_other_paths_are_404_and_list_the_services(bare_stack):  # noqa: F811
    """Only <CONTEXT_ROOT>/<service> is served; anything else is a 404 naming the WSDL URLs."""
    base = f"http://127.0.0.1:{bare_stack.config.facade_port}"
    for path in ("/", "/demo-waiter", "/demo-waiter/Nope", "/other/Waiter", "/demo-waiter/Waiter/x"):
        r = requests.get(base + path + "?wsdl", timeout=10)
        assert 404 == r.status_code, path
        assert "/demo-waiter/Waiter?wsdl" in r.text


def test_every_definition_gets_its_own_service(bare_stack):  # noqa: F811
    """The test definitions Tree and ExitWith are mounted beside the waiter, each in its own namespace."""
    for service, ns in (("Tree", "tree.test"), ("ExitWith", "exitwith.test")):
        r = requests.get(bare_stack.url(service) + "?wsdl", timeout=10)
        assert 200 == r.status_code
        assert ns == etree.fromstring(r.content).get("targetNamespace")


def test_bad_context_root_stops_start_up_with_its_message(tmp_path):
    """`python -m facade` refuses a CONTEXT_ROOT that is not /<project>-<service> and says why."""
    env_file = write_env(tmp_path, CONTEXT_ROOT="/Demo_Waiter")
    done = subprocess.run([sys.executable, "-m", "facade"], cwd=ROOT, capture_output=True, text=True,
                          env={"ENV_FILE": str(env_file), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert 2 == done.returncode
    assert "CONTEXT_ROOT='/Demo_Waiter'" in done.stderr
    assert "lowercase letters, digits or hyphens" in done.stderr


@pytest.mark.parametrize("value,message", [
    ("", "AUTH_MANAGERS is empty: set it to the WSDL URL of the platform's authentication manager"),
    ("http://me@auth.example/am", "AUTH_MANAGERS: 'http://me@auth.example/am' is not an http(s) URL without userinfo"),
])
def test_facade_without_a_valid_auth_manager_allow_list_does_not_start(value, message, tmp_path):
    """Fail closed: with no (or a bad) AUTH_MANAGERS `python -m facade` stops at once and says what to set."""
    env_file = write_env(tmp_path, AUTH_MANAGERS=value)
    done = subprocess.run([sys.executable, "-m", "facade"], cwd=ROOT, capture_output=True, text=True,
                          env={"ENV_FILE": str(env_file), "PATH": "/usr/bin:/bin"}, timeout=30)
    assert 2 == done.returncode
    assert message in done.stderr

def test_wsdl_address_follows_the_host_the_client_used(bare_stack):  # noqa: F811
    """Behind a proxy the WSDL names the public host (and https from a trusted proxy), not the first caller's."""
    def address(headers):
        r = requests.get(bare_stack.wsdl, headers=headers, timeout=10)
        return etree.fromstring(r.content).find("wsdl:service/wsdl:port/soap:address", NS).get("location")
    assert "http://services.example.org:8443/demo-waiter/Waiter" == address({"Host": "services.example.org:8443"})
    assert "https://semwes.example.org/demo-waiter/Waiter" == address(
        {"Host": "semwes.example.org", "X-Forwarded-Proto": "https"})
    assert bare_stack.base_url == address({})
    assert address({"Host": 'evil"><x'}).startswith("http://127.0.0.1:")


def _address(url: str, headers: dict) -> str:
    r = requests.get(url, headers=headers, timeout=10)
    return etree.fromstring(r.content).find("wsdl:service/wsdl:port/soap:address", NS).get("location")


def test_wsdl_address_follows_forwarded_host_and_port_from_a_trusted_proxy(bare_stack):  # noqa: F811
    """Behind the platform's reverse proxy (127.0.0.1 is trusted by default) the WSDL names the public URL
    from X-Forwarded-Host/-Proto/-Port, taking the value the nearest proxy added."""
    wsdl = bare_stack.wsdl
    assert "https://public.example.org/demo-waiter/Waiter" == _address(wsdl, {
        "X-Forwarded-Host": "public.example.org", "X-Forwarded-Proto": "https"})
    assert "https://public.example.org:8443/demo-waiter/Waiter" == _address(wsdl, {
        "X-Forwarded-Host": "spoofed.example, public.example.org:80", "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "8443"})
    assert "http://public.example.org/demo-waiter/Waiter" == _address(wsdl, {
        "X-Forwarded-Host": "public.example.org:8080", "X-Forwarded-Port": "80"})
    assert bare_stack.base_url == _address(wsdl, {"X-Forwarded-Host": 'evil"><x'})


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path, devauth):  # noqa: F811
    """With FORWARDED_ALLOW_IPS naming other proxies, a direct client cannot move the WSDL's address."""
    stack = make_stack(tmp_path, devauth, supervisor=False, FORWARDED_ALLOW_IPS="192.0.2.0/24, 2001:db8::1")
    try:
        assert stack.base_url == _address(stack.wsdl, {
            "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"})
    finally:
        stack.stop()


def test_bad_forwarded_allow_ips_stops_start_up(tmp_path):
    """A FORWARDED_ALLOW_IPS entry that is no address or network is named at start-up."""
    env_file = write_env(tmp_path, FORWARDED_ALLOW_IPS="127.0.0.1, proxy.example")
    done = subprocess.run([sys.executable, "-m", "facade"], cwd=ROOT, capture_output=True, text=True,
                          env={"ENV_FILE": str(env_file), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert 2 == done.returncode
    assert "FORWARDED_ALLOW_IPS: 'proxy.example' is not an IP address or network" in done.stderr

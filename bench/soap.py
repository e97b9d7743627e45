"""SOAP 1.1 envelopes built once as bytes, and the few checks the benchmark makes on answers.

Checks are byte searches (no XML parser on the client's hot path); a real
zeep client checks one answer of each kind for correctness (`zeep_spot_check`).
"""
from __future__ import annotations

import re
from html import escape

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_STATUS = re.compile(rb"status_base64>([^<]*)</")
_FAULT = re.compile(rb"<faultstring>([^<]*)</faultstring>")


def envelope(ns: str, operation: str, params: list[tuple[str, object]]) -> bytes:
    inner = "".join(f"<w:{name}>{escape(str(value), quote=False)}</w:{name}>" for name, value in params)
    return (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
            f'xmlns:w="{ns}"><soapenv:Body><w:{operation}>{inner}</w:{operation}></soapenv:Body>'
            f'</soapenv:Envelope>').encode()


def status_body(ns: str, sid: str, token: str) -> bytes:
    return envelope(ns, "getServiceStatus", [("serviceID", sid), ("sessionToken", token)])


def start_body(ns: str, method: str, sid: str, token: str, extra: str, inputs: list[tuple[str, object]]) -> bytes:
    return envelope(ns, method, [("serviceID", sid), ("sessionToken", token), ("extraParameters", extra), *inputs])


class SoapFault(Exception):
    pass


def status_kind(response: bytes) -> str:
    """'completed', 'unchanged' or 'page' for a getServiceStatus answer; SoapFault for a fault."""
    fault = _FAULT.search(response)
    if fault:
        raise SoapFault(fault.group(1).decode(errors="replace"))
    m = _STATUS.search(response)
    if m is None:
        raise SoapFault(f"no status_base64 in the answer: {response[-300:]!r}")
    value = m.group(1)
    if value == b"COMPLETED":
        return "completed"
    if value == b"UNCHANGED":
        return "unchanged"
    return "page"


def not_fault(response: bytes) -> str:
    fault = _FAULT.search(response)
    if fault:
        raise SoapFault(fault.group(1).decode(errors="replace"))
    return "ok"


def zeep_spot_check(wsdl: str, operation: str, *args) -> object:
    """Call one operation with a real SOAP client (zeep): the answer must parse against the WSDL."""
    import zeep
    from zeep.transports import Transport
    client = zeep.Client(wsdl, transport=Transport(timeout=30, operation_timeout=30))
    return getattr(client.service, operation)(*args)

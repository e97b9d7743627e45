"""SOAP 1.1 input protocol with safe parsing and faults a human can act on.

spyne's defaults are already safe, but they are set here explicitly so a
library upgrade cannot turn entity resolution or network access back on.
lxml schema validation checks types before our code runs; its messages
(`:1:0:ERROR:SCHEMASV:SCHEMAV_CVC_DATATYPE_VALID_1_2_1: Element
'{waiter.sintef.no}secondsToWait': ...`) are rewritten into "invalid request:
element 'secondsToWait': ...", and a body naming an operation the service
does not have, or disagreeing with its SOAPAction header, gets a fault that
lists the operations instead of "No matching global declaration".

`TypedSoap11` is the out-protocol: faults raised before any operation runs
(these, spyne's own for unparsable XML) would carry no <detail>, and typed
clients (JAX-WS, .NET, zeep) see no declared fault in them.
"""
from __future__ import annotations

import re
import threading

from lxml import etree
from spyne import Fault
from spyne.protocol.soap import Soap11

from .errors import declared_for

_NS = re.compile(r"\{[^}]*\}")
MAX_FAULT_TEXT = 300


class SafeSoap11(Soap11):
    """Soap11 in-protocol: no DTDs, no entities, no network, clear validation faults."""

    def __init__(self, *args, **kwargs):
        kwargs.update(validator="lxml", resolve_entities=False, no_network=True, load_dtd=False,
                      dtd_validation=False, huge_tree=False, attribute_defaults=False)
        super().__init__(*args, **kwargs)
        self._validation_lock = threading.Lock()  # an XMLSchema's error_log is shared state

    def _known(self) -> str:
        """The service's operation names, for fault messages."""
        tns = self.app.interface.get_tns()
        return ", ".join(sorted(key.partition("}")[2] for key in self.app.interface.service_method_map
                                if key.startswith(f"{{{tns}}}")))

    def decompose_incoming_envelope(self, ctx, message=Soap11.REQUEST):
        envelope, _ = ctx.in_document
        body = envelope.find(f"{{{self.ns_soap_env}}}Body") if envelope is not None else None
        if envelope is not None and envelope.tag == f"{{{self.ns_soap_env}}}Envelope" and body is None:
            raise Fault("Client.NoBody", "the SOAP envelope has no Body element")
        if body is not None and len(body) == 0:  # spyne would fail on both with an AttributeError
            raise Fault("Client.EmptyBody", "the SOAP Body is empty: it must hold one operation element, "
                                            f"one of {self._known()}")
        if message is self.REQUEST and body is not None and body[0].tag == f"{{{self.ns_soap_env}}}Fault":
            raise Fault("Client.UnexpectedFault", "a request cannot carry a SOAP Fault; send an operation element")
        return super().decompose_incoming_envelope(ctx, message)

    def validate_body(self, ctx, message):
        if message is not self.REQUEST:
            return super().validate_body(ctx, message)
        tag = ctx.method_request_string or ""
        if tag not in self.app.interface.service_method_map:
            raise Fault("Client.UnknownOperation",
                        f"unknown operation {_short(tag)!r}: this service offers {self._known()} "
                        f"in namespace {self.app.interface.get_tns()!r}")
        action, local = soap_action(getattr(ctx.transport, "req_env", None) or {}), _NS.sub("", tag)
        if action and action != local:
            raise Fault("Client.SOAPActionMismatch",
                        f"SOAPAction {_short(action)!r} does not match the operation {local!r} in the "
                        f"body; this service offers {self._known()}")
        schema = self.validation_schema
        if schema is None:
            return None
        with self._validation_lock:
            ok = schema.validate(ctx.in_body_doc)
            error = None if ok else schema.error_log.last_error
        if not ok:
            text = _NS.sub("", error.message if error is not None else "does not match the schema")
            if text.startswith("Element"):
                text = "e" + text[1:]
            raise Fault("Client.InvalidRequest", f"invalid request: {_short(text)}")
        return None


class TypedSoap11(Soap11):
    """Soap11 out-protocol: every fault carries an element the WSDL declares for every operation.

    The operations' own faults come with theirs (facade.service); any other
    fault (a schema failure, XML that does not parse, an unknown operation)
    gets an empty InvalidRequestFault element for a Client.* faultcode, else
    InternalErrorFault (facade.errors.declared_for), so a client generated
    from the WSDL raises a declared type instead of an untyped
    SOAPFaultException.
    """

    def fault_to_parent(self, ctx, cls, inst, parent, ns, *args, **kwargs):
        if inst.detail is None:
            tns = self.app.interface.get_tns()
            name = declared_for(str(inst.faultcode)).fault_name
            inst.detail = etree.Element(f"{{{tns}}}{name}", nsmap={"tns": tns})
        return super().fault_to_parent(ctx, cls, inst, parent, ns, *args, **kwargs)


def soap_action(environ: dict) -> str:
    """The operation named by the SOAPAction header ('' when absent or empty); facade.fastpath uses it too."""
    raw = environ.get("HTTP_SOAPACTION", "").strip().strip('"').strip()
    return re.split(r"[/#:]", raw)[-1] if raw else ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_FAULT_TEXT else text[: MAX_FAULT_TEXT - 3] + "..."

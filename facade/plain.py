"""A request in the plain shape, read into exactly the arguments spyne would pass to its operation.

The plain shape: Envelope > Body > one operation element > its parameters,
each with no attribute or child; the protocol's global parameters
(serviceID, sessionToken, extraParameters) with text. Read with the SOAP
protocol's own parser settings (no entities, no network, no DTD; comments
and processing instructions dropped, CDATA read as text), its rule for empty optional inputs (facade.service
DefinitionSoap11.dropped), its schema and lock, and spyne's own conversion
of each value (`from_element`): so the arguments are the ones spyne's
wrapper would be given (facade.guard, in front, has refused any charset
but UTF-8, so spyne's decoding of the body changes nothing). Anything else
is not read here: facade.fastpath then hands the request to spyne untouched.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_BODY = f"{{{SOAP_ENV}}}Body"
GLOBAL_PARAMS = ("serviceID", "sessionToken", "extraParameters")  # without text: spyne answers


@dataclass(frozen=True)
class Signature:
    """One operation's request and answer as spyne declares them."""
    name: str
    tag: str
    fields: tuple[tuple[str, Any], ...]  # (element tag, spyne type), in the message's order
    needs_text: frozenset[str]  # tags of the global parameters
    outputs: int

    @classmethod
    def of(cls, app, name: str) -> "Signature":
        """The signature of operation `name` of a spyne Application."""
        tns = app.interface.get_tns()
        descriptor = app.interface.service_method_map[f"{{{tns}}}{name}"][0]
        fields = tuple((f"{{{tns}}}{key}", typ) for key, typ in descriptor.in_message._type_info.items())
        return cls(name, f"{{{tns}}}{name}", fields,
                   frozenset(tag for tag, _ in fields if tag.partition("}")[2] in GLOBAL_PARAMS),
                   len(descriptor.out_message._type_info))


class PlainReader:
    """Reads plain requests of some operations of one spyne service."""

    def __init__(self, protocol, signatures: list[Signature]):
        self.protocol = protocol
        self.signatures = {s.tag: s for s in signatures}
        self._dropped = getattr(protocol, "dropped", None)  # the in-protocol's rule for empty optional inputs
        self._local = threading.local()

    def _parser(self) -> etree.XMLParser:
        parser = getattr(self._local, "parser", None)
        if parser is None:  # lxml parsers are not thread-safe: one per thread
            parser = self._local.parser = etree.XMLParser(**self.protocol.parser_kwargs)
        return parser

    def read(self, body: bytes) -> tuple[Signature, tuple] | tuple[Signature | None, str | None]:
        """(signature, spyne's arguments) of a plain, valid request of one of the operations.

        Otherwise (signature or None, why): None, None for a request of
        another operation; else the reason spyne gets it ('unparsable',
        'not_plain', 'invalid').
        """
        try:
            root = etree.fromstring(body, self._parser())
        except etree.XMLSyntaxError:
            return None, "unparsable"
        if root.tag != _ENVELOPE or root.attrib or len(root) != 1:
            return None, "not_plain"
        envelope_body = root[0]
        if envelope_body.tag != _BODY or envelope_body.attrib or len(envelope_body) != 1:
            return None, "not_plain"
        op = envelope_body[0]
        sig = self.signatures.get(op.tag)
        if sig is None:
            return None, None
        if op.attrib:
            return sig, "not_plain"
        given: dict[str, etree._Element] = {}
        for child in list(op):
            if not isinstance(child.tag, str) or child.attrib or len(child):
                return sig, "not_plain"
            if self._dropped is not None and self._dropped(op, child):
                op.remove(child)  # spyne's in-protocol drops it before validation too
            else:
                given[child.tag] = child
        if any(not getattr(given.get(tag), "text", None) for tag in sig.needs_text):
            return sig, "not_plain"
        schema = self.protocol.validation_schema
        if schema is not None:
            with self.protocol._validation_lock:
                if not schema.validate(op):
                    return sig, "invalid"
        try:
            args = tuple(None if (child := given.get(tag)) is None else self.protocol.from_element(None, typ, child)
                         for tag, typ in sig.fields)
        except Exception:  # noqa: BLE001 - spyne refuses the value (e.g. an over-long integer): it says so
            return sig, "invalid"
        return sig, args

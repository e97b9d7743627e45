"""WSGI middleware that refuses hostile input before any XML parser sees it.

Why here and not in lxml alone: the parser is configured safely too
(facade.protocol), but a body that is never parsed cannot exploit a parser
bug, an entity expansion or a future default. So, for every POST:

* a body over MAX_BODY_BYTES is refused (Content-Length checked first, and the
  read itself is capped, so a chunked or lying request cannot get past);
* a Content-Encoding other than identity (gzip, deflate, ...) is refused:
  nothing here decompresses, and a compressed body would only be misread;
* anything not UTF-8 is refused: a UTF-16/32 byte-order mark, NUL bytes, an
  invalid UTF-8 sequence, an XML declaration or a Content-Type charset naming
  another encoding (UTF-7 or UTF-16 could hide `<!DOCTYPE` from a byte check);
* any `<!DOCTYPE` or `<!ENTITY`, in any letter case, is refused;
* an empty body is refused (spyne would fail on it with an internal error).

Refusals are SOAP 1.1 faults: HTTP 413 for size, HTTP 500 otherwise (as SOAP
1.1 requires for faults), so SOAP clients report the faultstring; on a
service's path the <detail> holds the element every operation declares.
"""
from __future__ import annotations

import io
import re
from html import escape
from typing import Callable, Iterable

import structlog

from .errors import declared_for
from .fastpath import BODY

_FORBIDDEN = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_CHARSET = re.compile(r"""charset\s*=\s*"?([^";\s]+)""", re.IGNORECASE)
_UTF8_NAMES = {"utf-8", "utf8", "us-ascii", "ascii"}
_BAD_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")
_READ_CHUNK = 64 * 1024

log = structlog.get_logger("facade.guard")  # lazy: configured later, by the entry point


class Refused(Exception):
    def __init__(self, status: str, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def soap_fault(code: str, message: str, namespace: str | None = None) -> bytes:
    """A SOAP 1.1 fault; for a request to a service (its `namespace`), with the declared element in <detail>."""
    detail = ""
    if namespace is not None:
        ns = escape(namespace, quote=True)
        detail = f'<detail><tns:{declared_for(code).fault_name} xmlns:tns="{ns}"/></detail>'
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/">'
        "<soap11env:Body><soap11env:Fault>"
        f"<faultcode>soap11env:{escape(code, quote=False)}</faultcode>"
        f"<faultstring>{escape(message, quote=False)}</faultstring>{detail}"
        "</soap11env:Fault></soap11env:Body></soap11env:Envelope>"
    ).encode("utf-8")


def service_namespace(namespaces: dict[str, str], path: str) -> str | None:
    """The namespace of the service at `path` (matched as facade.app's Router does), if one is there."""
    return namespaces.get(path) or namespaces.get(path.rstrip("/"))


class RequestGuard:
    """Reads, checks and replays the request body; see the module docstring for the rules."""

    def __init__(self, app: Callable, max_body_bytes: int, namespaces: dict[str, str] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.namespaces = namespaces or {}  # service path -> namespace, for the faults' <detail>

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        structlog.contextvars.clear_contextvars()
        if environ.get("REQUEST_METHOD", "GET").upper() == "POST":
            try:
                body = self._checked_body(environ)
            except Refused as r:
                log.warning("request_refused", reason=r.message, path=environ.get("PATH_INFO", ""))
                payload = soap_fault(r.code, r.message,
                                     service_namespace(self.namespaces, environ.get("PATH_INFO") or "/"))
                start_response(r.status, [("Content-Type", "text/xml; charset=utf-8"),
                                          ("Content-Length", str(len(payload))), ("Connection", "close")])
                return [payload]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ[BODY] = body  # checked: facade.fastpath may parse it without reading wsgi.input
        return self.app(environ, start_response)

    def _too_big(self) -> Refused:
        return Refused("413 Request Entity Too Large", "Client.RequestTooLarge",
                       f"request body larger than {self.max_body_bytes} bytes (MAX_BODY_BYTES)")

    def _checked_body(self, environ: dict) -> bytes:
        limit = self.max_body_bytes
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length:
            if not raw_length.isdigit():
                raise Refused("400 Bad Request", "Client.BadRequest", "invalid Content-Length header")
            if int(raw_length) > limit:
                raise self._too_big()
        encoding = (environ.get("HTTP_CONTENT_ENCODING") or "").strip()
        if any(e.strip().lower() not in ("", "identity") for e in encoding.split(",")):
            raise Refused("500 Internal Server Error", "Client.UnsupportedContentEncoding",
                          f"Content-Encoding {encoding[:40]!r} is not supported; send an uncompressed body")
        match = _CHARSET.search(environ.get("CONTENT_TYPE") or "")
        if match and match.group(1).lower() not in _UTF8_NAMES:
            raise Refused("500 Internal Server Error", "Client.UnsupportedEncoding",
                          f"Content-Type charset {match.group(1)[:40]!r} is not supported; send UTF-8")
        body = _read_capped(environ["wsgi.input"], limit + 1)
        if len(body) > limit:
            raise self._too_big()
        if not body.strip():
            raise Refused("500 Internal Server Error", "Client.EmptyRequest",
                          "empty request body: POST a SOAP 1.1 envelope (the WSDL is at ?wsdl)")
        _check_xml_text(body)
        return body


def _read_capped(stream, cap: int) -> bytes:
    parts, size = [], 0
    while size < cap:
        chunk = stream.read(min(_READ_CHUNK, cap - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _check_xml_text(body: bytes) -> None:
    def refuse(code: str, message: str) -> Refused:
        return Refused("500 Internal Server Error", code, message)

    if body.startswith(_BAD_BOMS) or b"\x00" in body:
        raise refuse("Client.UnsupportedEncoding", "request body is not UTF-8 (UTF-16/32 or NUL bytes); send UTF-8")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise refuse("Client.UnsupportedEncoding", f"request body is not valid UTF-8 (byte {e.start}); send UTF-8") from None
    decl = _XML_DECL_ENCODING.match(body.removeprefix(b"\xef\xbb\xbf"))
    if decl and decl.group(1).decode("ascii", "replace").lower() not in _UTF8_NAMES:
        raise refuse("Client.UnsupportedEncoding",
                     f"XML declaration names encoding {decl.group(1)[:40].decode('ascii', 'replace')!r}; "
                     "only UTF-8 is accepted")
    if _FORBIDDEN.search(body):
        raise refuse("Client.ForbiddenMarkup",
                     "document type declarations and entity declarations (<!DOCTYPE, <!ENTITY) are not accepted")

"""getServiceStatus without spyne's generic machinery: the polling hot path.

Every workflow polls each of its jobs every 6 s, so this one operation is
nearly all of the façade's traffic, and spyne spends most of a poll in its
generic steps (contexts, events, deserialising and serialising through type
descriptors), ~0.35 ms against ~0.1 ms for reading the job's files. So
`StatusFastPath` answers a plain, valid getServiceStatus request itself:

* the same lxml parser settings as the SOAP protocol (no entities, no
  network, no DTD), the same schema validation (the protocol's own schema
  and lock), the same SOAPAction rule;
* only the plain shape: Envelope > Body > getServiceStatus > serviceID,
  sessionToken, both with text, no attributes, headers, comments or anything
  else. Any doubt sends the request to spyne, untouched, as before;
* the answer is byte for byte what spyne sends: its template is cut at
  start-up from spyne's own answer to a request (through the whole spyne
  path), then checked against spyne on awkward values; if anything differs
  the fast path stays off and says so in the log.

A body met before is not parsed again (a poller sends the same bytes every
time, and the same bytes parse and validate the same way). On the worker's
event loop (facade.bridge, facade.inline) only a plain poll of a job this
worker answered in the last WARM_SECONDS goes ahead; anything else raises
WouldWait before it is counted, and runs in a thread.

`FACADE_FAST_PATH=false` turns it off (bench S2 measures what it is worth).
Polls it hands to spyne are counted per reason (`off`, `unparsable`,
`not_plain`, `invalid`, `fault`, `answer`) and logged as `fast_path_fallback`
with the counts on the first of each reason and every `LOG_EVERY` after; a
count that grows with the polls says the fast path is not doing its job.

Faults always come from spyne: the operation has already run, so its outcome
travels to spyne in the WSGI environ (`PRECOMPUTED`) and facade.service's
wrapper uses it instead of running the operation again (a slow or dead
authentication manager is not waited for twice).
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog
from lxml import etree

from .inline import must_not_wait, running_on_loop
from .metrics import note
from .protocol import soap_action

PRECOMPUTED = "facade.precomputed"   # environ key: an Outcome for facade.service's wrapper
BODY = "facade.body"                 # environ key: the request body, checked by facade.guard
OPERATION = "getServiceStatus"
_OPERATION_BYTES = OPERATION.encode()
_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_ENVELOPE = f"{{{_SOAP_ENV}}}Envelope"
_BODY = f"{{{_SOAP_ENV}}}Body"
_HEADERS_OK = [("Content-Type", "text/xml; charset=utf-8")]
LOG_EVERY = 1000  # fallbacks of one reason between two fast_path_fallback events
MAX_PARSED = 4096  # bodies of plain polls already parsed and validated: a poller sends the same bytes each time
MAX_PARSED_BYTES = 2048  # ... each at most this long (a poll is ~400 bytes): a few MiB at most
WARM_SECONDS = 60.0  # a job polled here this recently has its files in the page cache: answered on the loop
MAX_WARM = 65536
# values the start-up check sends through both paths: markup, entities, CR, non-ASCII, quotes
_AWKWARD = ("plain", "a & b < c > d", "line\r\nnext\ttab", "quotes \" and ' ]]> end", "ünïcødé ✓ 𝄞",
            "  spaced  ", "&amp; already", "")

log = structlog.get_logger("facade.fastpath")


@dataclass(frozen=True)
class Outcome:
    """What an operation answered (value) or raised (error), for spyne to send."""
    operation: str
    args: tuple
    value: Any = None
    error: BaseException | None = None


def precomputed(ctx, operation: str, args: tuple) -> Outcome | None:
    """The outcome the fast path left for this very call, if any."""
    env = getattr(getattr(ctx, "transport", None), "req_env", None)
    outcome = env.get(PRECOMPUTED) if isinstance(env, dict) else None
    if isinstance(outcome, Outcome) and outcome.operation == operation and outcome.args == tuple(args):
        return outcome
    return None


def xml_text(value: str) -> bytes:
    """Text content escaped the way lxml serialises it, in UTF-8."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
            .encode("utf-8"))


class Template:
    """spyne's answer with its output values cut out."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        self.slots = len(pieces) - 1

    def render(self, values: Iterable[str]) -> bytes:
        out = [self.pieces[0]]
        for value, piece in zip(values, self.pieces[1:]):
            out.append(xml_text(value))
            out.append(piece)
        return b"".join(out)


class StatusFastPath:
    """WSGI: a plain getServiceStatus request answered directly, anything else by spyne."""

    def __init__(self, spyne_app: Callable, status: Callable[[str, str], Any], path: str, enabled: bool = True):
        self.spyne_app = spyne_app
        self.status = status  # the service's getServiceStatus (returns what spyne would be given)
        self.path = path
        app = spyne_app.app
        self.protocol = app.in_protocol
        tns = app.interface.get_tns()
        self.op_tag = f"{{{tns}}}{OPERATION}"
        self.child_tags = (f"{{{tns}}}serviceID", f"{{{tns}}}sessionToken")
        self.single = len(app.interface.service_method_map[self.op_tag][0].out_message._type_info) == 1
        self._local = threading.local()
        self.template: Template | None = None
        self.fallbacks: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._warm: dict[str, float] = {}  # serviceID -> when this worker last answered a poll of it
        self._parsed: dict[bytes, tuple[str, str]] = {}  # body -> (serviceID, token) of a plain, valid poll
        if not enabled:
            log.info("fast_path_off", path=path, reason="FACADE_FAST_PATH=false")
            return
        try:
            self.template = self._build_template()
        except Exception as e:  # noqa: BLE001 - any surprise: stay on spyne, say why
            log.warning("fast_path_off", path=path, reason=f"{type(e).__name__}: {e}")

    # -- serving -------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        args: tuple[str, str] | str | None = None
        try:
            args = self._plain_request(environ)
        except Exception:  # noqa: BLE001 - nothing has run yet: spyne decides
            args = "not_plain"
        if not isinstance(args, tuple):
            must_not_wait("spyne answers it")  # on the loop: nothing counted yet, the thread does it all
            if args is not None:  # None: not a poll at all (a WSDL, another operation)
                self._fell_back(args)
            return self.spyne_app(environ, start_response)
        sid, token = args
        if running_on_loop() and time.monotonic() - self._warm.get(sid, float("-inf")) > WARM_SECONDS:
            must_not_wait("the job's files may not be in memory")  # a cold read would stall every connection
        structlog.contextvars.bind_contextvars(service_id=sid[:140], operation=OPERATION)
        try:
            answer = self.status(sid, token)
        except Exception as e:  # noqa: BLE001 - spyne turns it into the declared fault
            self._fell_back("fault")
            environ[PRECOMPUTED] = Outcome(OPERATION, args, error=e)
            return self.spyne_app(environ, start_response)
        values = (answer,) if self.single else answer
        if (not isinstance(values, tuple) or len(values) != self.template.slots
                or not all(isinstance(v, str) for v in values)):
            self._fell_back("answer")
            environ[PRECOMPUTED] = Outcome(OPERATION, args, value=answer)
            return self.spyne_app(environ, start_response)
        self._warmed(sid)
        body = self.template.render(values)
        note(environ, OPERATION)
        start_response("200 OK", _HEADERS_OK + [("Content-Length", str(len(body)))])
        return [body]

    def _parser(self) -> etree.XMLParser:
        parser = getattr(self._local, "parser", None)
        if parser is None:  # lxml parsers are not thread-safe: one per thread
            parser = self._local.parser = etree.XMLParser(**self.protocol.parser_kwargs)
        return parser

    def _warmed(self, sid: str) -> None:
        """Remember that this worker just read the job's files (sid is checked: the operation accepted it)."""
        now = time.monotonic()
        if len(self._warm) >= MAX_WARM and sid not in self._warm:
            self._warm = {k: t for k, t in self._warm.items() if now - t <= WARM_SECONDS}
            if len(self._warm) >= MAX_WARM:
                self._warm = {}
        self._warm[sid] = now

    def _fell_back(self, reason: str) -> None:
        """Count a poll handed to spyne; log the counts now and then (per worker process)."""
        with self._count_lock:
            n = self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
            counts = dict(self.fallbacks) if n == 1 or n % LOG_EVERY == 0 else None
        if counts is not None:
            log.info("fast_path_fallback", path=self.path, reason=reason, count=n, counts=counts)

    def _plain_request(self, environ: dict) -> tuple[str, str] | str | None:
        """(serviceID, sessionToken) of a plain, valid getServiceStatus request.

        Otherwise why spyne gets it: None when it is no poll at all (not a
        POSTed SOAP body, or another operation named by SOAPAction), else the
        reason it is counted as a fallback.
        """
        body = environ.get(BODY)
        if body is None or environ.get("REQUEST_METHOD") != "POST":
            return None
        if not (environ.get("CONTENT_TYPE") or "").lower().startswith("text/xml"):
            return None
        action = soap_action(environ)
        if action and action != OPERATION:
            return None
        if _OPERATION_BYTES not in body:
            return None
        if self.template is None:
            return "off"
        known = self._parsed.get(body)
        if known is not None:  # the same bytes parse and validate the same way: no need to do it again
            return known
        try:
            root = etree.fromstring(body, self._parser())
        except etree.XMLSyntaxError:
            return "unparsable"
        if root.tag != _ENVELOPE or root.attrib or len(root) != 1:
            return "not_plain"
        envelope_body = root[0]
        if envelope_body.tag != _BODY or envelope_body.attrib or len(envelope_body) != 1:
            return "not_plain"
        op = envelope_body[0]
        if op.tag != self.op_tag or op.attrib or len(op) != 2:
            return None if op.tag != self.op_tag else "not_plain"
        values = []
        for element, tag in zip(op, self.child_tags):
            if element.tag != tag or element.attrib or len(element) or not element.text:
                return "not_plain"
            values.append(element.text)
        schema = self.protocol.validation_schema
        if schema is not None:
            with self.protocol._validation_lock:
                if not schema.validate(op):
                    return "invalid"
        args = (values[0], values[1])
        if len(body) <= MAX_PARSED_BYTES:
            if len(self._parsed) >= MAX_PARSED:
                self._parsed = {}
            self._parsed[body] = args
        return args

    # -- start-up: the template, checked ----------------------------------------
    def _spyne_answer(self, values: tuple[str, ...]) -> tuple[str, list, bytes]:
        """spyne's whole answer to a getServiceStatus whose operation returned `values`."""
        sid, token = "fastpath-check", "token"
        ns = self.op_tag[1:].partition("}")[0]
        body = (f'<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="{_SOAP_ENV}" xmlns:w="{ns}">'
                f"<e:Body><w:{OPERATION}><w:serviceID>{sid}</w:serviceID><w:sessionToken>{token}"
                f"</w:sessionToken></w:{OPERATION}></e:Body></e:Envelope>").encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": self.path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                   "CONTENT_TYPE": "text/xml; charset=utf-8", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
                   "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   PRECOMPUTED: Outcome(OPERATION, (sid, token), value=values[0] if self.single else values)}
        seen = []
        result = self.spyne_app(environ, lambda status, headers, exc_info=None: seen.append((status, headers)))
        try:
            data = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = seen[0]
        return status, headers, data

    def _build_template(self) -> Template:
        slots = 1 if self.single else len(
            self.spyne_app.app.interface.service_method_map[self.op_tag][0].out_message._type_info)
        markers = tuple(f"FASTPATHSLOT{i}MARK" for i in range(slots))
        status, headers, data = self._spyne_answer(markers)
        if status != "200 OK" or [h for h in headers if h[0] != "Content-Length"] != _HEADERS_OK:
            raise ValueError(f"spyne answers {status!r} with headers {headers!r}")
        pieces, rest = [], data
        for marker in markers:
            before, found, rest = rest.partition(marker.encode())
            if not found:
                raise ValueError(f"output slot {marker} not found in spyne's answer")
            pieces.append(before)
        template = Template(pieces + [rest])
        for i, text in enumerate(_AWKWARD):
            values = tuple(_AWKWARD[(i + k) % len(_AWKWARD)] for k in range(slots))
            if template.render(values) != self._spyne_answer(values)[2]:
                raise ValueError(f"answer for {values!r} differs from spyne's")
        return template

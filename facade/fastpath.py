"""Operations answered without spyne's generic machinery: polls and starts, the façade's hot paths.

Every workflow polls each of its jobs every 6 s and starts each job once,
and spyne spends most of such a request in its generic steps (contexts,
events, deserialising and serialising through type descriptors) rather
than in the operation. So `FastPath` answers a plain, valid request of
getServiceStatus and of the definition's start method itself:

* facade.plain reads it: the SOAP protocol's parser settings, schema and
  lock, its rule for empty optional inputs, spyne's conversion of each
  value, the same SOAPAction rule; only the plain shape. Any doubt sends
  the request to spyne, untouched, as before;
* the operation is the one spyne's wrapper calls (facade.service
  `status_operation`, `start_operation`: the same Operations method, so one
  submit path and one check of inputs and serviceID);
* the answer is byte for byte what spyne sends: each operation's template is
  cut at start-up from spyne's own answer and checked against spyne on
  awkward values (facade.template); if anything differs, that operation
  stays on spyne and the log says so.

A poll body met before is not parsed again (a poller sends the same bytes
every time, and the same bytes parse and validate the same way). On the
worker's event loop (facade.bridge, facade.inline) only a plain poll of a
job this worker answered in the last WARM_SECONDS goes ahead; anything else,
a start first of all (it writes and fsyncs), raises WouldWait before it is
counted, and runs in a thread.

`FACADE_FAST_PATH=false` turns it off (bench S2 measures what it is worth).
Requests it hands to spyne are counted per operation and reason (`off`,
`unparsable`, `not_plain`, `invalid`, `fault`, `answer`) and logged as
`fast_path_fallback` with the counts on the first of each and every
`LOG_EVERY` after; a count that grows with the requests says the fast path
is not doing its job.

Faults always come from spyne: the operation has already run, so its outcome
travels to spyne in the WSGI environ (`PRECOMPUTED`) and facade.service's
wrapper uses it instead of running the operation again (a start is not
submitted twice, a slow or dead authentication manager not waited for twice).
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog

from .inline import must_not_wait, running_on_loop
from .metrics import note
from .plain import SOAP_ENV, PlainReader, Signature
from .protocol import soap_action
from .template import HEADERS_OK, Template, cut

PRECOMPUTED = "facade.precomputed"   # environ key: an Outcome for facade.service's wrapper
BODY = "facade.body"                 # environ key: the request body, checked by facade.guard
OPERATION = "getServiceStatus"       # the one operation that may be answered on the event loop
CHECK_SERVICE_ID = "-fastpath-check"  # every operation refuses it before doing anything (jobs.spool.service_id)
LOG_EVERY = 1000  # fallbacks of one reason between two fast_path_fallback events
MAX_PARSED = 4096  # bodies of plain polls already parsed and validated: a poller sends the same bytes each time
MAX_PARSED_BYTES = 2048  # ... each at most this long (a poll is ~400 bytes): a few MiB at most
WARM_SECONDS = 60.0  # a job polled here this recently has its files in the page cache: answered on the loop
MAX_WARM = 65536

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


@dataclass
class FastOperation:
    """One operation the fast path answers: its signature, its function as spyne calls it, its template."""
    sig: Signature
    call: Callable[..., Any]  # spyne's arguments in, what spyne is given back out
    template: Template | None = None

    @property
    def single(self) -> bool:
        """spyne gives and takes a bare value, not a 1-tuple, when status_base64 is the only output."""
        return self.sig.outputs == 1


class FastPath:
    """WSGI: plain requests of the given operations answered directly, anything else by spyne."""

    def __init__(self, spyne_app: Callable, operations: dict[str, Callable[..., Any]], path: str,
                 enabled: bool = True):
        """operations: name -> the function spyne's wrapper runs for it (facade.service)."""
        self.spyne_app = spyne_app
        self.path = path
        app = spyne_app.app
        self.ops = {name: FastOperation(Signature.of(app, name), call) for name, call in operations.items()}
        self.reader = PlainReader(app.in_protocol, [op.sig for op in self.ops.values()])
        self._named = tuple((name, name.encode()) for name in self.ops)
        self.fallbacks: dict[tuple[str, str], int] = {}
        self._count_lock = threading.Lock()
        self._warm: dict[str, float] = {}  # serviceID -> when this worker last answered a poll of it
        self._parsed: dict[bytes, tuple] = {}  # body -> spyne's arguments of a plain, valid poll
        if not enabled:
            log.info("fast_path_off", path=path, reason="FACADE_FAST_PATH=false")
            return
        for name, op in self.ops.items():
            try:
                op.template = cut(lambda values, op=op: self._spyne_answer(op, values), op.sig.outputs)
            except Exception as e:  # noqa: BLE001 - any surprise: this operation stays on spyne, say why
                log.warning("fast_path_off", path=path, operation=name, reason=f"{type(e).__name__}: {e}")

    @property
    def templates(self) -> dict[str, Template | None]:
        return {name: op.template for name, op in self.ops.items()}

    # -- serving -------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        name: str | None = None
        try:
            name, args = self._plain_request(environ)
        except Exception:  # noqa: BLE001 - nothing has run yet: spyne decides
            args = "not_plain"
        if not (isinstance(args, tuple) and name == OPERATION):
            must_not_wait("spyne or a start answers it")  # on the loop: nothing counted yet, the thread does it all
        if not isinstance(args, tuple):
            if args is not None:  # None: not for the fast path at all (a WSDL, another operation)
                self._fell_back(name, args)
            return self.spyne_app(environ, start_response)
        op = self.ops[name]
        sid = args[0]
        if name == OPERATION and running_on_loop() \
                and time.monotonic() - self._warm.get(sid, float("-inf")) > WARM_SECONDS:
            must_not_wait("the job's files may not be in memory")  # a cold read would stall every connection
        structlog.contextvars.bind_contextvars(service_id=sid[:140], operation=name)
        try:
            answer = op.call(*args)
        except Exception as e:  # noqa: BLE001 - spyne turns it into the declared fault
            self._fell_back(name, "fault")
            environ[PRECOMPUTED] = Outcome(name, args, error=e)
            return self.spyne_app(environ, start_response)
        values = (answer,) if op.single else answer
        if (not isinstance(values, tuple) or len(values) != op.template.slots
                or not all(isinstance(v, str) for v in values)):
            self._fell_back(name, "answer")
            environ[PRECOMPUTED] = Outcome(name, args, value=answer)
            return self.spyne_app(environ, start_response)
        if name == OPERATION:
            self._warmed(sid)
        body = op.template.render(values)
        note(environ, name)
        start_response("200 OK", HEADERS_OK + [("Content-Length", str(len(body)))])
        return [body]

    def _warmed(self, sid: str) -> None:
        """Remember that this worker just read the job's files (sid is checked: the operation accepted it)."""
        now = time.monotonic()
        if len(self._warm) >= MAX_WARM and sid not in self._warm:
            self._warm = {k: t for k, t in self._warm.items() if now - t <= WARM_SECONDS}
            if len(self._warm) >= MAX_WARM:
                self._warm = {}
        self._warm[sid] = now

    def _fell_back(self, name: str | None, reason: str) -> None:
        """Count a request handed to spyne; log the counts now and then (per worker process)."""
        key = (name or "?", reason)
        with self._count_lock:
            n = self.fallbacks[key] = self.fallbacks.get(key, 0) + 1
            counts = {f"{k[0]}/{k[1]}": v for k, v in self.fallbacks.items()} if n == 1 or n % LOG_EVERY == 0 else None
        if counts is not None:
            log.info("fast_path_fallback", path=self.path, operation=key[0], reason=reason, count=n, counts=counts)

    def _plain_request(self, environ: dict) -> tuple[str | None, tuple | str | None]:
        """(operation, spyne's arguments) of a plain, valid request of one of the operations.

        Otherwise (operation or None, why spyne gets it): None when it is not
        for the fast path at all (not a POSTed SOAP body, or another operation
        named by SOAPAction or the body), else the reason it is counted as a
        fallback.
        """
        body = environ.get(BODY)
        if body is None or environ.get("REQUEST_METHOD") != "POST":
            return None, None
        if not (environ.get("CONTENT_TYPE") or "").lower().startswith("text/xml"):
            return None, None
        action = soap_action(environ)
        if action and action not in self.ops:
            return None, None
        named = [name for name, raw in self._named if raw in body and (not action or name == action)]
        if not named:
            return None, None
        if OPERATION not in named:
            must_not_wait("a start writes and fsyncs")  # before anything is parsed or counted
        if any(self.ops[name].template is None for name in named):
            return named[0], "off"
        known = self._parsed.get(body) if OPERATION in named else None
        if known is not None:  # the same bytes parse and validate the same way: no need to do it again
            return OPERATION, known
        sig, args = self.reader.read(body)
        name = sig.name if sig is not None else named[0]
        if sig is None and args is None or action and name != action:
            return None, None  # another operation (spyne says which), or SOAPAction and body disagree
        if isinstance(args, tuple) and name == OPERATION and len(body) <= MAX_PARSED_BYTES:
            if len(self._parsed) >= MAX_PARSED:
                self._parsed = {}
            self._parsed[body] = args
        return name, args

    # -- start-up: the template's source ---------------------------------------
    def _spyne_answer(self, op: FastOperation, values: tuple[str, ...]) -> tuple[str, list, bytes]:
        """spyne's whole answer to a request of `op` whose operation returned `values`.

        The request is read by facade.plain, and the outcome handed to spyne
        for the arguments it read; were they not spyne's, the operation itself
        would run and refuse CHECK_SERVICE_ID, and the check would fail.
        """
        ns, _, local = op.sig.tag[1:].partition("}")
        names = [tag.partition("}")[2] for tag, _ in op.sig.fields if tag in op.sig.needs_text]
        params = "".join(f"<w:{p}>{CHECK_SERVICE_ID if p == 'serviceID' else 'fastpath-check'}</w:{p}>" for p in names)
        body = (f'<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="{SOAP_ENV}" xmlns:w="{ns}">'
                f"<e:Body><w:{local}>{params}</w:{local}></e:Body></e:Envelope>").encode()
        sig, args = self.reader.read(body)
        if sig is not op.sig or not isinstance(args, tuple):
            raise ValueError(f"the check request of {local} is not read as plain: {args!r}")
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": self.path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                   "CONTENT_TYPE": "text/xml; charset=utf-8", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
                   "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   PRECOMPUTED: Outcome(op.sig.name, args, value=values[0] if op.single else values)}
        seen = []
        result = self.spyne_app(environ, lambda status, headers, exc_info=None: seen.append((status, headers)))
        try:
            data = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = seen[0]
        return status, headers, data

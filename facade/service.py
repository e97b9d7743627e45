"""One spyne SOAP service per job definition, generated; no per-job SOAP code.

Each definition (jobs/definitions/*.toml) yields a ServiceBase subclass named
`<service>Service` in the definition's namespace, wire-compatible with the
platform's reference waiter (SOAP 1.1, document/literal, wrapped):

    <start_method>(serviceID, sessionToken, extraParameters, <inputs...>)
        -> (status_base64, <outputs...>)
    getServiceStatus(serviceID, sessionToken) -> (status_base64, <outputs...>)
    abortService(serviceID, sessionToken) -> success (boolean)
    notifyService(serviceID, sessionToken, message) -> response (string)

Inputs map integer/float/string/boolean to Integer/Double/Unicode/Boolean;
every output is Unicode. Each facade.errors class becomes a declared fault of
the same name (TokenValidationFailedFault keeps the reference's faultstring
"Session-token validation failed"; the reason is in the fault's detail).

What getServiceStatus answers, by the supervisor's state of the job:

* not yet claimed, or QUEUED: a "waiting for a free slot, N ahead" page;
* RUNNING / STOPPING: a progress page (percent from the definition's progress
  file, elapsed time, estimated remaining time, last lines of stdout.log);
* SUCCEEDED: `COMPLETED` (not encoded) and the outputs read from the attempt's
  files (one trailing newline stripped, at most max_bytes);
* FAILED / ABORTED: a poller's first poll after the end returns a failure page
  (reason, exit code or signal, last lines of stderr.log) so the workflow
  manager shows the user what happened; its next poll raises `JobFailedFault`
  carrying the same reason and output tail. Why both: the WFM keeps polling
  until it gets `COMPLETED` or a fault, and answering `COMPLETED` would feed
  placeholder outputs into the next workflow step as if they were results. A
  page alone would leave the workflow polling forever; a fault alone would show
  the user a stack trace instead of the reason. The page-then-fault order
  falls out of the UNCHANGED rule: a terminal failure page that would be
  "unchanged" is the fault.
* `UNCHANGED` when the page would say the same as the last page sent to this
  poller (its session token) for this serviceID (the digest excludes
  clock-derived values; kept in facade.json, facade.jobview.SentPages), so
  every poller gets the whole page before it is ever told UNCHANGED.

Every fault carries in its <detail> the element the WSDL declares for it:
the operations' own faults theirs, faults raised before an operation runs
(schema, guard) InvalidRequestFault (facade.protocol.TypedSoap11).

A repeated start call for a known serviceID answers like getServiceStatus but
never UNCHANGED and never the fault, and records nothing.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import spyne.const
import structlog
from lxml import etree
from spyne import Boolean, Double, Fault, Integer, ServiceBase, Unicode, rpc

from jobs.definitions import Definition
from jobs.spool import storage_refused

from .errors import (ALL_ERRORS, AuthManagerUnavailable, FacadeError, InternalError, InvalidRequest,
                     JobFailed, JobNotActive, ServiceUnavailable, TokenValidationFailed, UnknownServiceID,
                     WrongProject)
from .fastpath import precomputed
from .metrics import note
from .jobview import xml_safe
from .operations import Operations
from .protocol import SafeSoap11

SPYNE_TYPES = {"integer": Integer, "float": Double, "string": Unicode, "boolean": Boolean}
COMMON_PARAMS = ("serviceID", "sessionToken")
DETAIL_FIELDS = ("reason", "state")  # what a FacadeError's detail may say, in the schema's order
log = structlog.get_logger("facade.service")  # lazy: configured later, by the entry point

# spyne ends a request with a full gc.collect() once a second (MethodContext.close, "to return file
# descriptors"): with a worker's ~50,000 objects it holds the GIL 15-100 ms, stalling every request
# of the worker; it was half the GIL time of a burst of starts (docs/profile-starts.md). The façade
# keeps no descriptor in a reference cycle (spool files are closed by `with` or finally), so Python's
# own generational collector is enough.
spyne.const.MIN_GC_INTERVAL = math.inf

_AUTHORIZED = (InvalidRequest, TokenValidationFailed, WrongProject, UnknownServiceID,
               AuthManagerUnavailable, ServiceUnavailable, InternalError)
THROWS = {
    "start": (InvalidRequest, TokenValidationFailed, WrongProject, AuthManagerUnavailable, UnknownServiceID,
              ServiceUnavailable, InternalError),
    "getServiceStatus": _AUTHORIZED + (JobFailed,),
    "abortService": _AUTHORIZED,
    "notifyService": _AUTHORIZED + (JobNotActive,),
}


def make_faults(namespace: str) -> dict[type[FacadeError], type[Fault]]:
    """One spyne Fault class per error, in the definition's namespace (so the WSDL declares it there).

    The WSDL declares each fault's element with optional DETAIL_FIELDS; spyne
    would write such members into soap:Fault itself, so they are excluded from
    serialisation (`exc`) and `fault_detail` writes the element into <detail>.
    """
    fields = {name: Unicode(min_occurs=0, exc=True) for name in DETAIL_FIELDS}
    return {
        err: type(err.fault_name, (Fault,), {
            "__namespace__": namespace, "__type_name__": err.fault_name, "__module__": __name__,
            "__doc__": err.__doc__, **fields,
        })
        for err in ALL_ERRORS
    }


def fault_detail(fault: type[Fault], detail: dict[str, str] | None) -> etree._Element:
    """The fault's declared element, which typed clients (JAX-WS, .NET) map to their exception class."""
    namespace = fault.get_namespace()
    element = etree.Element(f"{{{namespace}}}{fault.get_type_name()}", nsmap={"tns": namespace})
    for name in DETAIL_FIELDS:
        if detail and detail.get(name) is not None:
            etree.SubElement(element, f"{{{namespace}}}{name}").text = xml_safe(str(detail[name]))
    return element


def _operation(name: str, fn: Callable[..., Any], faults: dict[type[FacadeError], type[Fault]]):
    """Wrap an operation: bind the serviceID for logging, turn FacadeErrors into declared faults.

    When facade.fastpath has already run the operation for this request, its
    outcome is used instead of running it again.
    """

    def call(ctx, *args):
        sid = args[0]
        structlog.contextvars.bind_contextvars(
            service_id=sid[:140] if isinstance(sid, str) else None, operation=name)
        environ = getattr(getattr(ctx, "transport", None), "req_env", None)
        environ = environ if isinstance(environ, dict) else {}
        note(environ, name)
        try:
            done = precomputed(ctx, name, args)
            if done is not None:
                if done.error is not None:
                    raise done.error
                return done.value
            return fn(*args)
        except FacadeError as e:
            note(environ, name, e.fault_name)
            raise declared(e) from None
        except Exception as e:
            note(environ, name, (ServiceUnavailable if storage_refused(e) else InternalError).fault_name)
            if (errno_name := storage_refused(e)) is not None:
                log.warning("storage_refused", errno=errno_name, error=str(e))
                raise declared(ServiceUnavailable(
                    f"the service cannot accept work right now: its storage refuses writes ({errno_name}); "
                    "nothing was recorded, try again later")) from None
            log.exception("internal_error")
            raise fault(InternalError(
                "internal error in the service; the operator will find the details in its log")) from None

    def declared(e: FacadeError) -> Fault:
        log.info("fault", fault=e.fault_name, message=e.message)
        return fault(e)

    def fault(e: FacadeError) -> Fault:
        cls = faults[type(e)]
        return cls(faultcode=e.faultcode, faultstring=xml_safe(e.message), detail=fault_detail(cls, e.detail))

    call.__name__ = name
    return call


def status_operation(d: Definition, ops: Operations) -> Callable[[Any, Any], Any]:
    """getServiceStatus as spyne is given it: a bare value when status_base64 is the only output."""
    if d.outputs:
        return lambda service_id, token: ops.status(d, service_id, token)
    return lambda service_id, token: ops.status(d, service_id, token)[0]


def start_operation(d: Definition, ops: Operations) -> Callable[..., Any]:
    """The start method as spyne calls it (inputs in the definition's order) and is given it (as above)."""
    input_names = tuple(i.name for i in d.inputs)
    shape = (lambda answer: answer) if d.outputs else (lambda answer: answer[0])

    def start(service_id, token, extra, *inputs):
        return shape(ops.start(d, service_id, token, extra, dict(zip(input_names, inputs))))
    return start


def build_service(d: Definition, ops: Operations) -> type[ServiceBase]:
    """The ServiceBase subclass for one definition."""
    faults = make_faults(d.namespace)
    out_names = ("status_base64",) + tuple(o.name for o in d.outputs)
    returns = dict(_returns=tuple(Unicode for _ in out_names), _out_variable_names=out_names)
    if len(out_names) == 1:
        returns = dict(_returns=Unicode, _out_variable_name=out_names[0])
    input_names = tuple(i.name for i in d.inputs)

    def throws(op: str) -> list[type[Fault]]:
        return [faults[e] for e in THROWS[op]]

    start, status = start_operation(d, ops), status_operation(d, ops)

    def abort(service_id, token):
        return ops.abort(d, service_id, token)

    def notify(service_id, token, message):
        return ops.notify(d, service_id, token, message)

    attrs = {
        "__doc__": d.description or f"Asynchronous service for job {d.name}.",
        "__module__": __name__,
        "definition": d,
        d.start_method: rpc(
            Unicode, Unicode, Unicode, *(SPYNE_TYPES[i.type] for i in d.inputs),
            _args=COMMON_PARAMS + ("extraParameters",) + input_names,
            _throws=throws("start"), **returns,
        )(_operation(d.start_method, start, faults)),
        "getServiceStatus": rpc(
            Unicode, Unicode, _args=COMMON_PARAMS, _throws=throws("getServiceStatus"), **returns,
        )(_operation("getServiceStatus", status, faults)),
        "abortService": rpc(
            Unicode, Unicode, _args=COMMON_PARAMS, _returns=Boolean, _out_variable_name="success",
            _throws=throws("abortService"),
        )(_operation("abortService", abort, faults)),
        "notifyService": rpc(
            Unicode, Unicode, Unicode, _args=COMMON_PARAMS + ("message",), _returns=Unicode,
            _out_variable_name="response", _throws=throws("notifyService"),
        )(_operation("notifyService", notify, faults)),
    }
    return type(f"{d.service}Service", (ServiceBase,), attrs)


class DefinitionSoap11(SafeSoap11):
    """The in-protocol of one definition's service: an empty optional input means "absent".

    The workflow manager sends `<secondsToWait/>` for a field the user left
    empty, and the reference waiter then uses its default; the schema would
    refuse the empty integer, so such elements are dropped before validation.
    """

    def __init__(self, d: Definition):
        super().__init__()
        self.start_tag = f"{{{d.namespace}}}{d.start_method}"
        self.optional = frozenset(f"{{{d.namespace}}}{i.name}" for i in d.inputs if not i.required)

    def dropped(self, op: etree._Element, child: etree._Element) -> bool:
        """Whether `child` of the request element `op` is an empty optional input (facade.plain asks too)."""
        return op.tag == self.start_tag and child.tag in self.optional and not len(child) and not child.attrib \
            and not (child.text or "").strip()

    def validate_body(self, ctx, message):
        body = ctx.in_body_doc
        if message is self.REQUEST and body is not None:
            for child in list(body):
                if self.dropped(body, child):
                    body.remove(child)
        return super().validate_body(ctx, message)

"""The one submit: a serviceID, inputs, owner and auth URL in; a spec in incoming/ (or the known job) out.

The SOAP start, the console's form and `jobctl submit` all come through here,
so they refuse the same things with the same words: the SOAP start's. Text
inputs (a form field, `KEY=VALUE` on the command line) are first read the
way the SOAP start reads its XML (`text_inputs`): the XML Schema type of the
input decides which lexical forms pass (libxml2 checks them there, so it
checks them here), then spyne's conversion gives the Python value, then the
definition's bounds apply (Definition.validate_inputs) as for every caller.
"""
from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lxml import etree

from .definitions import Definition
from .errors import JobsError, SpecError
from .runfiles import RunFiles
from .spec import JobSpec
from .spool import ServiceId, Spool, read_json, service_id, storage_refused

XSD_TYPES = {"integer": "xs:integer", "float": "xs:double", "string": "xs:string", "boolean": "xs:boolean"}
MAX_FAULT_TEXT = 300  # the SOAP start's cut of a schema message (facade.protocol)
MAX_INTEGER_TEXT = 1024  # spyne's Integer.Attributes.max_str_len: a longer text is refused, blanks included
_validation_lock = threading.Lock()  # an XMLSchema's error_log is shared state


class SubmitError(JobsError):
    """A submit refused; the message is the SOAP start's. `kind`: service_id, input or storage."""

    def __init__(self, message: str, kind: str, errno_name: str | None = None):
        super().__init__(message)
        self.message, self.kind, self.errno_name = message, kind, errno_name


@dataclass(frozen=True)
class Submission:
    """The outcome: `new` if this call dropped the spec, else the serviceID was already known."""
    sid: ServiceId
    new: bool
    spec: JobSpec | None  # new: the spec dropped; known: the existing spec (None if unreadable or gone)


def checked_service_id(value: object) -> ServiceId:
    """The serviceID of a request, or SubmitError with the SOAP start's words."""
    if value is None or value == "":
        raise SubmitError("serviceID: required", "service_id")
    try:
        return service_id(value)
    except SpecError as e:
        raise SubmitError(str(e), "service_id") from None


def checked_inputs(d: Definition, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults and bounds applied to typed inputs (as SOAP gives them); SubmitError("invalid input ...")."""
    try:
        return d.validate_inputs(dict(raw))
    except SpecError as e:
        raise SubmitError(f"invalid input {e}", "input") from None


def storage_message(errno_name: str) -> str:
    """What the SOAP start answers when the spool refuses the write."""
    return (f"the service cannot accept work right now: its storage refuses writes ({errno_name}); "
            "nothing was recorded, try again later")


def submit(spool: Spool, d: Definition, sid: object, inputs: Mapping[str, Any], owner: Mapping[str, str | None],
           auth_url: str | None, known_spec: Callable[[RunFiles], JobSpec] | None = None,
           definitions: dict[str, Definition] | None = None) -> Submission:
    """Check the serviceID and inputs, then drop the spec into incoming/ unless the serviceID is known.

    A known serviceID is not an error here (the SOAP start answers a retry
    with the job's status; the console and jobctl refuse it): its spec comes
    from known_spec(files) if given, else from the spool, parsed with
    `definitions` (default: just d).
    """
    sid = checked_service_id(sid)
    typed = checked_inputs(d, inputs)
    files = spool.files(sid)
    if not spool.known(sid):
        spec = JobSpec(service_id=sid, job=d.name, inputs=typed, auth_url=auth_url,
                       owner={"username": owner.get("username"), "project": owner.get("project")})
        try:
            if spool.submit(spec.to_json(), sid):
                return Submission(sid, True, spec)
        except OSError as e:
            if (name := storage_refused(e)) is None:
                raise
            raise SubmitError(storage_message(name), "storage", name) from e
    return Submission(sid, False, (known_spec or _spec_reader(definitions or {d.name: d}))(files))


def _spec_reader(definitions: dict[str, Definition]) -> Callable[[RunFiles], JobSpec | None]:
    def read(files: RunFiles) -> JobSpec | None:
        for path in (files.spec, files.incoming, files.spec):  # a claim renames incoming/ to runs/
            try:
                return JobSpec.parse(read_json(path), definitions)
            except FileNotFoundError:
                continue
            except SpecError:
                return None
        return None
    return read


# -- text inputs, read as the SOAP start reads its XML ---------------------------------

def text_inputs(d: Definition, fields: Mapping[str, str]) -> dict[str, Any]:
    """Text values (form fields, KEY=VALUE) as the SOAP start would receive them, ready for submit().

    An optional input given as empty or blank text is absent (its default
    applies), as the SOAP start drops an empty element. A value that the
    input's XML Schema type refuses gets the SOAP start's message, e.g.
    "invalid request: element 'n': '٣' is not a valid value of the atomic
    type 'xs:integer'." Names that are not inputs pass through, for
    submit() to refuse as the definition does.
    """
    by_name = {i.name: i for i in d.inputs}
    raw: dict[str, Any] = {}
    for name, text in fields.items():
        spec = by_name.get(name)
        if spec is None:
            raw[name] = text
        elif not text.strip() and not spec.required:
            continue
        else:
            raw[name] = _from_text(name, spec.type, text)
    return raw


def _from_text(name: str, type_: str, text: str) -> Any:
    schema = _schema(name, type_)
    element = etree.Element(name)
    element.text = text
    with _validation_lock:
        ok = schema.validate(element)
        error = None if ok else schema.error_log.last_error
    if not ok:
        message = re.sub(r"\{[^}]*\}", "", error.message if error is not None else "does not match the schema")
        if message.startswith("Element"):
            message = "e" + message[1:]
        message = f"invalid request: {message}"
        if len(message) > MAX_FAULT_TEXT:
            message = message[:MAX_FAULT_TEXT - 3] + "..."
        raise SubmitError(message, "input")
    if type_ == "integer":
        if len(text) > MAX_INTEGER_TEXT:
            raise SubmitError(f"Integer {text!r} longer than {MAX_INTEGER_TEXT} characters", "input")
        return int(text)  # spyne: int() of the text the schema passed (ASCII digits only)
    if type_ == "float":
        return float(text)  # INF and NaN pass the schema; the definition refuses them
    if type_ == "boolean":
        return text.lower() in ("true", "1")  # spyne's reading of xs:boolean (" true " passes the schema: False)
    return text


@functools.lru_cache(maxsize=256)
def _schema(name: str, type_: str) -> etree.XMLSchema:
    """A schema of one element `name` of the input's XSD type (one per input: its name is in the message)."""
    return etree.XMLSchema(etree.fromstring(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        f'<xs:element name="{name}" type="{XSD_TYPES[type_]}"/></xs:schema>'))

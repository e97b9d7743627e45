"""The job spec: what the facade (or jobctl) asks the supervisor to run."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from .definitions import Definition
from .errors import SpecError
from .spool import MAX_JSON_BYTES, dump_json, validate_service_id
from .times import from_iso, iso, read_time

SCHEMA_VERSION = 1
_Name = Annotated[str, msgspec.Meta(max_length=256)]


class _SpecFile(msgspec.Struct, forbid_unknown_fields=True):
    """spec.json's shape, checked by msgspec (bool is no int, unknown fields refused); the rules follow in parse."""
    schema_version: int
    service_id: str
    job: str
    inputs: dict[str, Any]
    submitted_at: str | float  # ISO 8601; a UNIX time in specs written before
    auth_url: Annotated[str, msgspec.Meta(max_length=2048, pattern="^https?://")] | None = None
    owner: dict[Literal["username", "project"], _Name | None] = {}  # may be left out, never null


# what a field of the wrong shape is told, by field (schema_version, service_id and job name the value)
_SHAPE_PROBLEMS = {
    "inputs": "inputs must be an object",
    "auth_url": "auth_url must be an http(s) URL of at most 2048 characters",
    "owner": "owner must be an object {username, project} of strings or nulls",
    "submitted_at": "submitted_at must be an ISO 8601 time with its UTC offset",
}
_DECODE = msgspec.json.Decoder(_SpecFile)
_FIELD_NAMED = re.compile(r"Object (missing required|contains unknown) field `([^`]*)`$")
_AT_FIELD = re.compile(r"`\$\.([A-Za-z_]+)")  # "- at `$.owner`", "- at `key` in `$.owner`"


def _version_problem(version: Any) -> str:
    return f"schema_version {str(version)[:16]!r} is not the integer {SCHEMA_VERSION}"


def _job_problem(job: Any) -> str:
    return f"unknown job type {str(job)[:64]!r}"


def _shape_problem(e: msgspec.ValidationError, data: Any) -> str:
    """Today's `spec: field: problem` wording for msgspec's first complaint."""
    named = _FIELD_NAMED.match(str(e))
    if named:
        return f"{'missing' if named[1].startswith('missing') else 'unknown'} field {named[2]}"
    at = _AT_FIELD.search(str(e))
    if at is None:
        return "must be a JSON object"
    name = at[1]
    if name == "schema_version":
        return _version_problem(data.get(name))
    if name == "service_id":
        validate_service_id(data.get(name))  # raises with the serviceID wording
    if name == "job":
        return _job_problem(data.get(name))
    return _SHAPE_PROBLEMS.get(name, f"{name}: malformed ({e})")


@dataclass(frozen=True)
class JobSpec:
    service_id: str
    job: str
    inputs: dict[str, Any]
    auth_url: str | None = None
    owner: dict[str, str | None] = field(default_factory=dict)  # username, project
    submitted_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        # the spool keeps times to the microsecond: a spec equals the one read back from its file
        object.__setattr__(self, "submitted_at", from_iso(iso(self.submitted_at)))

    def to_json(self) -> bytes:
        """The spec file (every field; dataclasses.asdict's deep copy cost a start ~25 µs)."""
        return dump_json({"service_id": self.service_id, "job": self.job, "inputs": self.inputs,
                          "auth_url": self.auth_url, "owner": self.owner, "submitted_at": iso(self.submitted_at),
                          "schema_version": self.schema_version})

    @classmethod
    def parse(cls, data: Any, definitions: dict[str, Definition]) -> "JobSpec":
        """Validate a decoded spec completely; every reader calls this, never trusts the file."""
        try:
            wire = msgspec.convert(data, _SpecFile)
        except msgspec.ValidationError as e:
            raise SpecError(f"spec: {_shape_problem(e, data)}") from None
        return cls._checked(wire, definitions)

    @classmethod
    def parse_bytes(cls, raw: bytes, definitions: dict[str, Definition]) -> "JobSpec":
        if len(raw) > MAX_JSON_BYTES:
            raise SpecError(f"spec: larger than {MAX_JSON_BYTES} bytes")
        try:
            wire = _DECODE.decode(raw)
        except msgspec.ValidationError as e:  # valid JSON of the wrong shape: decoded again, only to name the problem
            raise SpecError(f"spec: {_shape_problem(e, msgspec.json.decode(raw))}") from None
        except msgspec.DecodeError as e:
            raise SpecError(f"spec: not valid JSON ({e})") from None
        return cls._checked(wire, definitions)

    @classmethod
    def _checked(cls, wire: _SpecFile, definitions: dict[str, Definition]) -> "JobSpec":
        """The rules beyond the shape: version, serviceID alphabet, known job, its inputs, the time."""
        if wire.schema_version != SCHEMA_VERSION:
            raise SpecError(f"spec: {_version_problem(wire.schema_version)}")
        sid = validate_service_id(wire.service_id)
        if wire.job not in definitions:
            raise SpecError(f"spec: {_job_problem(wire.job)}")
        inputs = definitions[wire.job].validate_inputs(wire.inputs)
        ts = read_time(wire.submitted_at)
        if ts is None:
            raise SpecError(f"spec: {_SHAPE_PROBLEMS['submitted_at']}")
        return cls(sid, wire.job, inputs, wire.auth_url, dict(wire.owner), ts)

"""The job spec: what the facade (or jobctl) asks the supervisor to run."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .definitions import Definition
from .errors import SpecError
from .spool import MAX_JSON_BYTES, dump_json, validate_service_id
from .times import from_iso, iso, read_time

SCHEMA_VERSION = 1
_FIELDS = {"schema_version", "service_id", "job", "inputs", "auth_url", "owner", "submitted_at"}


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
        return dump_json({**asdict(self), "submitted_at": iso(self.submitted_at)})

    @classmethod
    def parse(cls, data: Any, definitions: dict[str, Definition]) -> "JobSpec":
        """Validate a decoded spec completely; every reader calls this, never trusts the file."""
        if not isinstance(data, dict):
            raise SpecError("spec: must be a JSON object")
        missing = sorted({"schema_version", "service_id", "job", "inputs", "submitted_at"} - set(data))
        if missing:
            raise SpecError(f"spec: missing field {missing[0]}")
        extra = sorted(set(data) - _FIELDS)
        if extra:
            raise SpecError(f"spec: unknown field {extra[0]}")
        version = data["schema_version"]
        if type(version) is not int or version != SCHEMA_VERSION:  # true == 1 and 1.0 == 1 in Python
            raise SpecError(f"spec: schema_version {str(version)[:16]!r} is not the integer {SCHEMA_VERSION}")
        sid = validate_service_id(data["service_id"])
        job = data["job"]
        if not isinstance(job, str) or job not in definitions:
            raise SpecError(f"spec: unknown job type {str(job)[:64]!r}")
        if not isinstance(data["inputs"], dict):
            raise SpecError("spec: inputs must be an object")
        inputs = definitions[job].validate_inputs(data["inputs"])
        auth_url = data.get("auth_url")
        if auth_url is not None and (not isinstance(auth_url, str) or len(auth_url) > 2048
                                     or not auth_url.startswith(("http://", "https://"))):
            raise SpecError("spec: auth_url must be an http(s) URL of at most 2048 characters")
        owner = data.get("owner", {})  # may be left out, but if given it is an object (never null)
        if not isinstance(owner, dict) or set(owner) - {"username", "project"} or not all(
                v is None or (isinstance(v, str) and len(v) <= 256) for v in owner.values()):
            raise SpecError("spec: owner must be an object {username, project} of strings or nulls")
        ts = read_time(data["submitted_at"])  # ISO 8601; a UNIX time in specs written before
        if ts is None:
            raise SpecError("spec: submitted_at must be an ISO 8601 time with its UTC offset")
        return cls(sid, job, inputs, auth_url, dict(owner), ts)

    @classmethod
    def parse_bytes(cls, raw: bytes, definitions: dict[str, Definition]) -> "JobSpec":
        import json
        if len(raw) > MAX_JSON_BYTES:
            raise SpecError(f"spec: larger than {MAX_JSON_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            raise SpecError(f"spec: not valid JSON ({e})") from None
        return cls.parse(data, definitions)

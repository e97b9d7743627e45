"""`submit`: a job run by hand, its NAME=VALUE inputs checked against the job's definition now."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from jobctl.context import Context, origin
from jobs.cli import OK, USAGE, CliError, note, out
from jobs.definitions import Definition
from jobs.errors import SpecError
from jobs.spec import JobSpec
from jobs.spool import validate_service_id
from jobs.supervisorinfo import supervisor_status


def _parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"input {text!r}: expected NAME=VALUE", USAGE)
    return name, value


def _typed(d: Definition, name: str, value: str) -> Any:
    """Command-line values are text; booleans need converting before validation."""
    spec = next((i for i in d.inputs if i.name == name), None)
    if spec is not None and spec.type == "boolean":
        low = value.strip().lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise CliError(f"{name}: must be true or false, got {value!r}", USAGE)
    return value


def new_service_id(prefix: str = "manual") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def cmd_submit(ctx: Context, args) -> int:
    defs = ctx.definitions(required=True)
    d = defs.get(args.job)
    if d is None:
        raise CliError(f"unknown job {args.job!r}; known jobs: {', '.join(sorted(defs))}", USAGE)
    raw: dict[str, Any] = {}
    for a in args.inputs:
        k, v = _parse_assignment(a)
        if k in raw:
            raise CliError(f"input {k} given twice", USAGE)
        raw[k] = _typed(d, k, v)
    try:
        inputs = d.validate_inputs(raw)
    except SpecError as e:
        raise CliError(f"job {d.name}: {e}", USAGE) from None
    sid = args.id or new_service_id()
    try:
        validate_service_id(sid)
    except SpecError as e:
        raise CliError(str(e), USAGE) from None
    spec = JobSpec(service_id=sid, job=d.name, inputs=inputs, auth_url=None,
                   owner={"username": origin(), "project": None})
    ctx.spool.ensure()
    if ctx.spool.exists(sid) or not ctx.spool.submit(spec.to_json(), sid):
        raise CliError(f"serviceID {sid!r} already exists")
    out(sid)
    sup = supervisor_status(ctx.spool, None, ctx.cfg.reconcile_seconds)
    if not sup.running:
        note("supervisor is not running; the job will start when it does")
    return OK

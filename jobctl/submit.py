"""`submit`: a job run by hand; its NAME=VALUE inputs read and checked as the SOAP start reads its own (jobs.submit)."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from jobctl.context import Context, origin
from jobs.cli import FAILED, OK, USAGE, CliError, note, out
from jobs.submit import SubmitError, submit, text_inputs
from jobs.supervisorinfo import supervisor_status


def _parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"input {text!r}: expected NAME=VALUE", USAGE)
    return name, value


def new_service_id(prefix: str = "manual") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def cmd_submit(ctx: Context, args) -> int:
    defs = ctx.definitions(required=True)
    d = defs.get(args.job)
    if d is None:
        raise CliError(f"unknown job {args.job!r}; known jobs: {', '.join(sorted(defs))}", USAGE)
    fields: dict[str, str] = {}
    for a in args.inputs:
        k, v = _parse_assignment(a)
        if k in fields:
            raise CliError(f"input {k} given twice", USAGE)
        fields[k] = v
    sid = args.id or new_service_id()
    ctx.spool.ensure()
    try:
        done = submit(ctx.spool, d, sid, text_inputs(d, fields), {"username": origin(), "project": None}, None,
                      known_spec=lambda files: None)  # a known serviceID is refused: its spec is not needed
    except SubmitError as e:  # the SOAP start's words; storage refusing writes is not a usage error
        raise CliError(e.message, FAILED if e.kind == "storage" else USAGE) from None
    if not done.new:
        raise CliError(f"serviceID {sid!r} already exists")
    out(done.sid)
    sup = supervisor_status(ctx.spool, None, ctx.cfg.reconcile_seconds)
    if not sup.running:
        note("supervisor is not running; the job will start when it does")
    return OK

"""The single calls: token, services, start, status, abort, notify (`run`, which follows a job, is in follow)."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from typing import Any

from jobs.cli import FAILED, OK, USAGE, CliError, out

from .output import outputs, plain, show_reply
from .settings import Settings
from .soap import Service, list_services, login
from .statuspage import Status


def new_service_id() -> str:
    return f"client-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def outcome(status: Status) -> int:
    """A failed or aborted job ends the command with FAILED."""
    return FAILED if status.ended else OK


def start(s: Settings, svc: Service, sid: str, token: str, inputs: dict[str, Any]):
    return svc.call(svc.start_method, serviceID=sid, sessionToken=token,
                    extraParameters=s.extra_parameters, **inputs)


def cmd_token(s: Settings, args) -> int:
    if not (args.user and args.project):
        raise CliError("token needs --user and --project", USAGE)
    token = login(s.auth_url, args.user, args.project, s.password(), args.timeout)
    out(json.dumps({"token": token}) if args.json else token)
    return OK


def cmd_services(s: Settings, args) -> int:
    """Every service of the façade, with its start operation and typed inputs from its WSDL."""
    rows = []
    for name, url in sorted(list_services(s.facade_root, args.timeout).items()):
        svc = Service(url, args.timeout, name)
        rows.append({"service": name, "wsdl": url, "start": svc.start_method, "inputs": svc.inputs()})
    if args.json:
        out(json.dumps(rows, indent=1))
    for r in [] if args.json else rows:
        inputs = ", ".join(f"{k}: {t}" for k, t in r["inputs"].items())
        out(f"{r['service']}  {r['start']}({inputs})  {r['wsdl']}")
    return OK


def cmd_start(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    inputs = svc.parse_inputs(args.input, args.seconds)
    sid = args.id or new_service_id()
    reply = start(s, svc, sid, token, inputs)  # a refusal raises: no serviceID line for a job that is not there
    if not args.json:
        out(f"serviceID: {sid}")
    return outcome(show_reply(sid, reply, args))


def cmd_status(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    return outcome(show_reply(args.id, svc.call("getServiceStatus", serviceID=args.id, sessionToken=token), args))


def cmd_abort(s: Settings, args) -> int:
    token = s.token()
    return abort(s.service(), args.id, token, args.json)


def abort(svc: Service, sid: str, token: str, as_json: bool = False) -> int:
    reply = svc.call("abortService", serviceID=sid, sessionToken=token)
    value = outputs(reply)
    success = value.get("success", value.get("value")) in (True, "true", "True", "1", 1)
    if as_json:
        out(json.dumps({"serviceID": sid, "aborted": success}))
    elif success:
        out(f"aborted {sid}")
    else:
        out(f"not aborted: the service could not stop {sid} (already finished, or unknown?)")
    return OK if success else FAILED


def cmd_notify(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    reply = svc.call("notifyService", serviceID=args.id, sessionToken=token, message=args.message)
    value = outputs(reply)
    response = plain(value.get("response", value.get("value", "")))
    out(json.dumps({"serviceID": args.id, "response": response}) if args.json else str(response))
    return OK

"""What the commands print: a reply as text or one JSON value, and an error as one JSON object for --json."""
from __future__ import annotations

import json
from typing import Any

from suds.sudsobject import Object as SudsObject

from jobs.cli import USAGE, CliError, out

from . import UNREACHABLE
from .soap import Refused
from .statuspage import Status, decode_status, page_text


def outputs(reply: Any) -> dict[str, Any]:
    """A suds reply object as a dict; a bare value (abort, notify) as {"value": v}."""
    if isinstance(reply, SudsObject):
        return {k: v for k, v in reply}
    return {"value": reply}


def plain(value: Any) -> Any:
    """A reply value JSON can hold (suds hands back its own Text and number types)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def status_reply(reply: Any) -> tuple[Status, dict[str, Any]]:
    """A start or getServiceStatus reply: its decoded status and the other outputs.

    A service without outputs answers status_base64 alone, which suds hands back bare.
    """
    values = outputs(reply) if isinstance(reply, SudsObject) else {"status_base64": reply}
    return (decode_status(values.get("status_base64")),
            {k: plain(v) for k, v in values.items() if k != "status_base64"})


def status_json(sid: str, status: Status, rest: dict[str, Any], show_page: str | None = None) -> str:
    return json.dumps({"serviceID": sid, **status.as_json(show_page), "outputs": rest}, indent=1)


def show_reply(sid: str, reply: Any, args) -> Status:
    """Print a start or status reply (text or --json)."""
    status, rest = status_reply(reply)
    if args.json:
        out(status_json(sid, status, rest, args.page))
        return status
    if args.raw:
        out(str(reply))
    else:
        out(f"status: {status.summary()}")
        for k, v in rest.items():
            out(f"{k}: {v}")
    if args.page and status.kind == "PAGE":
        out(status.page if args.page == "html" else page_text(status.page))
    return status


def error_json(e: CliError) -> str:
    """--json's answer when a command fails: what failed and, for a SOAP fault, what was refused."""
    kind = "refused" if isinstance(e, Refused) else {UNREACHABLE: "unreachable", USAGE: "usage"}.get(e.code, "failed")
    data: dict[str, Any] = {"error": kind, "message": str(e), "exit_code": e.code}
    if isinstance(e, Refused):
        if e.service_id is not None:
            data["serviceID"] = e.service_id
        data.update(e.as_json())
    return json.dumps(data, indent=1)

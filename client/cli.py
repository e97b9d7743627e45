"""waiter-client: call a façade service's SOAP methods the way the workflow manager does.

A modern version of the platform's test client: suds (as clfpy uses it) for the
SOAP calls, clfpy's AuthClient for session tokens, and a `run` command that
starts a job and polls getServiceStatus like the workflow manager, drawing the
progress read from the status page. Any service the façade publishes can be
driven (`--service`): its start operation and its typed inputs come from its
WSDL, the list of services from the façade's 404 page.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import html
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.sax
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import clfpy
from suds import BuildError, MethodNotFound, TypeNotFound, WebFault
from suds.cache import NoCache
from suds.client import Client
from suds.sudsobject import Object as SudsObject
from suds.transport import TransportError

from jobs.cli import FAILED, INTERRUPTED, OK, USAGE, CliError, Parser, note, out, run

PROG = "waiter-client"
SERVICE = "Waiter"           # the default --service
SECONDS_INPUT = "secondsToWait"  # what --seconds sets (the Waiter's input)
PROTOCOL_OPS = ("getServiceStatus", "abortService", "notifyService")  # every service has these; the other is start
PROTOCOL_PARAMS = ("serviceID", "sessionToken", "extraParameters")  # a start operation's own parameters
AUTH_PATH = "/authManager/AuthManager?wsdl"

# Exit codes: OK, FAILED (the service refused: SOAP fault, login failed, abort false; the job failed or
# was aborted), USAGE (bad arguments or configuration, no session token), INTERRUPTED from jobs.cli, and
UNREACHABLE = 3   # no answer: connection refused, timeout, not a WSDL at that URL

EPILOG = f"""\
where the services are:
  --service  which of the façade's services (`services` lists them); default {SERVICE}
  --url      the service WSDL; default http://FACADE_HOST:FACADE_PORT<CONTEXT_ROOT>/<service>?wsdl
  --auth     the authentication manager WSDL; default http://DEVAUTH_HOST:DEVAUTH_PORT{AUTH_PATH}
  both defaults come from the env file (ENV_FILE or --env-file).
session token: --token, else $SESSION_TOKEN, else logs in with --user/--project
  (password from --password-stdin or a prompt).

exit codes:
  {OK}    done (run: the job COMPLETED)
  {FAILED}    the service refused: SOAP fault, login failed, abort returned false;
       or the job FAILED or was ABORTED (status, start, run: the page says so, with the reason)
  {USAGE}    usage or configuration error, no session token, no such service or input
  {UNREACHABLE}    could not reach a service (connection refused, timeout, no WSDL at the URL)
  {INTERRUPTED}  interrupted (Ctrl-C)
--json prints one JSON value on stdout instead of text (errors stay one line on stderr).
"""

# The facade's status page carries its percentage as data-progress="NN"; pages
# without it (the original waiter's) show the number as "NN%".
_MARKER = re.compile(r"""data-progress\s*=\s*["']?\s*(\d{1,3}(?:\.\d+)?)""")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


# -- status pages -------------------------------------------------------------------

# The façade's page: <div class="card s-STATE">, <p class="headline">, <p class="detail">, <dt>/<dd> facts.
_STATE = re.compile(r"""<div class=["']card s-([a-z]+)["']""")
_HEADLINE = re.compile(r"""<p class=["']headline["']>(.*?)</p>""", re.S)
_DETAIL = re.compile(r"""<p class=["']detail["']>(.*?)</p>""", re.S)
_FACT = re.compile(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", re.S)
ENDED = ("failed", "aborted")


@dataclass(frozen=True)
class Status:
    """One status_base64 value, decoded: COMPLETED, UNCHANGED or a page, and what the page says."""
    kind: str                  # "COMPLETED" | "UNCHANGED" | "PAGE"
    page: str = ""
    percent: float | None = None
    state: str | None = None   # the façade's page: queued, running, stopping, succeeded, failed, aborted
    headline: str = ""
    reason: str = ""           # the page's detail line: why it failed, who aborted it
    facts: tuple[tuple[str, str], ...] = ()

    @property
    def ended(self) -> bool:
        """The job failed or was aborted: the page is final, the next poll is a JobFailedFault."""
        return self.state in ENDED

    def fact(self, name: str) -> str | None:
        return next((v for k, v in self.facts if k == name), None)

    def summary(self) -> str:
        """One line for a terminal: the state, the reason, how it ended; or the progress."""
        if self.kind != "PAGE":
            return self.kind
        if self.ended:
            how = [f"exit code {self.fact('Exit code')}" if self.fact("Exit code") else "",
                   self.fact("Stopped") or (f"signal {self.fact('Stopped by signal')}"
                                            if self.fact("Stopped by signal") else "")]
            line = f"{self.state.upper()}: {self.reason or self.headline}"
            return "; ".join([line, *(x for x in how if x and x not in line)])
        pct = "no percentage on the page" if self.percent is None else f"{self.percent:.0f}%"
        return f"in progress ({self.state}), {pct}" if self.state else f"in progress, {pct}"

    def as_json(self, show_page: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.kind if self.kind != "PAGE" else (self.state or "page").upper()}
        if self.kind == "PAGE":
            data.update(percent=self.percent, headline=self.headline, reason=self.reason, facts=dict(self.facts))
            if show_page:
                data["page"] = self.page if show_page == "html" else page_text(self.page)
        return data


def decode_status(value: str | None) -> Status:
    text = (value or "").strip()
    if text in ("COMPLETED", "UNCHANGED"):
        return Status(text)
    try:
        page = base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        page = text  # not base64: show it as it came
    state = _STATE.search(page)

    def first(rx: re.Pattern) -> str:
        m = rx.search(page)
        return _inline_text(m.group(1)) if m else ""
    return Status("PAGE", page, page_percent(page), state.group(1) if state else None, first(_HEADLINE),
                  first(_DETAIL), tuple((_inline_text(k), _inline_text(v)) for k, v in _FACT.findall(page)))


def _inline_text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"(?s)<[^>]*>", " ", fragment)).split())


def page_percent(page: str) -> float | None:
    """The progress a status page shows: its data-progress marker, else the first NN% of its body."""
    m = _MARKER.search(page) or _PERCENT.search(_strip_head(page))
    if not m:
        return None
    return max(0.0, min(100.0, float(m.group(1))))


def _strip_head(page: str) -> str:
    """Without head, style and script blocks, whose CSS (width:100%) is not progress."""
    return re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", page)


def page_text(page: str) -> str:
    """A status page as plain text for a terminal: tags, scripts and styles removed."""
    page = re.sub(r"(?s)<[^>]*>", " ", _strip_head(page))
    for ent, ch in (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&amp;", "&")):
        page = page.replace(ent, ch)
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\s*\n\s*", "\n", page)).strip()


def bar(percent: float | None, width: int = 30) -> str:
    if percent is None:
        return "[" + "?" * width + "]    ?%"
    filled = int(round(width * percent / 100))
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:3.0f}%"


# -- SOAP plumbing ----------------------------------------------------------------------

def _quiet_suds() -> None:
    logging.getLogger("suds").setLevel(logging.CRITICAL)


def _describe_transport_error(e: BaseException, what: str, url: str, timeout: float) -> CliError:
    """Turn the many ways a connection fails into one sentence naming the URL."""
    reason = getattr(e, "reason", e)
    if isinstance(reason, ConnectionRefusedError):
        return CliError(f"cannot reach the {what} at {url}: is it running? (bin/up)", UNREACHABLE)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return CliError(f"the {what} at {url} did not answer within {timeout:g}s", UNREACHABLE)
    if isinstance(reason, socket.gaierror):
        return CliError(f"cannot resolve the host of {url} ({reason.strerror or reason})", UNREACHABLE)
    if isinstance(e, TransportError) or isinstance(e, urllib.error.HTTPError):
        code = getattr(e, "httpcode", None) or getattr(e, "code", None)
        err = CliError(f"the {what} at {url} answered HTTP {code}: {e}"
                       + (" (wrong URL or CONTEXT_ROOT?)" if code == 404 else ""), UNREACHABLE)
        err.http_code = code
        return err
    if isinstance(reason, OSError):
        return CliError(f"cannot reach the {what} at {url}: {reason.strerror or reason}", UNREACHABLE)
    return CliError(f"cannot reach the {what} at {url}: {reason}", UNREACHABLE)


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (urllib.error.URLError, OSError)
# What suds raises on a reply it cannot read (an HTML error page, truncated XML).
_REPLY_ERRORS: tuple[type[BaseException], ...] = (TypeNotFound, BuildError, xml.sax.SAXException)


def _suds_client(url: str, what: str, timeout: float):
    """A suds client for a WSDL URL, built as clfpy builds it (no cache), with a timeout."""
    _quiet_suds()
    try:
        client = Client(url, cache=NoCache(), timeout=timeout)
    except (TransportError, *_NETWORK_ERRORS) as e:
        raise _describe_transport_error(e, what, url, timeout) from None
    except Exception as e:  # a page that is not a WSDL: suds raises parser or type errors
        raise CliError(f"{url} does not serve a usable WSDL for the {what}: {type(e).__name__}: {e}",
                          UNREACHABLE) from None
    if not client.wsdl.services:  # suds reads any XML or HTML page as an empty WSDL
        raise CliError(f"{url} does not serve a WSDL for the {what} (no services in it): wrong URL?",
                          UNREACHABLE)
    return client


def fault_text(fault: Any) -> str:
    """The faultstring of a suds WebFault (raised or, as clfpy does, returned)."""
    f = getattr(fault, "fault", None)
    text = str(getattr(f, "faultstring", None) or fault).strip()
    detail = getattr(f, "detail", None)  # <detail><tns:SomeFault><tns:reason>: the declared fault element
    reason = next((getattr(v, "reason", None) for _, v in detail), None) if hasattr(detail, "__keylist__") else None
    if isinstance(reason, str) and reason.strip() and reason.strip() not in text:
        text += f" ({reason.strip()})"
    return text


# xsd types of start inputs -> how a command-line value becomes one
_INTEGER_TYPES = {"integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger",
                  "unsignedInt", "unsignedLong", "unsignedShort", "unsignedByte"}
_NUMBER_TYPES = {"double", "float", "decimal"}


def typed_value(name: str, xsd: str, text: str) -> Any:
    """A --input value as the WSDL types it; CliError (usage) if it is not one."""
    try:
        if xsd in _INTEGER_TYPES:
            return int(text)
        if xsd in _NUMBER_TYPES:
            return float(text)
    except ValueError:
        raise CliError(f"input {name}: {text!r} is not a{'n integer' if xsd in _INTEGER_TYPES else ' number'} "
                       f"(the WSDL says {xsd})", USAGE) from None
    if xsd == "boolean":
        if text.lower() in ("true", "1", "false", "0"):
            return text.lower() in ("true", "1")
        raise CliError(f"input {name}: {text!r} is not a boolean (true or false)", USAGE)
    return text


def list_services(root: str, timeout: float) -> dict[str, str]:
    """The façade's services {name: WSDL URL}, from the 404 page it answers for its context root."""
    try:
        with urllib.request.urlopen(root, timeout=timeout) as r:
            body = r.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        body = e.read(65536).decode("utf-8", "replace") if e.code == 404 else ""
    except _NETWORK_ERRORS as e:
        raise _describe_transport_error(e, "façade", root, timeout) from None
    head, sep, listed = body.partition("services here:")
    if not sep:
        raise CliError(f"{root} does not list services (not a spoolsoap façade, or wrong CONTEXT_ROOT?)",
                       UNREACHABLE)
    services = {}
    for path in (p.strip() for p in listed.strip().split(",")):
        if path.startswith("/"):
            name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            services[name] = urllib.parse.urljoin(root, path)
    return services


class Service:
    """One service's SOAP methods, its start operation and typed inputs read from its WSDL.

    Every failure becomes a CliError; a 404 for the WSDL names the services the façade has.
    """

    def __init__(self, url: str, timeout: float, name: str = SERVICE, root: str | None = None):
        self.url, self.timeout, self.name = url, timeout, name
        self.what = f"{name} service"
        try:
            self.client = _suds_client(url, self.what, timeout)
        except CliError as e:
            if getattr(e, "http_code", None) != 404 or root is None:
                raise
            try:
                names = sorted(list_services(root, timeout))
            except CliError:
                raise e from None
            raise CliError(f"no service {name} at {url}; the façade has: {', '.join(names)} "
                           f"(--service NAME; `{PROG} services` lists them)", USAGE) from None
        self.operations = {op: [(p[0], p[1].resolve().name) for p in params]
                           for sd in self.client.sd for _, methods in sd.ports for op, params in methods}

    @property
    def start_method(self) -> str:
        starts = [op for op, params in self.operations.items()
                  if op not in PROTOCOL_OPS and {p for p, _ in params} >= set(PROTOCOL_PARAMS)]
        if len(starts) != 1:
            raise CliError(f"the {self.what} at {self.url} has {len(starts) or 'no'} start operations "
                           f"({', '.join(starts) or 'none with serviceID, sessionToken, extraParameters'})")
        return starts[0]

    def inputs(self) -> dict[str, str]:
        """The start operation's own inputs: {name: xsd type}."""
        return {p: t for p, t in self.operations[self.start_method] if p not in PROTOCOL_PARAMS}

    def parse_inputs(self, pairs: list[str], seconds: int | None = None) -> dict[str, Any]:
        """--input NAME=VALUE (and --seconds, the Waiter's secondsToWait), typed from the WSDL."""
        known = self.inputs()
        where = f"{self.start_method} takes: " + (", ".join(f"{k} ({t})" for k, t in known.items()) or "no inputs")
        values: dict[str, Any] = {}
        given = [(SECONDS_INPUT, str(seconds), "--seconds")] if seconds is not None else []
        for pair in pairs:
            name, sep, text = pair.partition("=")
            if not sep or not name:
                raise CliError(f"--input {pair!r}: expected NAME=VALUE", USAGE)
            given.append((name, text, "--input"))
        for name, text, option in given:
            if name not in known:
                raise CliError(f"{option}: the {self.what} has no input {name}; {where}", USAGE)
            if name in values:
                raise CliError(f"input {name} given twice", USAGE)
            values[name] = typed_value(name, known[name], text)
        return values

    def call(self, method: str, *args, **kwargs):
        try:
            fn = getattr(self.client.service, method)
        except MethodNotFound:
            raise CliError(f"the service at {self.url} has no method {method}") from None
        try:
            return fn(*args, **kwargs)
        except WebFault as e:
            raise CliError(f"{method}: SOAP fault: {fault_text(e)}") from None
        except (TransportError, *_NETWORK_ERRORS) as e:
            raise _describe_transport_error(e, self.what, self.url, self.timeout) from None
        except _REPLY_ERRORS as e:
            raise CliError(f"{method}: the service at {self.url} sent a reply that is not SOAP: "
                              f"{type(e).__name__}: {e}") from None


def login(auth_url: str, user: str, project: str, password: str, timeout: float) -> str:
    """A session token from the authentication manager, via clfpy's AuthClient."""

    class _AuthClient(clfpy.AuthClient):
        # clfpy builds its suds client without a timeout; same client, bounded wait.
        def __init__(self, wsdl_url: str):
            self.wsdl_url = wsdl_url
            self.client = _suds_client(wsdl_url, "authentication manager", timeout)

    auth = _AuthClient(auth_url)
    try:
        res = auth.get_session_token(user, project, password)
    except (TransportError, *_NETWORK_ERRORS) as e:
        raise _describe_transport_error(e, "authentication manager", auth_url, timeout) from None
    except _REPLY_ERRORS as e:
        raise CliError(f"the authentication manager at {auth_url} sent a reply that is not SOAP: "
                          f"{type(e).__name__}: {e}") from None
    # clfpy's method_call returns (not raises) WebFault and MethodNotFound.
    if isinstance(res, WebFault):
        raise CliError(f"login of {user} to project {project} failed: {fault_text(res)}")
    if isinstance(res, BaseException):
        raise CliError(f"login failed: {type(res).__name__}: {res}")
    token = "" if res is None else str(res).strip()
    if not token:
        raise CliError(f"login of {user} to project {project} failed: empty token")
    return token


# -- configuration --------------------------------------------------------------------------

def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Settings:
    """Where the services are and who we are, from options, environment and env file."""

    def __init__(self, args):
        self.args = args
        self._cfg = None

    def cfg(self, needed_for: str):
        if self._cfg is None:
            from jobs import config
            from jobs.errors import ConfigError
            try:
                self._cfg = config.load(self.args.env_file)
            except ConfigError as e:
                raise CliError(f"{e} (needed for {needed_for}; or pass it as an option)", USAGE) from None
        return self._cfg

    @property
    def service_name(self) -> str:
        return getattr(self.args, "service", None) or SERVICE

    @property
    def facade_root(self) -> str:
        """The façade's context root, whose 404 page lists its services: --url's directory, else the env file's."""
        if self.args.url:
            return urllib.parse.urljoin(self.args.url, ".")
        c = self.cfg("the façade's URL (--url)")
        return f"http://{_local(c.facade_host)}:{c.facade_port}{c.context_root}/"

    @property
    def service_url(self) -> str:
        if self.args.url:
            return self.args.url
        return f"{self.facade_root}{self.service_name}?wsdl"

    def service(self) -> "Service":
        return Service(self.service_url, self.args.timeout, self.service_name, self.facade_root)

    @property
    def auth_url(self) -> str:
        if self.args.auth:
            return self.args.auth
        c = self.cfg("the authentication manager URL (--auth)")
        return f"http://{_local(c.devauth_host)}:{c.devauth_port}{AUTH_PATH}"

    @property
    def extra_parameters(self) -> str:
        """As the workflow manager sends it: key=value pairs, each followed by a comma."""
        return f"auth={self.auth_url},"

    def password(self) -> str:
        a = self.args
        if a.password_stdin:
            line = sys.stdin.readline()
            pw = line[:-1] if line.endswith("\n") else line
            pw = pw[:-1] if pw.endswith("\r") else pw
        else:
            try:
                pw = getpass.getpass(f"password for {a.user} in project {a.project}: ")
            except EOFError:
                pw = ""
        if not pw:
            raise CliError("no password given", USAGE)
        return pw

    def token(self) -> str:
        a = self.args
        if a.token:
            return a.token
        if os.environ.get("SESSION_TOKEN"):
            return os.environ["SESSION_TOKEN"]
        if a.user and a.project:
            return login(self.auth_url, a.user, a.project, self.password(), a.timeout)
        raise CliError("no session token: pass --token, set SESSION_TOKEN, or give --user and --project "
                          f"to log in (see `{PROG} token --help`)", USAGE)


# -- output -----------------------------------------------------------------------------

def outputs(reply: Any) -> dict[str, Any]:
    """A suds reply object as a dict; a bare value (abort, notify) as {"value": v}."""
    if isinstance(reply, SudsObject):
        return {k: v for k, v in reply}
    return {"value": reply}


def _plain(value: Any) -> Any:
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
            {k: _plain(v) for k, v in values.items() if k != "status_base64"})


def show_reply(sid: str, reply: Any, args) -> Status:
    """Print a start or status reply (text or --json); a failed or aborted job ends with FAILED."""
    status, rest = status_reply(reply)
    if args.json:
        out(json.dumps({"serviceID": sid, **status.as_json(args.page), "outputs": rest}, indent=1))
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


def new_service_id() -> str:
    return f"client-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


# -- commands -------------------------------------------------------------------------------

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


def _start(s: Settings, svc: Service, sid: str, token: str, inputs: dict[str, Any]):
    return svc.call(svc.start_method, serviceID=sid, sessionToken=token,
                    extraParameters=s.extra_parameters, **inputs)


def _outcome(status: Status) -> int:
    return FAILED if status.ended else OK


def cmd_start(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    inputs = svc.parse_inputs(args.input, args.seconds)
    sid = args.id or new_service_id()
    if not args.json:
        out(f"serviceID: {sid}")
    return _outcome(show_reply(sid, _start(s, svc, sid, token, inputs), args))


def cmd_status(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    return _outcome(show_reply(args.id, svc.call("getServiceStatus", serviceID=args.id, sessionToken=token), args))


def cmd_abort(s: Settings, args) -> int:
    token = s.token()
    return _abort(s.service(), args.id, token, args.json)


def _abort(svc: Service, sid: str, token: str, as_json: bool = False) -> int:
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
    response = _plain(value.get("response", value.get("value", "")))
    out(json.dumps({"serviceID": args.id, "response": response}) if args.json else str(response))
    return OK


class Progress:
    """A one-line bar redrawn in place on a terminal; a line per change otherwise."""

    def __init__(self, sid: str, stream=None):
        self.sid, self.stream = sid, stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last: tuple | None = None
        self.drawn = False

    def show(self, percent: float | None, note_: str = "") -> None:
        elapsed = int(time.monotonic() - self.start)
        line = f"{bar(percent)}  {self.sid}  {elapsed // 60}:{elapsed % 60:02d}{('  ' + note_) if note_ else ''}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.drawn = True
        elif (percent, note_) != self.last:
            self.stream.write(f"progress: {'?' if percent is None else f'{percent:.0f}'}%"
                              f"{('  ' + note_) if note_ else ''}\n")
        self.last = (percent, note_)
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def cmd_run(s: Settings, args) -> int:
    token = s.token()
    svc = s.service()
    inputs = svc.parse_inputs(args.input, args.seconds)
    sid = args.id or new_service_id()
    (note if args.json else out)(f"serviceID: {sid}")  # --json: stdout holds only the final JSON
    bar_ = Progress(sid, sys.stderr if args.json else None)
    try:
        return _run_loop(svc, sid, token, args, bar_, s, inputs)
    except KeyboardInterrupt:
        bar_.end()
        return _interrupted(svc, sid, token, args)
    finally:
        bar_.end()


def _run_loop(svc: Service, sid: str, token: str, args, bar_: Progress, s: Settings, inputs: dict[str, Any]) -> int:
    reply = _start(s, svc, sid, token, inputs)
    page, percent = "", None
    while True:
        status, rest = status_reply(reply)
        if status.kind == "COMPLETED" or status.ended:
            return _finished(sid, rest, status, bar_, args)
        if status.kind == "PAGE":  # UNCHANGED: keep showing the last page
            if status.page != page:
                page = status.page
                _show_page(args, bar_, page)
            if status.percent is not None:
                percent = status.percent
        bar_.show(percent)
        reply = _poll(svc, sid, token, args, bar_, percent)


def _poll(svc: Service, sid: str, token: str, args, bar_: Progress, percent: float | None):
    """The next getServiceStatus reply, after the interval; a restarting façade costs retries, not the run."""
    failures = 0
    while True:
        time.sleep(args.interval)
        try:
            return svc.call("getServiceStatus", serviceID=sid, sessionToken=token)
        except CliError as e:  # a fault or a lasting outage ends the run
            if e.code != UNREACHABLE or failures >= args.retries:
                raise
            failures += 1
            bar_.show(percent, f"({e}; retry {failures}/{args.retries})")


def _show_page(args, bar_: Progress, page: str) -> None:
    if args.page and page:
        bar_.end()
        text = page if args.page == "html" else page_text(page)
        (note if args.json else out)(text)


def _finished(sid: str, rest: dict[str, Any], status: Status, bar_: Progress, args) -> int:
    """The end of `run`: COMPLETED and the outputs (exit 0), or FAILED/ABORTED with the reason (exit 1)."""
    if not status.ended:
        bar_.show(100.0)
    bar_.end()
    if args.json:
        out(json.dumps({"serviceID": sid, **status.as_json(None), "outputs": rest}, indent=1))
    else:
        out(status.summary())
        for k, v in ({} if status.ended else rest).items():
            out(f"{k}: {v}")
    return _outcome(status)


def _interrupted(svc: Service, sid: str, token: str, args) -> int:
    if args.abort_on_interrupt:
        answer = "y"
    elif sys.stdin.isatty():
        try:
            answer = input(f"\nabort {sid} on the service? [y]es / [n]o, leave it running: ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = "n"
    else:
        answer = "n"
    if answer.startswith("y"):
        try:
            _abort(svc, sid, token, args.json)
        except CliError as e:
            note(f"{PROG}: {e}")
    else:
        note(f"left {sid} running; check it with `{PROG} status --id {sid}`")
    return INTERRUPTED


# -- argument parsing -------------------------------------------------------------------------

def _positive(kind: type, lo: float) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}")
        return value
    return parse


_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


def _service_name(text: str) -> str:
    """A service name goes into the URL path: a plain name, nothing that could change the path."""
    if not _SERVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a service name (letters, digits, _ . -)")
    return text


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON value on stdout instead of text")
    g = common.add_argument_group("connection and login")
    g.add_argument("--env-file", metavar="FILE", help="configuration file (default: $ENV_FILE or the project's env)")
    g.add_argument("--service", type=_service_name, metavar="NAME",
                   help=f"the façade's service to call (default {SERVICE}; `services` lists them)")
    g.add_argument("--url", metavar="WSDL", help="the service's WSDL URL (instead of --service)")
    g.add_argument("--auth", metavar="WSDL", help="the authentication manager's WSDL URL")
    g.add_argument("--token", metavar="TOKEN", help="session token (default: $SESSION_TOKEN)")
    g.add_argument("--user", metavar="USER", help="log in as USER to get a token")
    g.add_argument("--project", metavar="PROJECT", help="project to log in to")
    g.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of prompting")
    g.add_argument("--timeout", type=_positive(float, 0.1), default=30.0, metavar="SECONDS",
                   help="per-request timeout (default 30)")
    shown = argparse.ArgumentParser(add_help=False)
    shown.add_argument("--page", nargs="?", const="text", choices=("text", "html"),
                       help="also print the status page (as text, or the raw html)")
    shown.add_argument("--raw", action="store_true", help="print the reply as suds shows it")

    inputs = argparse.ArgumentParser(add_help=False)
    inputs.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                        help="an input of the start operation, typed as its WSDL says (repeatable)")
    inputs.add_argument("--seconds", type=_positive(int, 0), metavar="N",
                        help=f"the {SERVICE}'s {SECONDS_INPUT} (same as --input {SECONDS_INPUT}=N)")

    p = Parser(prog=PROG, description="Call a façade's SOAP service as the workflow manager does.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    kw = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}

    s = sub.add_parser("token", parents=[common], help="log in and print a session token", **kw)
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("services", parents=[common], help="list the façade's services, start operations and inputs",
                       **kw)
    s.set_defaults(func=cmd_services)

    s = sub.add_parser("start", parents=[common, shown, inputs], help="call the service's start operation once",
                       **kw)
    s.add_argument("--id", metavar="SID", help="serviceID (default: client-<UTC time>-<random>)")
    s.set_defaults(func=cmd_start)

    s = sub.add_parser("status", parents=[common, shown], help="call getServiceStatus once", **kw)
    s.add_argument("--id", required=True, metavar="SID", help="serviceID")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("abort", parents=[common], help="call abortService", **kw)
    s.add_argument("--id", required=True, metavar="SID", help="serviceID")
    s.set_defaults(func=cmd_abort)

    s = sub.add_parser("notify", parents=[common], help="call notifyService with a message", **kw)
    s.add_argument("--id", required=True, metavar="SID", help="serviceID")
    s.add_argument("message", metavar="MESSAGE")
    s.set_defaults(func=cmd_notify)

    s = sub.add_parser("run", parents=[common, inputs],
                       help="start a job and follow it to the end, like the workflow manager",
                       description="Start a job with a new serviceID and poll getServiceStatus until COMPLETED "
                                   "(exit 0) or a failure or abort page (exit 1, with the reason), drawing the "
                                   "progress from the status page. Ctrl-C asks whether to abort it.",
                       **kw)
    s.add_argument("--id", metavar="SID", help="serviceID (default: client-<UTC time>-<random>)")
    s.add_argument("--interval", type=_positive(float, 0.05), default=6.0, metavar="SECONDS",
                   help="time between getServiceStatus calls (default 6, as the workflow manager)")
    s.add_argument("--retries", type=_positive(int, 0), default=3, metavar="N",
                   help="consecutive unreachable polls tolerated before giving up (default 3)")
    s.add_argument("--abort-on-interrupt", action="store_true", help="on Ctrl-C abort the job without asking")
    s.add_argument("--page", nargs="?", const="text", choices=("text", "html"),
                   help="also print each new status page (as text, or the raw html)")
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: args.func(Settings(args), args))


if __name__ == "__main__":
    sys.exit(main())

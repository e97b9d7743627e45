"""The SOAP calls: suds (as clfpy uses it) for a service's methods, clfpy's AuthClient for session tokens.

A service's start operation and its typed inputs are read from its WSDL, the
list of services from the façade's 404 page. Every failure becomes a CliError
of one line; a SOAP fault becomes `Refused`, which keeps the whole fault for
--json.
"""
from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
import xml.sax
from typing import Any

import clfpy
from suds import BuildError, MethodNotFound, TypeNotFound, WebFault
from suds.cache import NoCache
from suds.client import Client
from suds.transport import TransportError

from jobs.cli import USAGE, CliError

from . import PROG, SERVICE, SECONDS_INPUT, UNREACHABLE

PROTOCOL_OPS = ("getServiceStatus", "abortService", "notifyService")  # every service has these; the other is start
PROTOCOL_PARAMS = ("serviceID", "sessionToken", "extraParameters")  # a start operation's own parameters

_NETWORK_ERRORS: tuple[type[BaseException], ...] = (urllib.error.URLError, OSError)
# What suds raises on a reply it cannot read (an HTML error page, truncated XML).
_REPLY_ERRORS: tuple[type[BaseException], ...] = (TypeNotFound, BuildError, xml.sax.SAXException)


class Refused(CliError):
    """The service (or the authentication manager) answered with a SOAP fault: what was asked and the fault.

    The message is one line: the faultstring's first line (a JobFailed fault
    goes on with the job's last lines of output, which --json keeps).
    """

    def __init__(self, operation: str, fault: Any, service_id: str | None = None, prefix: str = ""):
        f = getattr(fault, "fault", None)
        self.faultstring = str(getattr(f, "faultstring", None) or fault).strip()
        self.faultcode = str(getattr(f, "faultcode", "") or "") or None
        self.fault_name, self.detail = _fault_detail(getattr(f, "detail", None))
        self.operation, self.service_id = operation, service_id
        text = self.faultstring.splitlines()[0] if self.faultstring else "no faultstring"
        reason = self.detail.get("reason", "").strip()
        if reason and reason not in text:
            text += f" ({reason})"
        super().__init__(f"{prefix or f'{operation}: SOAP fault: '}{text}")

    def as_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "fault": self.fault_name, "faultcode": self.faultcode,
                "faultstring": self.faultstring, "detail": self.detail}


def _fault_detail(detail: Any) -> tuple[str | None, dict[str, str]]:
    """<detail><tns:SomeFault><tns:reason>...: the declared fault element's name and its text fields."""
    if not hasattr(detail, "__keylist__"):
        return None, {}
    for name, value in detail:
        fields = {k: str(v) for k, v in value} if hasattr(value, "__keylist__") else {}
        return name, {k: v for k, v in fields.items() if not k.startswith("_")}
    return None, {}


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

    def call(self, method: str, **kwargs):
        try:
            fn = getattr(self.client.service, method)
        except MethodNotFound:
            raise CliError(f"the service at {self.url} has no method {method}") from None
        try:
            return fn(**kwargs)
        except WebFault as e:
            raise Refused(method, e, kwargs.get("serviceID")) from None
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
    failed = f"login of {user} to project {project} failed: "
    # clfpy's method_call returns (not raises) WebFault and MethodNotFound.
    if isinstance(res, WebFault):
        raise Refused("getSessionToken", res, prefix=failed)
    if isinstance(res, BaseException):
        raise CliError(f"login failed: {type(res).__name__}: {res}")
    token = "" if res is None else str(res).strip()
    if not token:
        raise CliError(f"{failed}empty token")
    return token

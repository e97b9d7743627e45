"""waiter-client: call the Waiter service's SOAP methods the way the workflow manager does.

A modern version of the platform's test client: suds (as clfpy uses it) for the
SOAP calls, clfpy's AuthClient for session tokens, and a `run` command that
starts a job and polls getServiceStatus like the workflow manager, drawing the
progress read from the status page.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import logging
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
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
SERVICE = "Waiter"
START_METHOD = "startWaiter"
SECONDS_INPUT = "secondsToWait"
AUTH_PATH = "/authManager/AuthManager?wsdl"

# Exit codes: OK, FAILED (the service refused: SOAP fault, login failed, abort false), USAGE (bad
# arguments or configuration, no session token), INTERRUPTED from jobs.cli, and
UNREACHABLE = 3   # no answer: connection refused, timeout, not a WSDL at that URL

EPILOG = f"""\
where the services are:
  --url      the service WSDL; default http://FACADE_HOST:FACADE_PORT<CONTEXT_ROOT>/{SERVICE}?wsdl
  --auth     the authentication manager WSDL; default http://DEVAUTH_HOST:DEVAUTH_PORT{AUTH_PATH}
  both defaults come from the env file (ENV_FILE or --env-file).
session token: --token, else $SESSION_TOKEN, else logs in with --user/--project
  (password from --password-stdin or a prompt).

exit codes:
  {OK}    done (run: the job COMPLETED)
  {FAILED}    the service refused: SOAP fault, login failed, abort returned false
  {USAGE}    usage or configuration error, no session token
  {UNREACHABLE}    could not reach a service (connection refused, timeout, no WSDL at the URL)
  {INTERRUPTED}  interrupted (Ctrl-C)
"""

# The facade's status page carries its percentage as data-progress="NN"; pages
# without it (the original waiter's) show the number as "NN%".
_MARKER = re.compile(r"""data-progress\s*=\s*["']?\s*(\d{1,3}(?:\.\d+)?)""")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


# -- status pages -------------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    """One status_base64 value, decoded: COMPLETED, UNCHANGED or a page."""
    kind: str                  # "COMPLETED" | "UNCHANGED" | "PAGE"
    page: str = ""
    percent: float | None = None


def decode_status(value: str | None) -> Status:
    text = (value or "").strip()
    if text in ("COMPLETED", "UNCHANGED"):
        return Status(text)
    try:
        page = base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        page = text  # not base64: show it as it came
    return Status("PAGE", page, page_percent(page))


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
    if isinstance(e, TransportError):
        code = getattr(e, "httpcode", None)
        return CliError(f"the {what} at {url} answered HTTP {code}: {e}"
                           + (" (wrong URL or CONTEXT_ROOT?)" if code == 404 else ""), UNREACHABLE)
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


class Service:
    """The Waiter service's SOAP methods; every failure becomes a CliError."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url, timeout
        self.client = _suds_client(url, "waiter service", timeout)

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
            raise _describe_transport_error(e, "waiter service", self.url, self.timeout) from None
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
    def service_url(self) -> str:
        if self.args.url:
            return self.args.url
        c = self.cfg("the service URL (--url)")
        return f"http://{_local(c.facade_host)}:{c.facade_port}{c.context_root}/{SERVICE}?wsdl"

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


def print_reply(reply: Any, show_page: str | None, raw: bool) -> Status:
    if raw:
        out(str(reply))
    values = outputs(reply)
    status = decode_status(values.get("status_base64"))
    if not raw:
        if status.kind == "PAGE":
            out("status: " + ("in progress (no percentage on the page)" if status.percent is None
                              else f"in progress, {status.percent:.0f}%"))
        else:
            out(f"status: {status.kind}")
        for k, v in values.items():
            if k != "status_base64":
                out(f"{k}: {v}")
    if show_page and status.kind == "PAGE":
        out(status.page if show_page == "html" else page_text(status.page))
    return status


def new_service_id() -> str:
    return f"client-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


# -- commands -------------------------------------------------------------------------------

def cmd_token(s: Settings, args) -> int:
    if not (args.user and args.project):
        raise CliError("token needs --user and --project", USAGE)
    out(login(s.auth_url, args.user, args.project, s.password(), args.timeout))
    return OK


def _start(s: Settings, svc: Service, sid: str, token: str, seconds: int | None):
    kwargs = {"serviceID": sid, "sessionToken": token, "extraParameters": s.extra_parameters}
    if seconds is not None:
        kwargs[SECONDS_INPUT] = seconds
    return svc.call(START_METHOD, **kwargs)


def cmd_start(s: Settings, args) -> int:
    token = s.token()
    svc = Service(s.service_url, args.timeout)
    sid = args.id or new_service_id()
    out(f"serviceID: {sid}")
    print_reply(_start(s, svc, sid, token, args.seconds), args.page, args.raw)
    return OK


def cmd_status(s: Settings, args) -> int:
    token = s.token()
    svc = Service(s.service_url, args.timeout)
    print_reply(svc.call("getServiceStatus", serviceID=args.id, sessionToken=token), args.page, args.raw)
    return OK


def cmd_abort(s: Settings, args) -> int:
    token = s.token()
    svc = Service(s.service_url, args.timeout)
    return _abort(svc, args.id, token)


def _abort(svc: Service, sid: str, token: str) -> int:
    reply = svc.call("abortService", serviceID=sid, sessionToken=token)
    value = outputs(reply)
    success = value.get("success", value.get("value"))
    if success in (True, "true", "True", "1", 1):
        out(f"aborted {sid}")
        return OK
    out(f"not aborted: the service could not stop {sid} (already finished, or unknown?)")
    return FAILED


def cmd_notify(s: Settings, args) -> int:
    token = s.token()
    svc = Service(s.service_url, args.timeout)
    reply = svc.call("notifyService", serviceID=args.id, sessionToken=token, message=args.message)
    value = outputs(reply)
    out(str(value.get("response", value.get("value", ""))))
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
    svc = Service(s.service_url, args.timeout)
    sid = args.id or new_service_id()
    out(f"serviceID: {sid}")
    bar_ = Progress(sid)
    try:
        return _run_loop(svc, sid, token, args, bar_, s)
    except KeyboardInterrupt:
        bar_.end()
        return _interrupted(svc, sid, token, args)
    finally:
        bar_.end()


def _run_loop(svc: Service, sid: str, token: str, args, bar_: Progress, s: Settings) -> int:
    reply = _start(s, svc, sid, token, args.seconds)
    status = decode_status(outputs(reply).get("status_base64"))
    if status.kind == "COMPLETED":
        return _completed(reply, bar_)
    page, percent = status.page, status.percent
    bar_.show(percent)
    _show_page(args, bar_, page)
    failures = 0
    while True:
        time.sleep(args.interval)
        try:
            reply = svc.call("getServiceStatus", serviceID=sid, sessionToken=token)
        except CliError as e:
            # A restarting facade should not end the run; a fault or a lasting outage does.
            if e.code != UNREACHABLE or failures >= args.retries:
                raise
            failures += 1
            bar_.show(percent, f"({e}; retry {failures}/{args.retries})")
            continue
        failures = 0
        status = decode_status(outputs(reply).get("status_base64"))
        if status.kind == "COMPLETED":
            return _completed(reply, bar_)
        if status.kind == "PAGE":  # UNCHANGED: keep showing the last page
            if status.page != page:
                page = status.page
                _show_page(args, bar_, page)
            if status.percent is not None:
                percent = status.percent
        bar_.show(percent)


def _show_page(args, bar_: Progress, page: str) -> None:
    if args.page and page:
        bar_.end()
        out(page if args.page == "html" else page_text(page))


def _completed(reply: Any, bar_: Progress) -> int:
    bar_.show(100.0)
    bar_.end()
    out("COMPLETED")
    for k, v in outputs(reply).items():
        if k != "status_base64":
            out(f"{k}: {v}")
    return OK


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
            _abort(svc, sid, token)
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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and login")
    g.add_argument("--env-file", metavar="FILE", help="configuration file (default: $ENV_FILE or the project's env)")
    g.add_argument("--url", metavar="WSDL", help="the service's WSDL URL")
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

    p = Parser(prog=PROG, description=f"Call the {SERVICE} SOAP service as the workflow manager does.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    kw = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}

    s = sub.add_parser("token", parents=[common], help="log in and print a session token", **kw)
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("start", parents=[common, shown], help=f"call {START_METHOD} once", **kw)
    s.add_argument("--id", metavar="SID", help="serviceID (default: client-<UTC time>-<random>)")
    s.add_argument("--seconds", type=_positive(int, 0), metavar="N", help=f"{SECONDS_INPUT} (default: the service's)")
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

    s = sub.add_parser("run", parents=[common], help="start a job and follow it to the end, like the workflow manager",
                       description="Start a job with a new serviceID and poll getServiceStatus until COMPLETED, "
                                   "drawing the progress from the status page. Ctrl-C asks whether to abort it.",
                       **kw)
    s.add_argument("--id", metavar="SID", help="serviceID (default: client-<UTC time>-<random>)")
    s.add_argument("--seconds", type=_positive(int, 0), metavar="N", help=f"{SECONDS_INPUT} (default: the service's)")
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

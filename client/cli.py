"""waiter-client's arguments: one subcommand per SOAP call, and `run`, which follows a job like the workflow manager.

Any service the façade publishes can be driven (`--service`); what a
command prints is in client.output, the calls in client.soap.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Callable

from jobs.cli import FAILED, INTERRUPTED, OK, USAGE, CliError, Parser, out, run

from . import PROG, SECONDS_INPUT, SERVICE, UNREACHABLE
from .commands import cmd_abort, cmd_notify, cmd_services, cmd_start, cmd_status, cmd_token
from .follow import cmd_run
from .output import error_json
from .settings import AUTH_PATH, Settings

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
--json prints one JSON value on stdout instead of text; when a command fails, one JSON object saying
  what failed or was refused (the error stays one line on stderr).
"""


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


def _command(args) -> int:
    """The chosen command; with --json a failure is also one JSON object on stdout."""
    try:
        return args.func(Settings(args), args)
    except CliError as e:
        if getattr(args, "json", False):
            out(error_json(e))
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: _command(args))

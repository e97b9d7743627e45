"""jobctl's command line: the parser, the dispatch to each command, the spool's errors as one line."""
from __future__ import annotations

import argparse
import os
import sys

import structlog

from jobctl.context import PENDING, PROG, Context
from jobctl.control import cmd_control
from jobctl.listing import cmd_list, cmd_show
from jobctl.logs import cmd_logs
from jobctl.status import cmd_status
from jobctl.submit import cmd_submit
from jobctl.usage import cmd_usage
from jobs.cli import FAILED, INTERRUPTED, OK, USAGE, CliError, Parser, run
from jobs import logs, usagereport
from jobs.errors import ConfigError, DefinitionError, JobsError, SpecError
from jobs.spool import NotRegularFile

EPILOG = f"""\
exit codes:
  {OK}    done
  {FAILED}    refused or failed (unknown serviceID, nothing to kill, serviceID taken, ...);
       status: the supervisor runs but is hung (its heartbeat is stale)
  {USAGE}    usage error: bad arguments, malformed serviceID, invalid input, bad configuration
  {PENDING}    kill/restart: the command is queued but not applied yet, because the
       supervisor is not running (it runs when the supervisor starts) or --wait
       elapsed first; status: the supervisor is not running
  {INTERRUPTED}  interrupted (Ctrl-C)

The env file is ENV_FILE (or --env-file); the spool directory comes from it.
"""


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Inspect and control the jobs of the spool supervisor.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", metavar="FILE", help="configuration file (default: $ENV_FILE or the project's env)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    s = sub.add_parser("list", help="list jobs (active ones and those finished in the last 24 h)",
                       description="List jobs. Without options: unfinished jobs and jobs that ended in the "
                                   "last 24 hours. SUBMITTED means the supervisor has not claimed the spec yet.")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--all", action="store_true", help="every job in the spool")
    g.add_argument("--state", metavar="S[,S...]", help="only jobs in these states (e.g. RUNNING,QUEUED)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="spec, state, attempt history and file paths of one job")
    s.add_argument("id", metavar="ID", help="serviceID")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_show)

    for verb, text in (("kill", "stop a queued or running job; it ends ABORTED"),
                       ("restart", "stop the job if running and run it again as a new attempt")):
        s = sub.add_parser(verb, help=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{text[0].upper()}{text[1:]}. The command is handed to the supervisor "
                                       "through the spool; jobctl then waits for the job's state to show it.")
        s.add_argument("id", metavar="ID", help="serviceID")
        s.add_argument("--wait", type=_wait_seconds, default=10.0, metavar="SECONDS",
                       help="how long to wait for the supervisor to apply it (default 10; 0: do not wait)")
        s.set_defaults(func=cmd_control)

    s = sub.add_parser("logs", help="print a job's stdout (or stderr) log")
    s.add_argument("id", metavar="ID", help="serviceID")
    s.add_argument("--stderr", action="store_true", help="the stderr log instead of stdout")
    s.add_argument("--attempt", type=int, metavar="N", help="attempt number (default: the current one)")
    s.add_argument("-f", "--follow", action="store_true",
                   help="keep printing as the log grows, until the job ends (or Ctrl-C)")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("submit", help="run a job by hand; prints its serviceID",
                       description="Submit a job as the facade would. Inputs are NAME=VALUE; they are checked "
                                   "against the job's definition now, not when the job starts.")
    s.add_argument("job", metavar="JOB", help="job type (a definition file's name, e.g. waiter)")
    s.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help="job inputs; missing ones take their default")
    s.add_argument("--id", metavar="SID", help="serviceID (default: manual-<UTC time>-<random>)")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="is the supervisor running; how many jobs in each state",
                       description="Exit status 0 if the supervisor is running, 1 if it runs but is hung "
                                   "(no heartbeat for 3 reconcile periods), 3 if it is not running.")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("usage", help="what jobs used over a period, by project, user or job type",
                       description="Sum the usage records (CPU, wall time, queue wait, peak memory, I/O) of the "
                                   "attempts that ended in [--since, --until). Bounds: an ISO 8601 date or time "
                                   "(UTC unless it says), or a span back from now: 30m, 12h, 7d, 2w.")
    s.add_argument("--by", choices=sorted(usagereport.GROUPS), default="project", help="group by (default project)")
    s.add_argument("--since", metavar="WHEN", help="from this time on (default: the oldest record)")
    s.add_argument("--until", metavar="WHEN", help="before this time (default: now)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("--csv", action="store_true", help="comma-separated values, figures in seconds and bytes")
    s.set_defaults(func=cmd_usage)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse cannot take `submit JOB --id X a=1` (positionals after an option) on its own.
        if args.command == "submit" and all("=" in e and not e.startswith("-") for e in extra):
            args.inputs = [*args.inputs, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not structlog.is_configured():
        # The spool index warns of a file it cannot read; jobctl shows that in the job's row instead.
        logs.configure("error")
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args) -> int:
    """The command, with the spool's and the configuration's errors as CliErrors."""
    try:
        return args.func(Context(args.env_file), args)
    except (ConfigError, DefinitionError) as e:
        raise CliError(f"configuration: {e}", USAGE) from None
    except NotRegularFile as e:  # a spool file someone replaced by a FIFO, symlink ...
        raise CliError(str(e)) from None
    except SpecError as e:
        raise CliError(str(e), USAGE) from None
    except JobsError as e:
        raise CliError(str(e)) from None
    except BrokenPipeError:
        # `jobctl logs X | head`: the reader went away; that is not an error.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return OK
    except OSError as e:
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        raise CliError(f"{e.strerror or e}{where}") from None

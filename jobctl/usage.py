"""`jobctl usage`: what the attempts that ended in a period used, by project, user or job type.

The figures are the supervisor's per-attempt records, read from the
accounting ledger (jobs/accounting.py: only the month files of the period,
and runs retention removed still count) and summed by jobs/usagereport.py,
as the console's usage view does.
"""
from __future__ import annotations

import time

from jobctl.context import Context
from jobs import accounting, usagereport
from jobs.cli import OK, USAGE, CliError, note, out


def cmd_usage(ctx: Context, args) -> int:
    now = time.time()
    try:
        since = None if args.since is None else usagereport.parse_when(args.since, now)
        until = None if args.until is None else usagereport.parse_when(args.until, now)
    except ValueError as e:
        raise CliError(f"--since/--until: {e}", USAGE) from None
    lines = usagereport.report(accounting.Reader(ctx.spool).records(since, until), args.by, since, until)
    if args.json:
        out(usagereport.as_json(lines, args.by, since, until))
    elif args.csv:
        out(usagereport.as_csv(lines, args.by).rstrip("\n"))
    elif not lines:
        note("no attempt with a usage record ended in this period")
    else:
        out(usagereport.as_table(lines, args.by))
    return OK

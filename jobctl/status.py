"""`status`: is the supervisor running (or hung), and how many jobs are in each state."""
from __future__ import annotations

import json
import time

from jobctl.context import PENDING, Context
from jobs.cli import FAILED, OK, out
from jobs.states import DISPLAY_STATES
from jobs.supervisorinfo import supervisor_status


def cmd_status(ctx: Context, args) -> int:
    now = time.time()
    sup = supervisor_status(ctx.spool, now, ctx.cfg.reconcile_seconds)
    counts: dict[str, int] = {}
    for v in ctx.views(now):
        counts[v.state] = counts.get(v.state, 0) + 1
    queue = ctx.spool.read_queue()
    code = (FAILED if sup.hung else OK) if sup.running else PENDING
    if args.json:
        out(json.dumps({"supervisor": {"running": sup.running, "hung": sup.hung, "pid": sup.pid,
                                       "heartbeat_age": sup.heartbeat_age, "started_at": sup.started_at,
                                       "problem": sup.problem},
                        "spool": str(ctx.spool.root), "counts": counts, "queued": len(queue)}, indent=1))
        return code
    if sup.running:
        age = "unknown" if sup.heartbeat_age is None else f"{sup.heartbeat_age:.1f}s ago"
        out(f"supervisor  {'HUNG' if sup.hung else 'running'}, pid {sup.pid}, heartbeat {age}"
            + (", started " + sup.started_at if sup.started_at else ""))
        if sup.hung:
            out(f"warning     no heartbeat for more than {sup.stale_after:.0f}s: the supervisor process "
                "is alive but hung; it claims nothing and applies no command")
    else:
        out(f"supervisor  NOT RUNNING ({sup.problem})")
    out(f"spool       {ctx.spool.root}")
    order = DISPLAY_STATES
    shown = [f"{s} {counts[s]}" for s in order if counts.get(s)] + [f"{s} {n}" for s, n in counts.items() if s not in order]
    out("jobs        " + (", ".join(shown) if shown else "none"))
    if queue:
        out(f"queue       {len(queue)} waiting for a slot")
    return code

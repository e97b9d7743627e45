"""S4 (issue 18): the cost of confinement, two supervisors sampled side by side (JOB_ISOLATION=auto and =off):
spool -> program's first line, interleaved; then each supervisor's CPU with a fleet of plan.jobs running."""
from __future__ import annotations

import time

from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.wait import wait_for
from supervisor.daemon import USAGE_HINT_SECONDS

from ..measure import Sampler
from ..report import Figure, Target, Value, value_of
from ..stats import summary
from ..system import MS, Bench, log
from .s4_spawn import drop_spec, spool_to_first_line

MODES = ("auto", "off")  # JOB_ISOLATION of each supervisor; auto confines as far as this machine allows


def s4_confinement(b: Bench) -> None:
    """The same stamp job through a supervisor with JOB_ISOLATION=auto and one with =off, taking turns first."""
    plan = b.plan
    log(f"S4 confinement: {plan.spawn_samples} samples each, JOB_ISOLATION=auto vs =off, interleaved")
    envs, procs = {}, {}
    try:
        for mode in MODES:
            envs[mode] = b.side_env(f"s4-{mode}", JOB_ISOLATION=mode)
            procs[mode] = b.stack.supervisor(envs[mode])
        b.settle("the S4 confinement supervisors")
        firsts = {mode: [] for mode in MODES}
        for i in range(plan.spawn_samples + 2):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                t0, first, _ = spool_to_first_line(b, f"conf-{mode}-{i:04d}", envs[mode])
                if i >= 2:  # warm-up: page cache, first spawn of each kind
                    firsts[mode].append(first - t0)
        described = {mode: (b.state(f"conf-{mode}-0002", env) or {}).get("isolation") for mode, env in envs.items()}
        cpu = {mode: fleet_cpu(b, procs[mode].pid, envs[mode]) for mode in MODES}
    finally:
        b.stop_side(list(procs.values()), envs.values())
    on, off = summary(firsts["auto"]), summary(firsts["off"])
    b.report.add(Figure("S4", "spool → program's first line p50, confinement on", "ms", value_of(on, scale=MS),
                        value_of(off, scale=MS), "JOB_ISOLATION=off", "{:.1f}", ratio=on["median"] / off["median"],
                        ratio_name="on/off"))
    b.report.notes.append(f"S4 confinement: a run's isolation with JOB_ISOLATION=auto: {described['auto']!r}; "
                          f"with =off: {described['off']!r}")
    over = (on["median"] - off["median"]) * MS
    b.report.target(Target("S4", "spool→first line p50 with confinement on minus off", over, 5, "<=", "ms",
                           f"on {on['median'] * MS:.1f} ms, off {off['median'] * MS:.1f} ms, "
                           f"{on['n']} interleaved samples each"))
    n, (share_on, window), (share_off, _) = plan.jobs, cpu["auto"], cpu["off"]
    b.report.add(Figure("S6", f"supervisor CPU, {n:,} jobs running, confinement on", "% of a core",
                        Value(share_on, share_on, share_on, f"one {window:.0f} s window", 1),
                        Value(share_off, share_off, share_off, f"one {window:.0f} s window", 1),
                        "JOB_ISOLATION=off, same run", "{:.2f}", ratio=share_on / share_off if share_off else None,
                        ratio_name="on/off"))
    b.report.target(Target("S6", f"supervisor CPU with {n:,} jobs running, confinement on minus off",
                           share_on - share_off, 1, "<=", "% of a core",
                           f"on {share_on:.2f} %, off {share_off:.2f} %, one fleet at a time"))


def fleet_cpu(b: Bench, pid: int, env) -> tuple[float, float]:
    """Start plan.jobs light jobs on this side supervisor (specs dropped into its spool), wait until all run,
    sample its CPU over a window; then its jobs are killed. (% of a core, window seconds).

    The window is USAGE_HINT_SECONDS long (full run): with confinement each running attempt's usage hint is
    written once per that period, so each window holds one round of them, whatever its phase.
    """
    n, spool = b.plan.jobs, Spool(env.spool)
    log(f"  S6 confinement: {n} light jobs on the {env.path.parent.name} supervisor")
    sids = [f"fleet-{i:04d}" for i in range(n)]
    for sid in sids:
        drop_spec(spool, JobSpec(sid, "light", {"seconds": 3600}), durable=False)
    status = [b.attempt_file(sid, "status.txt", env) for sid in sids]
    wait_for(lambda: all(p.exists() for p in status), max(120, n * 0.3), 0.25, f"{n} jobs running")
    time.sleep(2)  # the last starts' writes settle
    with Sampler(pid) as sup:
        time.sleep(b.plan.idle_seconds * 2 if b.plan.quick else USAGE_HINT_SECONDS)
    b.stack.kill_jobs(str(env.path.parent))
    return sup.share * 100, sup.elapsed

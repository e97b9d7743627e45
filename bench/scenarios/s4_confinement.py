"""S4 (issue 18): spool -> program's first line with confinement on vs off, two supervisors sampled interleaved."""
from __future__ import annotations

from ..report import Figure, Target, value_of
from ..stats import summary
from ..system import MS, Bench, log
from .s4_spawn import spool_to_first_line

MODES = ("auto", "off")  # JOB_ISOLATION of each supervisor; auto confines as far as this machine allows


def s4_confinement(b: Bench) -> None:
    """The same stamp job through a supervisor with JOB_ISOLATION=auto and one with =off, taking turns first."""
    plan = b.plan
    log(f"S4 confinement: {plan.spawn_samples} samples each, JOB_ISOLATION=auto vs =off, interleaved")
    envs, procs = {}, []
    try:
        for mode in MODES:
            envs[mode] = b.side_env(f"s4-{mode}", JOB_ISOLATION=mode)
            procs.append(b.stack.supervisor(envs[mode]))
        firsts = {mode: [] for mode in MODES}
        for i in range(plan.spawn_samples + 2):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                t0, first, _ = spool_to_first_line(b, f"conf-{mode}-{i:04d}", envs[mode])
                if i >= 2:  # warm-up: page cache, first spawn of each kind
                    firsts[mode].append(first - t0)
        described = {mode: (b.state(f"conf-{mode}-0002", env) or {}).get("isolation") for mode, env in envs.items()}
    finally:
        b.stop_side(procs, envs.values())
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

"""The scenarios of the benchmark, one module each, measured next to their baselines in the same run.

    S1 poll latency under realistic load   S6 supervisor cost with 1,000 jobs
    S2 poll throughput                      S7 spool size independence
    S3 start latency                        S8 spool -> running on Slurm (optional)
    S4 spool -> spawn                       S9 slow clients and the server choice
    S5 exit -> COMPLETED visible            S10 the operator console
                                            S11 fair share and a long queue

They share one real stack (bench/system.py: devauth, supervisor, façade
under granian, the baseline under the same server settings) and run in an
order that keeps the quiet measurements (S4, S5, S3) before the machine is
loaded with 1,000 running jobs (bench/fleet.py; S6, S1, S2, S9, S10). S7
uses two small stacks of its own; S4's confinement row and S11 start supervisors
of their own (bench.system's side_env).
"""
from __future__ import annotations

import traceback

from ..fleet import start_fleet
from ..system import Bench
from .s1_polls import s1_and_s6
from .s2_throughput import s2_throughput
from .s3_start import s3_start_latency
from .s4_confinement import s4_confinement
from .s4_spawn import s4_spool_to_spawn
from .s5_exit import s5_exit_to_completed
from .s6_supervisor import s6_idle
from .s7_spool_size import s7_spool_size
from .s8_slurm import s8_slurm
from .s9_servers import s9_server_choice
from .s10_console import s10_console
from .s11_fairshare import s11_fair_share, s11_queue_cpu, s11_usage_report

SCENARIOS = ("S4", "S5", "S3", "S7", "S11", "S6", "S1", "S2", "S9", "S10", "S8")


def run_all(b: Bench, only: set[str] | None = None) -> None:
    """Every scenario in order; one that breaks is reported as an error and the others go on."""
    want = lambda *names: only is None or any(n in only for n in names)  # noqa: E731

    def attempt(name: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported in the table's output, run continues
            traceback.print_exc()
            b.report.errors.append(f"{name}: {type(e).__name__}: {e}")
            return None

    b.up()
    quiet = ((("S4", "S5"), "S4", s4_spool_to_spawn), (("S4",), "S4 confinement", s4_confinement),
             (("S5",), "S5", s5_exit_to_completed), (("S3",), "S3", s3_start_latency), (("S7",), "S7", s7_spool_size),
             (("S11",), "S11 fair share", s11_fair_share), (("S11",), "S11 queue", s11_queue_cpu),
             (("S11",), "S11 usage", s11_usage_report))
    for names, name, fn in quiet:
        if want(*names):
            attempt(name, fn, b)
    if want("S1", "S2", "S6", "S9", "S10"):
        idle = attempt("S6", s6_idle, b)
        if attempt("fleet", start_fleet, b) and idle is not None:
            loaded = ((("S1", "S6"), "S1/S6", lambda: s1_and_s6(b, idle)), (("S2",), "S2", lambda: s2_throughput(b)),
                      (("S9",), "S9", lambda: s9_server_choice(b)), (("S10",), "S10", lambda: s10_console(b)))
            for names, name, fn in loaded:
                if want(*names):
                    attempt(name, fn)
    if want("S8"):
        attempt("S8", s8_slurm, b)

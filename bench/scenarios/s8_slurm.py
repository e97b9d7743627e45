"""S8 (optional): from the spool to a shim running on a Slurm node, next to the local executor (S4)."""
from __future__ import annotations

import shutil
import subprocess

from ..report import Figure, value_of, value_of_runs
from ..stack import ROOT, write_env
from ..system import MS, Bench, log


def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def s8_slurm(b: Bench) -> None:
    try:
        from ..slurm_latency import measure_spool_to_running
    except ImportError:
        b.report.skipped.append("S8 spool → running on Slurm: bench/slurm_latency.py not present")
        return
    if not slurm_up():
        b.report.skipped.append("S8 spool → running on Slurm: skipped: no Slurm cluster (sinfo does not answer)")
        return
    log("S8 spool->running on Slurm")
    env = write_env(b.directory / "slurm", EXECUTOR="slurm", DEFINITIONS_DIR=str(ROOT / "jobs" / "definitions"))
    proc = b.stack.supervisor(env)
    try:
        r = measure_spool_to_running(env.spool, samples=3 if b.plan.quick else 5)
    finally:
        proc.stop()
        b.stack.procs.remove(proc)
    running = [x["running"] for x in r["samples"]]
    floor = b.spawn.get("ours")
    b.report.add(Figure("S8", "spool → shim running on a Slurm node, p50", "ms", value_of_runs(running, MS, "jobs"),
                        value_of(floor, scale=MS) if floor else None, "local executor (S4)", "{:.0f}"))

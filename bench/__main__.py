"""`python -m bench [--quick] [--only S1,S4] [--out DIR] [--keep]`: run the benchmark, print and save the figures.

`./bench/run` is the same with the project's virtual environment. The full
run takes about 18 minutes on 2 cores; --quick (the smoke test) under one.
Results: DIR/<timestamp>.json, DIR/latest.json and DIR/latest.md (the table
for the README). Exit status 0 when every scenario ran (whatever the targets
say; --strict: 1 when a target fails), 1 when a scenario broke.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from .report import Report
from .scenarios import SCENARIOS, run_all
from .stack import ROOT
from .system import Bench, Plan, log

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, not the targets")
    p.add_argument("--only", help=f"comma-separated scenarios out of {','.join(SCENARIOS)}")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (spools, logs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = p.parse_args(argv)
    only = {s.strip().upper() for s in args.only.split(",")} if args.only else None
    if only and only - set(SCENARIOS):
        p.error(f"--only: unknown scenario(s) {', '.join(sorted(only - set(SCENARIOS)))}")
    plan = Plan.quick_plan() if args.quick else Plan()

    started = time.monotonic()
    now = datetime.now(timezone.utc)
    command = "./bench/run" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
        "quick": args.quick, "python": platform.python_version(), "revision": git_revision(),
        "load_average_before": os.getloadavg(), "plan": plan.__dict__,
        "spread_note": "[a–b] after a median is its interquartile range over the samples, or min–max over "
                       "repeated runs, windows or interleaved blocks (JSON: figures[].ours.spread).",
    }
    report = Report(meta)
    directory = Path(tempfile.mkdtemp(prefix="spoolsoap-bench-"))
    bench = Bench(plan, directory, report)
    log(f"benchmark ({'quick' if args.quick else 'full'}) on {meta['machine']}")
    try:
        run_all(bench, only)
    except Exception as e:  # noqa: BLE001 - the set-up itself failed
        import traceback
        traceback.print_exc()
        report.errors.append(f"set-up: {type(e).__name__}: {e}")
    finally:
        bench.down()
        if args.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    meta["duration_s"] = time.monotonic() - started
    meta["load_average_after"] = os.getloadavg()
    print()
    print(report.text())
    paths = report.write(args.out, now.strftime("%Y%m%dT%H%M%SZ"))
    print(f"\n{meta['duration_s']:.0f} s; results in {paths['json']} (also latest.json, latest.md)")
    if report.errors:
        return 1
    if args.strict and not all(t.passed for t in report.targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

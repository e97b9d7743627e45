"""Benchmark piece: how long a spec dropped into the spool takes to run as a Slurm job.

    measure_spool_to_running(spool_dir, samples=5)

needs a supervisor with EXECUTOR=slurm serving `spool_dir` (and the cluster).
It drops one waiter spec at a time (secondsToWait=0) and measures, per job:
  submitted  spool drop -> state.json says RUNNING (claimed and handed to sbatch)
  running    spool drop -> the shim started on the compute node (exit.json's started_at)
  finished   spool drop -> state.json says SUCCEEDED
One job at a time, so this is latency, not throughput. The compute node's clock
is compared with this machine's: on a real cluster that needs NTP.

Standalone:  ENV_FILE=... python -m bench.slurm_latency [SAMPLES]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from jobs.runstate import from_iso
from jobs.times import read_time
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.wait import wait_for


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values)}


def measure_spool_to_running(spool_dir: str | Path, samples: int = 5, job: str = "waiter",
                             inputs: dict | None = None, timeout: float = 60.0) -> dict:
    """Drop `samples` specs one after another; seconds from drop to submitted, running and finished."""
    spool = Spool(Path(spool_dir))
    inputs = {"secondsToWait": 0} if inputs is None else inputs
    rows = []
    for i in range(samples):
        sid = f"bench-slurm-{uuid.uuid4().hex[:10]}"
        spec = JobSpec(sid, job, inputs).to_json()
        t0 = time.time()
        if not spool.submit(spec, sid):
            raise RuntimeError(f"{sid}: could not drop the spec")
        submitted = wait_for(lambda: (s := spool.read_state(sid)) and s.get("state") in ("RUNNING", "SUCCEEDED", "FAILED")
                             and time.time(), timeout, 0.005, f"{sid} handed to Slurm")
        final = wait_for(lambda: (s := spool.read_state(sid)) and s.get("state") in ("SUCCEEDED", "FAILED", "ABORTED")
                         and (time.time(), s), timeout, 0.005, f"{sid} finished")
        finished, state = final
        if state["state"] != "SUCCEEDED":
            raise RuntimeError(f"{sid} ended {state['state']}: {state.get('reason')}")
        exit_file = spool.files(sid).attempt(state["attempt"]).exit
        shim_started = read_time(json.loads(Path(exit_file).read_text())["started_at"])  # ISO 8601 (older: UNIX time)
        rows.append({"service_id": sid, "slurm_job_id": state.get("executor_id"),
                     "submitted": submitted - t0, "running": shim_started - t0, "finished": finished - t0,
                     "slurm_started_at": from_iso(state.get("started_at"))})
    return {
        "samples": rows,
        "submitted": _summary([r["submitted"] for r in rows]),
        "running": _summary([r["running"] for r in rows]),
        "finished": _summary([r["finished"] for r in rows]),
    }


def main(argv: list[str]) -> int:
    from jobs import config
    cfg = config.load()
    result = measure_spool_to_running(cfg.spool_dir, int(argv[0]) if argv else 5)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

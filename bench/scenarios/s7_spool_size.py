"""S7: poll latency of running jobs with 10,000 finished runs in the spool vs 10 (two stacks, interleaved)."""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.spool import Spool, dump_json
from jobs.states import JobState
from jobs.wait import wait_for

from .. import httpload, soap
from ..measure import raise_errors, sequential
from ..report import Figure, Target, value_of_runs
from ..stack import PROJECT, DevAuth
from ..stats import percentile
from ..system import HOST, LIGHT, MS, Bench, log


def s7_spool_size(b: Bench) -> None:
    """Poll latency of running jobs with 10,000 finished runs in the spool vs 10 (two stacks, interleaved)."""
    plan = b.plan
    sizes = (("small", 10), ("large", plan.s7_finished))
    log(f"S7 spool size: stacks with {sizes[0][1]} and {sizes[1][1]} finished runs, "
        f"{plan.s7_running} running jobs each")
    envs, procs = {}, []
    try:
        for label, count in sizes:
            env = b.side_env(f"s7-{label}")
            t = time.monotonic()
            _populate_finished(env.spool, count, b.auth)
            log(f"  {label}: {count} finished runs written in {time.monotonic() - t:.1f} s")
            procs.append(b.stack.supervisor(env))
            procs.append(b.stack.facade(env))
            envs[label] = env
        for label, env in envs.items():
            bodies = [b.ours(LIGHT, soap.start_body(LIGHT[0], "startBenchLight", f"s7-{i:03d}", b.token(i),
                                                    b.auth.extra(), [("seconds", 3600)]), env)
                      for i in range(plan.s7_running)]
            raise_errors("S7 starts", httpload.batch(HOST, env.port, bodies, 4, soap.not_fault))
        for env in envs.values():
            wait_for(lambda env=env: all(b.attempt_file(f"s7-{i:03d}", "status.txt", env).exists()
                                         for i in range(plan.s7_running)), 60, 0.1, "S7 jobs running")
        polls = {label: [b.ours(LIGHT, soap.status_body(LIGHT[0], f"s7-{i:03d}", b.token(i)), env)
                         for i in range(plan.s7_running)] for label, env in envs.items()}
        for label, env in envs.items():  # warm both workers' caches
            httpload.batch(HOST, env.port, polls[label] * 2, 2, soap.status_kind)
        p50s, p99s = {k: [] for k in envs}, {k: [] for k in envs}
        for block in range(plan.s7_blocks):
            order = list(envs) if block % 2 == 0 else list(reversed(envs))
            for label in order:
                reqs = (polls[label] * (plan.s7_polls // len(polls[label]) + 1))[:plan.s7_polls]
                lat = sequential(HOST, envs[label].port, reqs, soap.status_kind)
                p50s[label].append(statistics.median(lat))
                p99s[label].append(percentile(lat, 99))
    finally:
        b.stop_side(procs, envs.values())
    small, large = statistics.median(p50s["small"]), statistics.median(p50s["large"])
    label_large = f"{plan.s7_finished:,}"
    b.report.add(Figure("S7", f"poll latency p50, {label_large} finished runs in the spool", "ms",
                        value_of_runs(p50s["large"], MS, "blocks"), value_of_runs(p50s["small"], MS, "blocks"),
                        "10 finished runs", "{:.2f}", ratio=large / small, ratio_name="large/small"))
    b.report.add(Figure("S7", f"poll latency p99, {label_large} finished runs in the spool", "ms",
                        value_of_runs(p99s["large"], MS, "blocks"), value_of_runs(p99s["small"], MS, "blocks"),
                        "10 finished runs", "{:.2f}",
                        ratio=statistics.median(p99s["large"]) / statistics.median(p99s["small"]),
                        ratio_name="large/small"))
    b.report.target(Target("S7", f"poll p50 ratio, {label_large} vs 10 finished runs", large / small, 1.2, "<=", "",
                           f"{large * MS:.2f} ms vs {small * MS:.2f} ms, {plan.s7_blocks} interleaved blocks of "
                           f"{plan.s7_polls} sequential polls"))
    b.report.target(Target("S7", "sequential poll p50, 10 finished runs", small * MS, 0.5, "<=", "ms",
                           f"median of {plan.s7_blocks} blocks of {plan.s7_polls} sequential polls"))


def _populate_finished(spool_dir: Path, count: int, auth: DevAuth) -> None:
    """`count` SUCCEEDED runs written straight into runs/, as the supervisor leaves them."""
    spool = Spool(spool_dir).ensure()
    now = time.time()
    for i in range(count):
        sid = f"done-{i:05d}"
        files = spool.files(sid)
        attempt = files.attempt(1)
        os.makedirs(attempt.work)
        started, finished = now - 3600 + i * 0.01, now - 60 + i * 0.001
        spec = JobSpec(sid, "light", {"seconds": 60}, auth.wsdl, {"username": auth.users[0], "project": PROJECT},
                       submitted_at=started - 1)
        rs = RunState(sid, "light", JobState.SUCCEEDED, "exit code 0", 1, pid=100000 + i, create_time=started,
                      exit_code=0, queued_at=started - 1, started_at=started, finished_at=finished,
                      updated_at=finished, history=[Attempt(1, started, finished, 0, None, "exit code 0")])
        Path(files.spec).write_bytes(spec.to_json())
        Path(files.state).write_bytes(rs.to_json())
        Path(attempt.stdout).write_text("".join(f"tick {k}\n" for k in range(60)))
        Path(attempt.stderr).write_text("")
        Path(attempt.work, "status.txt").write_text("100")
        Path(attempt.work, "result.txt").write_text("FINISHED")
        Path(attempt.exit).write_bytes(dump_json({"exit_code": 0, "signal": None, "pid": 100000 + i,
                                                  "started_at": started, "ended_at": finished}))

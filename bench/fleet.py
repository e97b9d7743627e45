"""The fleet: plan.jobs light jobs started through the façade, what they use, and polls over them on a schedule.

S1, S2, S6, S9 and S10 run while the fleet runs.
"""
from __future__ import annotations

import random
import statistics
import time

import psutil

from jobs.wait import wait_for

from . import httpload, soap
from .measure import cpu_seconds, raise_errors
from .system import BASE_NS, HOST, LIGHT, POLL_PERIOD, Bench, log


def start_fleet(b: Bench) -> None:
    """Start plan.jobs light jobs through the façade (16 clients) and wait until they all run."""
    n = b.plan.jobs
    log(f"starting {n} light jobs (perl, status every second) through the façade")
    b.fleet = [f"job-{i:04d}" for i in range(n)]
    bodies = [b.ours(LIGHT, soap.start_body(LIGHT[0], "startBenchLight", sid, b.token(i), b.auth.extra(),
                                            [("seconds", 3600)])) for i, sid in enumerate(b.fleet)]
    t0 = time.monotonic()
    res = httpload.batch(HOST, b.env.port, bodies, 16, soap.not_fault)
    raise_errors("fleet starts", res)
    accepted = time.monotonic() - t0
    status_files = [b.attempt_file(sid, "status.txt") for sid in b.fleet]

    def all_running():
        return all(p.exists() for p in status_files)
    wait_for(all_running, max(120, n * 0.3), 0.25, f"{n} jobs running")
    running = time.monotonic() - t0
    b.base_logs.mkdir(parents=True, exist_ok=True)
    for sid in b.fleet:  # the tutorial reads <log folder>/<sid>/status.txt: the same files as ours
        (b.base_logs / sid).symlink_to(b.files(sid).attempt(1).work)
    b.report.notes.append(f"fleet: {n} jobs accepted in {accepted:.1f} s ({n / accepted:.0f} starts/s, "
                          f"16 clients), all running after {running:.1f} s")
    log(f"  accepted in {accepted:.1f} s, all running after {running:.1f} s")
    tok = b.token(0)
    answer = soap.zeep_spot_check(f"http://{HOST}:{b.env.port}{b.env.context_root}/{LIGHT[1]}?wsdl",
                                  "getServiceStatus", b.fleet[0], tok)
    base_answer = soap.zeep_spot_check(f"http://{HOST}:{b.base_port}/?wsdl", "getServiceStatus", b.fleet[0], tok)
    b.report.notes.append(
        f"zeep spot check (fleet): ours answers a page of {len(answer.status_base64)} base64 characters, "
        f"result={answer.result!r}; the tutorial baseline a page of {len(base_answer.status_base64)}, "
        f"result={base_answer.result!r}")
    return True


def fleet_programs(b: Bench) -> list[psutil.Process]:
    """The fleet's programs (light.pl), without their shims."""
    return [p for p in b.stack.job_processes(str(b.directory / "main"))
            if any("light.pl" in a for a in _cmdline(p) or [])]


def fleet_usage(b: Bench) -> dict:
    """CPU seconds and memory of every job process (shims and programs) right now."""
    programs = b.stack.job_processes(str(b.directory / "main"))
    procs, seen = list(programs), {p.pid for p in programs}
    for p in programs:  # a shim started as a spare has no attempt directory in its argv: take the parents
        try:
            parent = p.parent()
        except psutil.Error:
            continue
        if parent is not None and parent.pid not in seen and "shim.py" in " ".join(_cmdline(parent) or []):
            procs.append(parent)
            seen.add(parent.pid)
    shims = [p for p in procs if "shim.py" in " ".join(_cmdline(p) or [])]
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.Error:
            pass
    uss = []
    for p in random.Random(4).sample(shims, min(10, len(shims))):
        try:
            uss.append(p.memory_full_info().uss)
        except psutil.Error:
            pass
    return {"processes": procs, "count": len(procs), "shims": len(shims), "cpu": cpu_seconds(procs), "rss": rss,
            "shim_uss": statistics.median(uss) if uss else float("nan")}


def _cmdline(p: psutil.Process) -> list[str] | None:
    try:
        return p.cmdline()
    except psutil.Error:
        return None


def schedule(bodies: list[bytes], seconds: float, seed: int) -> list[tuple[float, bytes]]:
    """Every workflow polls every 6 s from a random phase, like N workflow managers' timers."""
    rnd = random.Random(seed)
    out = []
    for body in bodies:
        t = rnd.uniform(0, POLL_PERIOD)
        while t < seconds:
            out.append((t, body))
            t += POLL_PERIOD
    out.sort(key=lambda x: x[0])
    return out


def poll_load(b: Bench, n: int, seconds: float, baseline: bool, floor: bool = False) -> httpload.Result:
    """N pollers every 6 s over the fleet: ours, the tutorial baseline, or (floor) our requests to the HTTP floor."""
    sids = b.fleet[:n]
    if baseline:
        bodies = [b.base(soap.status_body(BASE_NS, sid, b.token(i))) for i, sid in enumerate(sids)]
        port, check = b.base_port, soap.not_fault
    else:
        bodies = [b.ours(LIGHT, soap.status_body(LIGHT[0], sid, b.token(i))) for i, sid in enumerate(sids)]
        port, check = (b.floor_port, None) if floor else (b.env.port, soap.status_kind)
    return httpload.open_loop(HOST, port, schedule(bodies, seconds, n), check)

"""S4: from the spec's arrival in incoming/ to the program's first line, next to the subprocess.Popen floor."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from jobs.spec import JobSpec
from jobs.spool import Spool, fsync_dir
from jobs.wait import wait_for

from ..report import Figure, Target, Value, value_of
from ..stats import summary
from ..stack import Env
from ..system import MS, Bench, log


def read_float(path: Path, timeout: float = 30.0) -> float:
    def ready():
        try:
            text = path.read_text()
            return text and float(text)
        except (FileNotFoundError, ValueError):
            return None
    return wait_for(ready, timeout, 0.001, str(path))


def drop_spec(spool: Spool, spec: JobSpec, durable: bool = True) -> float:
    """Drop a spec into incoming/ as the façade's create_atomic does (staged, link, unlink, fsync dir); its time."""
    staged = spool._stage(spec.to_json(), durable)
    t0 = time.time()
    os.link(staged, spool.incoming_path(spec.service_id))
    os.unlink(staged)
    if durable:
        fsync_dir(spool.incoming)
    return t0


def spool_to_first_line(b: Bench, sid: str, env: Env | None = None) -> tuple[float, float, float]:
    """Drop a stamp job (holdMs 0) into incoming/: when it was dropped, its first line ran, and it was SUCCEEDED."""
    t0 = drop_spec(Spool((env or b.env).spool), JobSpec(sid, "stamp", {"holdMs": 0}))
    first = read_float(b.attempt_file(sid, "first.txt", env))
    wait_for(lambda: (s := b.state(sid, env)) and s["state"] == "SUCCEEDED", 30, 0.002, f"{sid} SUCCEEDED")
    return t0, first, time.time() - t0


def s4_spool_to_spawn(b: Bench) -> None:
    """From the spec's arrival in incoming/ to the program's first line, vs subprocess.Popen of it."""
    plan = b.plan
    d = b.defs["stamp"]
    floor_root = b.directory / "floor"
    ours, floor, ours_total = [], [], []
    log(f"S4 spool->spawn: {plan.spawn_samples} samples, interleaved with the Popen floor")
    for i in range(plan.spawn_samples + 2):
        sid = f"spawn-{i:04d}"
        t0, first, total = spool_to_first_line(b, sid)

        fdir = floor_root / str(i)
        fdir.mkdir(parents=True)
        argv = d.render_argv({"holdMs": 0}, sid, 1)  # relative to its cwd, fdir
        f0 = time.time()
        p = subprocess.Popen(argv, cwd=fdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.wait()
        f1 = time.time()
        if i < 2:
            continue  # warm-up: page cache, first spawn of each kind
        ours.append(first - t0)
        ours_total.append(total)
        floor.append(float((fdir / "first.txt").read_text()) - f0)
        b.floor_exit.append(f1 - float((fdir / "last.txt").read_text()))
    so, sf = summary(ours), summary(floor)
    b.spawn = {"ours": so, "floor": sf}
    b.report.add(Figure("S4", "spool → program's first line, p50", "ms", value_of(so, scale=MS),
                        value_of(sf, scale=MS), "Popen floor", "{:.1f}",
                        ratio=so["median"] / sf["median"]))
    b.report.add(Figure("S4", "spool → program's first line, p90", "ms",
                        Value(so["p90"] * MS, so["p90"] * MS, so["p90"] * MS, "", so["n"]),
                        Value(sf["p90"] * MS, sf["p90"] * MS, sf["p90"] * MS, "", sf["n"]), "Popen floor", "{:.1f}"))
    over = (so["median"] - sf["median"]) * MS
    b.report.target(Target("S4", "spool→spawn p50 minus Popen floor p50 (issue 20)", over, 3, "<=", "ms",
                           f"ours {so['median'] * MS:.1f} ms, floor {sf['median'] * MS:.1f} ms"))

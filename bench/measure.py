"""What the scenarios measure with: CPU seconds of processes, a background sampler, sequential requests."""
from __future__ import annotations

import threading
import time
from typing import Callable

import psutil

from . import httpload


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User and system CPU of the processes and their reaped children; a process that is gone counts 0."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def settle(pids: list[int], share: float = 0.05, window: float = 0.5, timeout: float = 20.0) -> tuple[float, float]:
    """Wait until the processes (and their children: the façade's workers) use less than `share` of a core over
    `window` seconds, so that a scenario does not time their start-up; (seconds waited, last share seen)."""
    t0, seen = time.monotonic(), float("inf")
    while time.monotonic() - t0 < timeout:
        procs = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.Error:
                pass
        before = cpu_seconds(procs)
        time.sleep(window)
        seen = (cpu_seconds(procs) - before) / window
        if seen < share:
            break
    return time.monotonic() - t0, seen


class Sampler(threading.Thread):
    """CPU seconds and RSS of one process, sampled every second in the background."""

    def __init__(self, pid: int, period: float = 1.0):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.period = period
        self.rss: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.rss.append(self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.halt.wait(self.period)

    def __enter__(self) -> "Sampler":
        self.t0, self.cpu0 = time.monotonic(), cpu_seconds([self.proc])
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.join()
        self.elapsed = time.monotonic() - self.t0
        self.cpu = cpu_seconds([self.proc]) - self.cpu0

    @property
    def share(self) -> float:
        return self.cpu / self.elapsed


def sequential(host: str, port: int, requests: list[bytes], check: Callable[[bytes], object]) -> list[float]:
    """Each request's latency, sent one after another on one keep-alive connection; check(answer) raises on a bad one."""
    session = httpload.Session(host, port)
    lat = []
    try:
        for data in requests:
            t = time.perf_counter()
            response = session.request(data)
            lat.append(time.perf_counter() - t)
            check(response)
    finally:
        session.close()
    return lat


def raise_errors(what: str, res: httpload.Result) -> None:
    if res.errors:
        raise RuntimeError(f"{what}: {res.errors} errors, e.g. {res.error_samples[:2]}")

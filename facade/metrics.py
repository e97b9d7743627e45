"""The façade's own figures (requests by operation and outcome, with latencies) and its health endpoints.

Requests are counted across the worker processes with prometheus_client's
multiprocess mode: `python -m facade` (facade.__main__) sets
PROMETHEUS_MULTIPROC_DIR (an emptied directory) before prometheus_client is
imported and the workers fork; each worker writes its counts to its own memory-mapped file
there, and `/metrics`, in whichever worker answers, sums them all. Without
that variable (the app built in a test or a benchmark process) the counts are
the one process's.

The operation and its outcome are left in the WSGI environ by whoever runs
the operation (facade.service's wrapper, facade.fastpath); a request that
never reached one (a WSDL, a refused body, a schema fault) is `wsdl` or
`other`. Labels take only bounded values: operation names, fault names.
Recording costs one histogram observation (~3 µs) per request.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import multiprocess, values

from jobs.metrics import Health
from jobs.spool import Spool

OPERATION = "facade.metrics.operation"  # environ key: the operation's name
OUTCOME = "facade.metrics.outcome"      # environ key: "ok" or the fault's name
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf"))


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and getattr(values.ValueClass, "_multiprocess", False)


def note(environ: dict, operation: str, outcome: str = "ok") -> None:
    """Record what this request was (called where the operation runs)."""
    environ[OPERATION] = operation
    environ[OUTCOME] = outcome


class RequestMetrics:
    """WSGI middleware: each request's latency, by operation and outcome, into one histogram."""

    def __init__(self, app: Callable, registry: CollectorRegistry | None):
        self.app = app
        self.histogram = Histogram("spoolsoap_facade_request_duration_seconds",
                                   "SOAP requests to the façade by operation and outcome (count and latency)",
                                   ["operation", "outcome"], buckets=_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str], object] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status: list[str] = []

        def recording_start_response(s, headers, exc_info=None):
            status.append(s)
            return start_response(s, headers, exc_info) if exc_info else start_response(s, headers)

        result = self.app(environ, recording_start_response)
        try:
            data = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        operation = environ.get(OPERATION)
        if operation is None:
            wsdl = environ.get("REQUEST_METHOD") == "GET" and "wsdl" in (environ.get("QUERY_STRING") or "").lower()
            operation = "wsdl" if wsdl else "other"
        outcome = environ.get(OUTCOME) or ("ok" if status and status[0].startswith("2") else "refused")
        key = (operation, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.histogram.labels(operation, outcome)
        child.observe(time.perf_counter() - started)
        return [data]


class HealthEndpoints:
    """WSGI: /healthz, /readyz and /metrics (the spool's gauges and every worker's request counts)."""

    def __init__(self, spool: Spool, reconcile_seconds: float, registry: CollectorRegistry):
        self.health = Health(spool, reconcile_seconds, registry)
        self.answers = {"/healthz": self.health.healthz, "/readyz": self.health.readyz,
                        "/metrics": self.health.metrics}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, content_type, body = self.answers[environ["PATH_INFO"].rstrip("/") or "/"]()
        reason = {200: "OK", 503: "Service Unavailable"}[status]
        start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                              ("Cache-Control", "no-store")])
        return [body]


def instrument(soap: Callable, spool: Spool, reconcile_seconds: float) -> tuple[Callable, Callable]:
    """(the SOAP app, counted; the health endpoints) sharing one registry."""
    registry = CollectorRegistry(auto_describe=False)
    if _multiprocess():
        multiprocess.MultiProcessCollector(registry)
        counted = RequestMetrics(soap, None)  # the files are the record; the collector sums them
    else:
        counted = RequestMetrics(soap, registry)
    return counted, HealthEndpoints(spool, reconcile_seconds, registry)

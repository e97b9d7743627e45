"""The façade's own figures (requests, the authentication managers) and its health endpoints.

The façade's /metrics is open (anyone who reaches its port, where the SOAP
services are public), so it shows only the façade's own series and its
process's: the spool's series, every project's job counts, are the
console's, behind its login (jobs.metrics).

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

The authentication managers: `spoolsoap_auth_manager_up{manager}` (one per
AUTH_MANAGERS entry: 1 if the last attempt to reach it got an answer, 0 if
not or never; a whole-URL entry not reached for PROBE_SECONDS is asked for
its WSDL at the scrape) and `spoolsoap_auth_validation_seconds{manager,
outcome}` (each validateSessionToken sent: valid, invalid, unavailable).
Token validations the cache answers never reach a manager and are not here.

Writes the storage refuses to the façade (a start's spec, an abort's
command, a notification, a status hint) are counted by errno in
`spoolsoap_facade_spool_writes_refused_total{errno}` (jobs.metrics.CountingSpool);
the supervisor's are the spool's series `spoolsoap_spool_writes_refused_total`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import multiprocess, values

from jobs.authclient import AuthManagerClient, AuthRefused, AuthUnavailable
from jobs.metrics import CountingSpool, Health, refused_writes

from .auth import AuthManagers

OPERATION = "facade.metrics.operation"  # environ key: the operation's name
OUTCOME = "facade.metrics.outcome"      # environ key: "ok" or the fault's name
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
PROBE_SECONDS = 30.0  # a whole-URL manager not reached for this long is asked for its WSDL at a scrape
VALIDATION_OUTCOMES = ("valid", "invalid", "unavailable")
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf"))


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and getattr(values.ValueClass, "_multiprocess", False)


def note(environ: dict, operation: str, outcome: str = "ok") -> None:
    """Record what this request was (called where the operation runs)."""
    environ[OPERATION] = operation
    environ[OUTCOME] = outcome


class RequestMetrics:
    """WSGI middleware: each request's latency, by operation and outcome, into one histogram."""

    def __init__(self, app: Callable, registry: CollectorRegistry | None, series: Iterable[tuple[str, str]] = ()):
        """series: the (operation, outcome) pairs to create at zero."""
        self.app = app
        self.histogram = Histogram("spoolsoap_facade_request_duration_seconds",
                                   "SOAP requests to the façade by operation and outcome (count and latency)",
                                   ["operation", "outcome"], buckets=_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str], object] = {key: self.histogram.labels(*key) for key in series}

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


class AuthMetrics:
    """The authentication managers' reachability and validation latency, by AUTH_MANAGERS entry.

    `client` is the Authenticator's client factory: its clients report here
    what each WSDL load and validateSessionToken call came to.
    """

    def __init__(self, entries: Iterable[str], timeout: float, registry: CollectorRegistry | None,
                 clock: Callable[[], float] = time.monotonic):
        self.entries = tuple(dict.fromkeys(entries))
        self._admits = [(e, AuthManagers([e])) for e in self.entries]
        self.timeout = timeout
        self.clock = clock
        self._reached: dict[str, float] = {}  # entry -> when this process last got an answer or a failure
        self._lock = threading.Lock()
        self.up = Gauge("spoolsoap_auth_manager_up", "1 if the authentication manager answered the last attempt",
                        ["manager"], registry=registry, multiprocess_mode="mostrecent")
        self.latency = Histogram("spoolsoap_auth_validation_seconds",
                                 "validateSessionToken calls to the authentication manager, by outcome",
                                 ["manager", "outcome"], buckets=_BUCKETS, registry=registry)
        for entry in self.entries:
            self.up.labels(entry).set(0)
            for outcome in VALIDATION_OUTCOMES:
                self.latency.labels(entry, outcome)

    def entry(self, url: str) -> str | None:
        """The AUTH_MANAGERS entry that admits url (the label), None for one the façade never asks."""
        return next((e for e, allowed in self._admits if allowed.allows(url)), None)

    def reached(self, url: str, answered: bool) -> None:
        entry = self.entry(url)
        if entry is not None:
            self.up.labels(entry).set(1 if answered else 0)
            with self._lock:
                self._reached[entry] = self.clock()

    def validated(self, url: str, outcome: str, seconds: float) -> None:
        entry = self.entry(url)
        if entry is not None:
            self.latency.labels(entry, outcome).observe(seconds)

    def client(self, url: str, timeout: float) -> AuthManagerClient:
        return TimedAuthClient(url, timeout, self)

    def probe(self) -> None:
        """Before a scrape: load the WSDL of each whole-URL entry not reached for PROBE_SECONDS."""
        now = self.clock()
        for entry in self.entries:
            with self._lock:
                due = now - self._reached.get(entry, float("-inf")) >= PROBE_SECONDS
            if due and "?" in entry:
                try:
                    self.client(entry, self.timeout).connect()
                except AuthUnavailable:
                    pass  # recorded by the client


class TimedAuthClient(AuthManagerClient):
    """An AuthManagerClient that tells AuthMetrics whether the manager answered, and how fast it validated."""

    def __init__(self, wsdl_url: str, timeout: float, metrics: AuthMetrics):
        super().__init__(wsdl_url, timeout)
        self.metrics = metrics

    def connect(self) -> AuthManagerClient:
        try:
            super().connect()
        except AuthUnavailable:
            self.metrics.reached(self.wsdl_url, False)
            raise
        self.metrics.reached(self.wsdl_url, True)
        return self

    def call(self, step: str, method: Callable[..., Any], *args) -> Any:
        if step != "validateSessionToken":
            return super().call(step, method, *args)
        started, outcome, answered = time.perf_counter(), "unavailable", False
        try:
            answer = super().call(step, method, *args)
            outcome, answered = ("valid" if answer is True else "invalid"), True
            return answer
        except AuthRefused:
            outcome, answered = "invalid", True
            raise
        finally:
            self.metrics.validated(self.wsdl_url, outcome, time.perf_counter() - started)
            self.metrics.reached(self.wsdl_url, answered)


class HealthEndpoints:
    """WSGI: /healthz, /readyz and /metrics (every worker's request counts, the authentication managers, this
    process)."""

    def __init__(self, health: Health, auth: AuthMetrics | None = None):
        self.health = health
        self.auth = auth
        self.answers = {"/healthz": self.health.healthz, "/readyz": self.health.readyz, "/metrics": self.metrics}

    def metrics(self) -> tuple[int, str, bytes]:
        if self.auth is not None:
            self.auth.probe()
        return self.health.metrics()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, content_type, body = self.answers[environ["PATH_INFO"].rstrip("/") or "/"]()
        reason = {200: "OK", 503: "Service Unavailable"}[status]
        start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                              ("Cache-Control", "no-store")])
        return [body]


class FacadeMetrics:
    """Everything the façade's /metrics shows, on one registry; built before the app so the
    Authenticator can take `auth.client` as its client factory."""

    def __init__(self, spool: CountingSpool, reconcile_seconds: float, auth_managers: Iterable[str] = (),
                 auth_timeout: float = 5.0):
        self.registry = CollectorRegistry(auto_describe=False)
        self.multiprocess = _multiprocess()
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)
        own = None if self.multiprocess else self.registry  # multiprocess: the files are the record
        self.auth = AuthMetrics(auth_managers, auth_timeout, own)
        self.refused = spool.refused = refused_writes("facade", own)
        self.own_registry = own
        self.health = Health(spool, reconcile_seconds, self.registry)

    def instrument(self, soap: Callable, series: Iterable[tuple[str, str]] = ()) -> tuple[Callable, Callable]:
        """(the SOAP app, counted, its `series` of (operation, outcome) at zero; the health endpoints)."""
        return RequestMetrics(soap, self.own_registry, series), HealthEndpoints(self.health, self.auth)


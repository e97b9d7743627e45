"""Polls answered on the bridge's event loop, and everything that must still go to a thread.

Why: a plain poll of a job this worker reads often, with a token it has
validated, is answered on the loop without the hop to a pool thread (the hop
cost more than the poll); anything that may wait (the authentication manager,
a job's files not read lately, a start's fsync, spyne) must not block the
loop, and a request moved to a thread must be recorded once, not twice.
"""
from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from facade.app import Router, service_app
from facade.auth import Authenticator, AuthManagers
from facade.bridge import WsgiOverRsgi
from facade.guard import RequestGuard
from facade.fastpath import OPERATION
from facade.inline import WouldWait, on_loop
from facade.metrics import RequestMetrics
from facade.operations import UNCHANGED, Operations
from jobs.config import load
from jobs.spool import Spool
from jobs.states import JobState
from test_facade_app import AUTH, DEFS, NOW, PATH, START, TNS, answer, claim, envelope
from test_facade_units import FakeAuthClient

TOKENS = {"good": ("good", "demo")}


class Scope:
    """The parts of granian's RSGI scope the bridge reads."""

    def __init__(self, body: bytes, method: str = "POST", path: str = PATH):
        self.proto, self.method, self.path, self.query_string = "http", method, path, ""
        self.server, self.client, self.scheme, self.http_version = "127.0.0.1:8080", "127.0.0.1:5000", "http", "1.1"
        self.headers = {"content-type": "text/xml; charset=utf-8", "content-length": str(len(body)),
                        "host": "127.0.0.1:8080"}


class Proto:
    """granian's RSGI protocol object for one request: the body, then the answer."""

    def __init__(self, body: bytes):
        self.body = body
        self.sent: tuple[int, list, bytes] | None = None

    async def __call__(self) -> bytes:
        return self.body

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.sent = (status, headers, body)


class Threads:
    """WSGI middleware: the name of the thread each request ran on."""

    def __init__(self, app):
        self.app, self.seen = app, []

    def __call__(self, environ, start_response):
        self.seen.append("loop" if threading.current_thread() is threading.main_thread() else "thread")
        return self.app(environ, start_response)


@pytest.fixture
def stack(tmp_path):
    """The waiter as make_app mounts it (metrics, guard, router, fast path) behind the bridge, auth counted."""
    env = tmp_path / "env"
    env.write_text(f"CONTEXT_ROOT=/demo-waiter\nSPOOL_DIR={tmp_path / 'spool'}\n")
    config = load(env, environ={})
    spool = Spool(config.spool_dir).ensure()
    calls: list[str] = []
    auth = Authenticator(AuthManagers([AUTH]), timeout=1, cache_seconds=30,
                         client_factory=lambda url, timeout: FakeAuthClient(TOKENS, calls))
    ops = Operations(spool, DEFS, auth, abort_wait_seconds=0, clock=lambda: NOW)
    namespaces = {PATH: TNS}
    threads = Threads(service_app(DEFS["waiter"], ops, config))
    metrics = RequestMetrics(RequestGuard(Router({PATH: threads}, namespaces=namespaces), config.max_body_bytes,
                                          namespaces), CollectorRegistry())
    app = Router({}, fallback=metrics)
    app.namespaces, app.inline_paths, app.inline_marker = namespaces, frozenset({PATH}), OPERATION.encode()
    bridge = WsgiOverRsgi(app, config.max_body_bytes, read_timeout=5, threads=2)
    return bridge, spool, threads, calls, metrics, ops


def serve(bridge: WsgiOverRsgi, body: bytes) -> tuple[int, bytes]:
    async def one():
        bridge.__rsgi_init__(asyncio.get_running_loop())
        try:
            proto = Proto(body)
            await bridge.__rsgi__(Scope(body), proto)
            return proto.sent
        finally:
            bridge.__rsgi_del__(None)
    status, _, data = asyncio.run(one())
    return status, data


def poll_body(sid: str, token: str = "good") -> bytes:
    return envelope(f"<w:getServiceStatus><w:serviceID>{sid}</w:serviceID>"
                    f"<w:sessionToken>{token}</w:sessionToken></w:getServiceStatus>")


def counted(metrics: RequestMetrics) -> float:
    return sum(s.value for m in metrics.histogram.collect() for s in m.samples if s.name.endswith("_count"))


def test_a_poll_of_a_warm_job_with_a_cached_token_is_answered_on_the_event_loop(stack):
    """The first poll goes to a thread (token to validate, files not read yet); the next is answered inline."""
    bridge, spool, threads, calls, metrics, _ = stack
    claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    first = serve(bridge, poll_body("job-1"))
    second = serve(bridge, poll_body("job-1"))
    assert threads.seen == ["loop", "thread", "loop"]  # tried on the loop, which gave up; then answered there
    assert first[0] == 200 and answer(first[1]) not in ("", UNCHANGED)
    assert second[0] == 200 and answer(second[1]) == UNCHANGED
    assert calls.count("validateSessionToken") == 1
    assert counted(metrics) == 2


def test_a_poll_that_would_wait_runs_once_in_a_thread(stack):
    """A token not validated yet: the loop gives up before anything is asked, written or counted."""
    bridge, spool, threads, calls, metrics, _ = stack
    claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    status, data = serve(bridge, poll_body("job-1"))
    assert (status, threads.seen) == (200, ["loop", "thread"])  # tried on the loop, answered by a thread
    assert calls.count("validateSessionToken") == 1
    assert counted(metrics) == 1
    assert answer(data) not in ("", UNCHANGED)


def test_a_job_not_polled_here_lately_is_read_in_a_thread(stack):
    """With the token cached, a job whose files this worker has not read goes to a thread (a cold read may block)."""
    bridge, spool, threads, calls, metrics, _ = stack
    claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    claim(spool, "job-2", JobState.RUNNING, started_at=NOW - 5)
    serve(bridge, poll_body("job-1"))
    threads.seen.clear()
    serve(bridge, poll_body("job-2"))
    assert threads.seen == ["loop", "thread"]


def test_a_start_never_runs_on_the_event_loop(stack, tmp_path):
    """A start writes and fsyncs the spool: it goes to a thread even with the token cached."""
    bridge, spool, threads, calls, metrics, ops = stack
    ran_on = []
    real_start = ops.start
    ops.start = lambda *a: ran_on.append(threading.current_thread().name) or real_start(*a)
    claim(spool, "job-1", JobState.RUNNING, started_at=NOW - 5)
    serve(bridge, poll_body("job-1"))  # the token is cached from here on
    threads.seen.clear()
    status, data = serve(bridge, envelope(START.format(inputs="<w:secondsToWait>1</w:secondsToWait>")))
    assert status == 200, data
    assert len(ran_on) == 1 and ran_on[0].startswith("facade")
    assert threads.seen == ["thread"]  # not even tried on the loop: its body does not name getServiceStatus
    assert (spool.incoming / "s-1.json").exists()


def test_the_authenticator_never_asks_a_manager_from_the_event_loop():
    """A cached token is answered on the loop; one to validate raises WouldWait before the manager is asked."""
    calls: list[str] = []
    auth = Authenticator(AuthManagers([AUTH]), timeout=1, cache_seconds=30,
                         client_factory=lambda url, timeout: FakeAuthClient(TOKENS, calls))
    with on_loop(), pytest.raises(WouldWait):
        auth.identify("good", AUTH)
    assert calls == []
    ident = auth.identify("good", AUTH)
    with on_loop():
        assert auth.identify("good", AUTH) == ident
    assert calls.count("validateSessionToken") == 1

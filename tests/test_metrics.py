"""/metrics, /healthz and /readyz of the façade, over real processes.

Why: an operator (Prometheus, a load balancer, a container runtime) must see
how many requests of each kind the façade answers and how fast, summed over
its worker processes, what state the jobs are in, and whether this server
can take work: a spool that refuses writes or a supervisor that is gone
makes /readyz say 503 and why.
"""
from __future__ import annotations

import json
import os
import sys
from html import escape

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from facade_harness import devauth, make_stack, new_sid, soap_envelope, wait_http  # noqa: F401
from harness import ROOT, Managed, free_port, start_supervisor, wait_for
from test_full_disk import fill, small  # noqa: F401

POLLS, BAD_POLLS = 80, 6


def metrics(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample of one /metrics scrape, by (name, sorted labels)."""
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def origin(stack) -> str:
    return f"http://127.0.0.1:{stack.config.facade_port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, devauth):  # noqa: F811
    directory = tmp_path_factory.mktemp("metrics")
    s = make_stack(directory, devauth, facade_env={"PROMETHEUS_MULTIPROC_DIR": str(directory / "prom")})
    yield s
    s.stop()


def start(stack, sid: str, token: str, seconds: int) -> requests.Response:
    return stack.post(soap_envelope(
        f"<w:startWaiter><w:serviceID>{sid}</w:serviceID><w:sessionToken>{token}</w:sessionToken>"
        f"<w:extraParameters>{escape(stack.extra())}</w:extraParameters><w:secondsToWait>{seconds}</w:secondsToWait>"
        "</w:startWaiter>"))


def poll(stack, sid: str, token: str) -> requests.Response:
    return stack.post(soap_envelope(f"<w:getServiceStatus><w:serviceID>{sid}</w:serviceID>"
                                    f"<w:sessionToken>{token}</w:sessionToken></w:getServiceStatus>"))


def test_request_counts_summed_over_workers_and_job_gauges_match_the_spool(stack):
    token = stack.token()
    long_sid, short = new_sid("long"), [new_sid("short") for _ in range(3)]
    for sid, seconds in [(long_sid, 120)] + [(sid, 0) for sid in short]:
        r = start(stack, sid, token, seconds)
        assert r.status_code == 200, r.text
    for sid in short:
        stack.wait_state(sid, {"SUCCEEDED"})
    stack.wait_state(long_sid, {"RUNNING"})
    for i in range(POLLS):  # a new connection each: granian hands them to both workers
        assert poll(stack, long_sid, token).status_code == 200
    for i in range(BAD_POLLS):
        r = poll(stack, long_sid, "not-a-token")
        assert r.status_code == 500 and b"Session-token validation failed" in r.content

    counted_by = {int(p.stem.partition("_")[2]) for p in (stack.directory / "prom").glob("histogram_*.db")}
    workers = {c.pid for c in psutil.Process(stack.facade.pid).children()}
    assert counted_by == workers and len(workers) == 2, (counted_by, workers)  # both workers answered some
    base = origin(stack)
    expected = {("startWaiter", "ok"): 4, ("getServiceStatus", "ok"): POLLS,
                ("getServiceStatus", "TokenValidationFailedFault"): BAD_POLLS}
    for scrape in range(6):  # whichever worker answers, it reports all of them
        m = metrics(base)
        for (op, outcome), n in expected.items():
            key = ("spoolsoap_facade_request_duration_seconds_count", (("operation", op), ("outcome", outcome)))
            assert m.get(key) == n, (op, outcome, m.get(key), scrape)
        assert m[("spoolsoap_facade_request_duration_seconds_bucket",
                  (("le", "+Inf"), ("operation", "getServiceStatus"), ("outcome", "ok")))] == POLLS

        on_disk: dict[str, int] = {}
        for run in (stack.spool / "runs").iterdir():
            state = json.loads((run / "state.json").read_text())["state"]
            on_disk[state] = on_disk.get(state, 0) + 1
        gauges = {dict(labels)["state"]: v for (name, labels), v in m.items()
                  if name == "spoolsoap_jobs" and dict(labels)["job"] == "waiter"}
        assert gauges == on_disk == {"RUNNING": 1, "SUCCEEDED": 3}
        assert m[("spoolsoap_runs_finished_total", (("job", "waiter"), ("state", "SUCCEEDED")))] == 3
        assert m[("spoolsoap_runs_started_total", (("job", "waiter"),))] == 4
        assert m[("spoolsoap_run_duration_seconds_count", (("job", "waiter"),))] == 3
        assert m[("spoolsoap_queue_length", ())] == 0
        assert m[("spoolsoap_supervisor_heartbeat_age_seconds", ())] < 3 * stack.config.reconcile_seconds + 1
        assert m[("spoolsoap_spool_free_bytes", ())] > 0
    # the SOAP routes and the WSDL are untouched
    assert b"getServiceStatus" in requests.get(stack.wsdl, timeout=10).content
    assert poll(stack, long_sid, token).status_code == 200


def test_healthz_and_readyz_follow_the_supervisor(stack):
    base = origin(stack)
    r = requests.get(base + "/healthz", timeout=10)
    assert r.status_code == 200 and r.text == "ok\n"
    r = requests.get(base + "/readyz", timeout=10)
    assert r.status_code == 200, r.text

    stack.supervisor.stop()  # a clean stop removes supervisor.json
    r = requests.get(base + "/readyz", timeout=10)
    assert r.status_code == 503
    assert "supervisor not running" in r.text
    assert requests.get(base + "/healthz", timeout=10).status_code == 200  # the process itself is fine

    stack.supervisor = start_supervisor(stack.env_file, stack.directory / "supervisor.log")
    wait_for(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 15, what="ready again")


def test_readyz_says_503_while_the_spool_is_full(small):  # noqa: F811
    base = origin(small)
    wait_for(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 15, what="ready")
    fill(small.spool)
    try:
        r = requests.get(base + "/readyz", timeout=10)
        assert r.status_code == 503
        assert "spool not writable: ENOSPC" in r.text, r.text
    finally:
        os.unlink(small.spool / "filler")
    wait_for(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 15, what="ready after space")


CONSOLE_APP = """\
from starlette.applications import Starlette
from console.health import routes
app = Starlette(routes=routes)
"""


def test_console_health_routes_serve_the_same_answers(tmp_path, devauth):  # noqa: F811
    """console/health.py's routes in a Starlette app under granian, as the console mounts them."""
    s = make_stack(tmp_path / "stack", devauth)
    try:
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "console_probe.py").write_text(CONSOLE_APP)
        port = free_port()
        server = Managed([sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "1", "console_probe:app"], tmp_path / "console.log",
                         {"ENV_FILE": str(s.env_file), "PYTHONPATH": f"{tmp_path / 'app'}:{ROOT}"})
        s.extras.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", server, what="console probe")
        assert requests.get(base + "/readyz", timeout=10).status_code == 200
        m = metrics(base)
        assert m[("spoolsoap_queue_length", ())] == 0
        assert not any(name.startswith("spoolsoap_facade") for name, _ in m)
        s.supervisor.stop()
        r = requests.get(base + "/readyz", timeout=10)
        assert r.status_code == 503 and "supervisor not running" in r.text
    finally:
        s.stop()

"""/metrics, /healthz and /readyz of the façade and the console; the series alerts are written on.

Why: an operator (Prometheus, a load balancer, a container runtime) must see
how many requests of each kind the façade answers and how fast, summed over
its worker processes, what state the jobs are in, and whether this server
can take work: a spool that refuses writes or a supervisor that is gone
makes /readyz say 503 and why. Alerts need counters that never go backwards
(restarts, retention), every series present before its first event, and
the spool's series from one server only: the console, behind its login,
since they count every project's jobs (the façade's /metrics is open). The
supervisor's counting is stepped in-process (test_supervisor_rules.Rules);
the rest runs real processes.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import platform
import subprocess
import sys
from html import escape
from importlib import metadata

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from console.health import console_health, console_spool
from facade.metrics import AuthMetrics, CountingSpool, FacadeMetrics
from facade_harness import devauth, make_stack, new_sid, soap_envelope, wait_http  # noqa: F401
from harness import ROOT, Managed, free_port, start_supervisor, wait_for
from jobs.metrics import ERRNO_NAMES, FINAL_STATES, STATES, Health, SpoolCollector
from jobs.supervisorinfo import COUNTERS_FILE
from test_full_disk import fill, small  # noqa: F401
from test_supervisor_rules import T0, Rules

POLLS, BAD_POLLS = 80, 6
SPOOL_SERIES = {"spoolsoap_jobs", "spoolsoap_queue_length", "spoolsoap_oldest_queued_age_seconds",
                "spoolsoap_runs_started_total", "spoolsoap_retries_total", "spoolsoap_spool_writes_refused_total",
                "spoolsoap_usage_cpu_seconds_total", "spoolsoap_usage_wall_seconds_total", "spoolsoap_usage_jobs_total"}
BUILD = (("commit", subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() or "unknown"),
         ("python", platform.python_version()), ("version", metadata.version("spoolsoap")))


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


def test_request_counts_summed_over_workers_and_no_project_counts_on_the_open_facade(stack):
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
    # both workers answered some (the master's file holds the series made at zero when it built the app)
    assert workers <= counted_by <= workers | {stack.facade.pid} and len(workers) == 2, (counted_by, workers)
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
        for op, outcome in [("abortService", "ok"), ("notifyService", "JobNotActiveFault"), ("startWaiter",
                                                                                            "InvalidRequestFault")]:
            key = ("spoolsoap_facade_request_duration_seconds_count", (("operation", op), ("outcome", outcome)))
            assert m[key] == 0, key  # at zero before the first

        assert not SPOOL_SERIES & {name for name, _ in m}  # every project's counts: the console's, behind its login
        manager = (("manager", stack.config.auth_managers[0]),)
        assert m[("spoolsoap_auth_manager_up", manager)] == 1
        assert m[("spoolsoap_auth_validation_seconds_count", manager + (("outcome", "valid"),))] >= 1
        assert m[("spoolsoap_auth_validation_seconds_count", manager + (("outcome", "invalid"),))] == BAD_POLLS
        assert m[("spoolsoap_auth_validation_seconds_count", manager + (("outcome", "unavailable"),))] == 0
        assert m[("spoolsoap_build_info", BUILD)] == 1 and m[("process_resident_memory_bytes", ())] > 0
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


def usage(m: dict, what: str, project: str, job: str = "waiter") -> float | None:
    return m.get((f"spoolsoap_usage_{what}_total", (("job", job), ("project", project))))


def test_console_health_routes_export_the_spool_series(tmp_path, devauth):  # noqa: F811
    """console/health.py's routes in a Starlette app under granian: the jobs the façade took, by project."""
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
        assert (None, None, 0) == (usage(m, "jobs", "demo"), usage(m, "jobs", "other"), usage(m, "jobs", "(other)"))
        sids = {user: new_sid(user) for user in ("alice", "bob")}  # projects demo and other
        for user, sid in sids.items():
            assert start(s, sid, s.token(user), 1).status_code == 200
        for sid in sids.values():
            s.wait_state(sid, {"SUCCEEDED"})

        def both_counted():
            got = metrics(base)
            return got if usage(got, "jobs", "demo") == usage(got, "jobs", "other") == 1 else None
        m = wait_for(both_counted, 10, what="both jobs counted")
        for project in ("demo", "other"):
            assert 1 == usage(m, "jobs", project) and 1 <= usage(m, "wall_seconds", project) < 10
            assert usage(m, "cpu_seconds", project) >= 0
        assert 2 == m[("spoolsoap_jobs", (("job", "waiter"), ("state", "SUCCEEDED")))]
        assert 2 == m[("spoolsoap_runs_finished_total", (("job", "waiter"), ("state", "SUCCEEDED")))]
        assert 0 == m[("spoolsoap_console_spool_writes_refused_total", (("errno", "ENOSPC"),))]
        assert not any(name.startswith("spoolsoap_facade") for name, _ in m)
        assert m[("spoolsoap_build_info", BUILD)] == 1 and m[("process_start_time_seconds", ())] > 0
        facade = metrics(origin(s))
        assert not SPOOL_SERIES & {name for name, _ in facade}
        s.supervisor.stop()
        r = requests.get(base + "/readyz", timeout=10)
        assert r.status_code == 503 and "supervisor not running" in r.text
    finally:
        s.stop()


# -- the supervisor's counts, stepped in-process -------------------------------------------------

def scrape(health: Health) -> dict[tuple[str, tuple], float]:
    """Every sample of one /metrics answer of `health`, by (name, sorted labels)."""
    status, content_type, body = health.metrics()
    assert status == 200 and content_type.startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def samples(collector: SpoolCollector) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def rule(**labels) -> tuple:
    return tuple(sorted({"job": "rule", **labels}.items()))


def test_the_supervisors_counts_reach_metrics_and_survive_its_restart_and_retention(tmp_path):
    """Starts, ends, retries, spawn failures, rejections, queue waits and run times, counted where they happen."""
    r = Rules(tmp_path, retries=1, MAX_PARALLEL_JOBS="1")
    r.submit("a", "b")
    (r.spool.incoming / "bad.json").write_text("{not json")
    r.command("nobody", "kill")
    r.step()                              # a starts at once, b waits
    r.ex.exit("a", 1)
    r.step(20)                            # a fails: retried in 10 s; b starts after 20 s
    r.ex.exit("b", 0)
    r.step(20)                            # b succeeds after 20 s; a's second attempt starts, 20 s after its requeue
    r.ex.exit("a", 0)
    r.step(5)                             # a succeeds after 5 s
    r.ex.start_error = OSError(errno.EAGAIN, "fork failed")
    r.submit("c")
    r.step()                              # c cannot be spawned
    assert ["SUCCEEDED", "SUCCEEDED", "FAILED"] == r.states("a", "b", "c")

    expected = {("spoolsoap_runs_started_total", rule()): 3,
                ("spoolsoap_runs_finished_total", rule(state="SUCCEEDED")): 2,
                ("spoolsoap_runs_finished_total", rule(state="FAILED")): 1,
                ("spoolsoap_runs_finished_total", rule(state="ABORTED")): 0,
                ("spoolsoap_retries_total", rule()): 1,
                ("spoolsoap_spawn_failures_total", rule()): 1,
                ("spoolsoap_rejected_total", (("kind", "spec"),)): 1,
                ("spoolsoap_rejected_total", (("kind", "command"),)): 1,
                ("spoolsoap_queue_wait_seconds_count", rule()): 3,
                ("spoolsoap_queue_wait_seconds_sum", rule()): 40.0,
                ("spoolsoap_queue_wait_seconds_bucket", rule(le="10.0")): 1,
                ("spoolsoap_run_duration_seconds_count", rule()): 3,   # a spawn failure ran for 0 s
                ("spoolsoap_run_duration_seconds_sum", rule()): 25.0}
    health = console_health(r.spool, 5.0, ["rule"])
    m = scrape(health)
    assert expected == {k: m[k] for k in expected}

    r.sup = r.new_supervisor()            # a restart reads the counts back
    r.sup.cfg = dataclasses.replace(r.cfg, retention_days=0)
    r.sup.recover(r.now)
    r.step(1)                             # retention removes every finished run
    assert not list(r.spool.runs.iterdir())
    for server in (health, console_health(r.spool, 5.0, ["rule"])):  # the same server, and a new one
        m = scrape(server)
        assert expected == {k: m[k] for k in expected}
        assert 0 == sum(v for (name, _), v in m.items() if name == "spoolsoap_jobs")


def test_every_labelled_series_exists_at_zero_before_anything_happened(tmp_path):
    """Each job type in each state, each final state, rejection kind and errno: present, and 0."""
    r = Rules(tmp_path)
    m = scrape(console_health(r.spool, 5.0, ["rule", "other"]))
    for job in ("rule", "other"):
        for state in STATES:
            assert 0 == m[("spoolsoap_jobs", (("job", job), ("state", state)))]
        for state in FINAL_STATES:
            assert 0 == m[("spoolsoap_runs_finished_total", (("job", job), ("state", state)))]
        for name in ("spoolsoap_runs_started_total", "spoolsoap_retries_total", "spoolsoap_spawn_failures_total",
                     "spoolsoap_queue_wait_seconds_count", "spoolsoap_run_duration_seconds_count"):
            assert 0 == m[(name, (("job", job),))], name
    for kind in ("spec", "command"):
        assert 0 == m[("spoolsoap_rejected_total", (("kind", kind),))]
    assert {"ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES"} == set(ERRNO_NAMES)
    for name in ERRNO_NAMES:
        assert 0 == m[("spoolsoap_spool_writes_refused_total", (("component", "supervisor"), ("errno", name)))]
    assert 0 == m[("spoolsoap_oldest_queued_age_seconds", ())]


def test_oldest_queued_age_is_the_longest_wait_of_a_queued_job(tmp_path):
    """Two jobs queued behind a running one: the gauge is the older one's wait, then 0 when none waits."""
    r = Rules(tmp_path, MAX_PARALLEL_JOBS="1")
    r.submit("a", "b")
    r.step()
    r.submit("c")
    r.step(30)
    collector = SpoolCollector(r.spool, ["rule"], clock=lambda: T0 + 100)
    assert 100 == samples(collector)[("spoolsoap_oldest_queued_age_seconds", ())]
    r.command("b", "kill")
    r.command("c", "kill")
    r.step(1)
    assert 0 == samples(collector)[("spoolsoap_oldest_queued_age_seconds", ())]


def test_refused_writes_are_counted_by_errno_and_shown_once_the_storage_takes_writes_again(tmp_path, monkeypatch):
    """Every supervisor write the storage refuses counts; the counts reach the file when it can be written."""
    r = Rules(tmp_path)
    real = r.sup.spool.write_atomic

    def full(dest, data, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(r.sup.spool, "write_atomic", full)
    r.submit("a")
    r.step()
    r.step(1)
    refused = r.sup.counters.tallies["refused_writes"]["ENOSPC"]
    assert refused >= 2 and not (r.spool.root / COUNTERS_FILE).exists()
    monkeypatch.setattr(r.sup.spool, "write_atomic", real)
    r.step(1)
    m = scrape(console_health(r.spool, 5.0, ["rule"]))
    assert refused == m[("spoolsoap_spool_writes_refused_total", (("component", "supervisor"), ("errno", "ENOSPC")))]
    assert 0 == m[("spoolsoap_spool_writes_refused_total", (("component", "supervisor"), ("errno", "EROFS")))]


def test_a_corrupt_counters_file_counts_from_zero_and_the_daemon_goes_on(tmp_path):
    """The counters file is a spool file: never trusted; what is not a count is dropped."""
    r = Rules(tmp_path)
    (r.spool.root / COUNTERS_FILE).write_text(
        '{"started": {"rule": "many", "x": 2}, "run_seconds": [1], "project_labels": ["p", 3], "usage": '
        '{"jobs": {"p": {"rule": -1, "x": 2.5}, "q": 7}, "cpu_seconds": [1], "wall_seconds": {"p": {"x": 1e999}}}}')
    r.sup = r.new_supervisor()
    r.submit("a")
    r.step()
    m = scrape(console_health(r.spool, 5.0, ["rule"]))
    assert (1, 2) == (m[("spoolsoap_runs_started_total", rule())], m[("spoolsoap_runs_started_total", (("job", "x"),))])
    assert {("p", "rule"): 0, ("p", "x"): 2.5, ("(none)", "rule"): 0, ("(other)", "rule"): 0} == {
        (dict(labels)["project"], dict(labels)["job"]): v for (name, labels), v in m.items()
        if name == "spoolsoap_usage_jobs_total"}


def test_only_the_console_exports_the_spool_series_and_every_server_its_own_process(tmp_path):
    """The façade's open /metrics leaves every project's counts out; both show their process and refused writes."""
    r = Rules(tmp_path)
    facade = scrape(FacadeMetrics(CountingSpool(r.spool.root), 5.0).health)
    console = scrape(console_health(console_spool(r.cfg), 5.0, ["rule"]))
    assert SPOOL_SERIES <= {name for name, _ in console}
    assert not SPOOL_SERIES & {name for name, _ in facade}
    for m, server in ((facade, "facade"), (console, "console")):
        assert 1 == m[("spoolsoap_build_info", BUILD)]
        assert m[("process_cpu_seconds_total", ())] > 0
        assert 0 == m[(f"spoolsoap_{server}_spool_writes_refused_total", (("errno", "EROFS"),))]


def test_an_unreachable_auth_manager_is_down_and_its_failed_validations_are_timed(tmp_path):
    """A manager that does not answer: its gauge is 0 after the scrape's probe, and a validation is `unavailable`."""
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry()
    dead = f"http://127.0.0.1:{free_port()}/authManager/AuthManager?wsdl"
    prefix = f"http://127.0.0.1:{free_port()}/am"
    auth = AuthMetrics([dead, prefix], 2.0, registry)
    up = lambda entry: registry.get_sample_value("spoolsoap_auth_manager_up", {"manager": entry})  # noqa: E731
    assert (0, 0) == (up(dead), up(prefix))
    auth.probe()
    assert 0 == up(dead)
    with pytest.raises(Exception, match="could not|unavailable|reach"):
        auth.client(dead, 2.0).call("validateSessionToken", lambda token: True, "t")
    assert 1 == registry.get_sample_value("spoolsoap_auth_validation_seconds_count",
                                          {"manager": dead, "outcome": "unavailable"})
    assert auth.entry(prefix + "/AuthManager?wsdl") == prefix and auth.entry("http://elsewhere/am") is None
    assert b"spoolsoap_auth_validation_seconds_bucket" in generate_latest(registry)


def refuse_writes(spool, monkeypatch, code: int) -> None:
    def refused(data, durable=True):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(spool, "_stage", refused)


def test_the_facades_refused_writes_are_counted_by_errno(tmp_path, monkeypatch):
    """A start's spec the storage refuses: raised as before, and counted under its errno."""
    spool = CountingSpool(tmp_path / "spool").ensure()
    facade = FacadeMetrics(spool, 5.0)
    refuse_writes(spool, monkeypatch, errno.EDQUOT)
    for _ in range(2):
        with pytest.raises(OSError):
            spool.submit(b"{}", "s-1")
    with pytest.raises(OSError):
        spool.send_command("s-1", "kill", origin="facade")
    m = scrape(facade.health)
    assert 3 == m[("spoolsoap_facade_spool_writes_refused_total", (("errno", "EDQUOT"),))]
    assert 0 == m[("spoolsoap_facade_spool_writes_refused_total", (("errno", "ENOSPC"),))]


def test_the_consoles_refused_writes_are_counted_by_errno(tmp_path, monkeypatch):
    """A submit and a command the storage refuses the console: raised as before, counted from the start."""
    r = Rules(tmp_path)
    spool = console_spool(r.cfg)
    refuse_writes(spool, monkeypatch, errno.EROFS)
    with pytest.raises(OSError):
        spool.submit(b"{}", "s-1")
    with pytest.raises(OSError):
        spool.send_command("s-1", "kill", origin="console:olga")
    m = scrape(console_health(spool, 5.0, ["rule"]))  # built after the writes, as on the first scrape
    assert 2 == m[("spoolsoap_console_spool_writes_refused_total", (("errno", "EROFS"),))]
    assert 0 == m[("spoolsoap_console_spool_writes_refused_total", (("errno", "ENOSPC"),))]

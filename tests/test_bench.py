"""The benchmark harness runs end to end in its tiny mode, and the poll fast path it measures answers like spyne."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from spyne import Application
from spyne.protocol.soap import Soap11

from facade.app import HostAwareWsgiApplication, Router
from facade.auth import Identity
from facade.errors import TokenValidationFailed
from facade.fastpath import FastPath
from facade.guard import RequestGuard
from facade.operations import Operations
from facade.protocol import SafeSoap11
from facade.service import build_service, status_operation
from jobs.definitions import load_definitions
from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.states import JobState
from test_contract import _circles, _import_graph

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S11")


def test_quick_benchmark_runs_and_reports(tmp_path):
    """`python -m bench --quick` runs every scenario against the real stack and writes table, JSON and markdown."""
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", ",".join(SCENARIOS), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=330)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert data["errors"] == []
    assert {f["scenario"] for f in data["figures"]} == set(SCENARIOS)
    assert {t["scenario"] for t in data["targets"]} == set(SCENARIOS)
    for f in data["figures"]:
        if f["name"] != "poll latency p50 at that load":
            assert f["baseline"] is not None, f["name"]
    for t in data["targets"]:
        assert t["line"].startswith(("PASS", "FAIL")) and t["line"] in proc.stdout
    assert "| figure |" in (out / "latest.md").read_text()


def test_the_bench_has_no_import_circle():
    """No module of bench/ imports a module that imports it back (a scenario per module, shared parts below them)."""
    graph = _import_graph(("bench",))
    assert "bench.scenarios.s10_console" in graph and "bench.system" in graph["bench.scenarios.s1_polls"]
    assert [] == _circles(graph)


def test_the_bench_finds_run_files_through_runfiles():
    """bench/ spells no run-file name or path; it asks jobs/runfiles.py through the spool, as every peer does."""
    names = ('"spec.json"', '"state.json"', '"exit.json"', '"attempts"', '"stdout.log"', '"stderr.log"',
             '"notifications.txt"', '"facade.json"')
    found = [f"{path.relative_to(ROOT)}: {name}" for path in sorted((ROOT / "bench").rglob("*.py"))
             for name in names if name in path.read_text()]
    assert [] == found


# -- the poll fast path answers exactly what spyne answers ----------------------------------

SID, DONE, FAILED, OTHER = "fp-run", "fp-done", "fp-failed", "fp-other"
AUTH_URL = "http://auth.example/authManager/AuthManager?wsdl"
NOW = 1_800_000_000.0


class StubAuth:
    """Tokens without an authentication manager: 'good' is alice of project demo."""

    def __init__(self):
        self.calls = 0

    def identify(self, token, auth_url):
        self.calls += 1
        if token != "good":
            raise TokenValidationFailed("the token is unknown or expired")
        return Identity("alice", "demo")


def _run(spool: Spool, sid: str, state: JobState, files: dict[str, str], reason: str = "running",
         project: str = "demo") -> None:
    run = spool.runs / sid
    attempt = run / "attempts" / "1" / "work"  # the program's files
    attempt.mkdir(parents=True)
    (run / "spec.json").write_bytes(JobSpec(sid, "waiter", {"secondsToWait": 60}, AUTH_URL,
                                            {"username": "alice", "project": project}).to_json())
    rs = RunState(sid, "waiter", state, reason, 1, pid=1234, started_at=NOW - 30, updated_at=NOW - 1,
                  finished_at=None if state is JobState.RUNNING else NOW - 2,
                  exit_code=None if state is JobState.RUNNING else (0 if state is JobState.SUCCEEDED else 3),
                  history=[] if state is JobState.RUNNING else [Attempt(1, NOW - 30, NOW - 2, 3, None, reason)])
    (run / "state.json").write_bytes(rs.to_json())
    for name, text in files.items():
        (attempt / name).write_text(text, newline="")


@pytest.fixture
def paths(tmp_path):
    """A façade with and one without the fast path over one spool, the same operations behind both."""
    spool = Spool(tmp_path / "spool").ensure()
    defs = load_definitions(ROOT / "jobs" / "definitions")
    d = defs["waiter"]
    auth = StubAuth()
    ops = Operations(spool, defs, auth, abort_wait_seconds=0, clock=lambda: NOW)
    soap_app = Application([build_service(d, ops)], tns=d.namespace, in_protocol=SafeSoap11(), out_protocol=Soap11())
    spyne_app = HostAwareWsgiApplication(soap_app)
    fast = FastPath(spyne_app, {"getServiceStatus": status_operation(d, ops)}, "/w/Waiter")
    assert fast.templates["getServiceStatus"] is not None
    _run(spool, SID, JobState.RUNNING, {"status.txt": "42", "stdout.log": "tick & <b>1</b>\r\nünï ✓\n"})
    _run(spool, DONE, JobState.SUCCEEDED, {"status.txt": "100", "result.txt": "a & b <c> ]]> \"q\"\r\nünï 𝄞\n"},
         reason="exit code 0")
    _run(spool, FAILED, JobState.FAILED, {"stderr.log": "boom <&>\n"}, reason="exit code 3 <&>")
    _run(spool, OTHER, JobState.RUNNING, {"status.txt": "5"}, project="elsewhere")
    return {"fast": RequestGuard(Router({"/w/Waiter": fast}), 1 << 20),
            "spyne": RequestGuard(Router({"/w/Waiter": spyne_app}), 1 << 20),
            "spool": spool, "auth": auth}


def _call(app, body: bytes, action: str = '""', content_type: str = "text/xml; charset=utf-8"):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/w/Waiter", "SCRIPT_NAME": "", "QUERY_STRING": "",
               "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost",
               "HTTP_SOAPACTION": action}
    seen = []
    result = app(environ, lambda status, headers, exc_info=None: seen.append((status, headers)))
    data = b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return seen[0][0], sorted(seen[0][1]), data


def _status(sid: str, token: str = "good", extra: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            f'xmlns:w="waiter.sintef.no">{extra}<s:Body><w:getServiceStatus><w:serviceID>{sid}</w:serviceID>'
            f"<w:sessionToken>{token}</w:sessionToken></w:getServiceStatus></s:Body></s:Envelope>").encode()


CASES = {
    "running page": (_status(SID), '""'),
    "completed with awkward output": (_status(DONE), '"getServiceStatus"'),
    "failed: page, then fault": (_status(FAILED), '""'),
    "unknown serviceID": (_status("fp-nobody"), '""'),
    "bad token": (_status(SID, "bad"), '""'),
    "other project": (_status(OTHER), '""'),
    "entity in the token": (_status(SID, "go&#111;d"), '""'),
    "token with spaces": (_status(SID, " good "), '""'),
    "with a SOAP header": (_status(SID, extra="<s:Header/>"), '""'),
    "SOAPAction of another operation": (_status(SID), '"abortService"'),
    "invalid element": (_status(SID).replace(b"<w:sessionToken>good</w:sessionToken>", b"<w:nope>x</w:nope>"), '""'),
    "comment inside": (_status(SID).replace(b"<w:serviceID>", b"<!-- c --><w:serviceID>"), '""'),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_answers_byte_for_byte_like_spyne(paths, case):
    """For every kind of poll, the fast path's answers (and the digest file they leave) equal spyne's, twice in a row."""
    body, action = CASES[case]
    runs = paths["spool"].runs
    answers = {}
    for name in ("spyne", "fast"):
        for f in runs.glob("*/facade.json"):
            f.unlink()
        answers[name] = [_call(paths[name], body, action) for _ in range(2)]
        answers[name].append(sorted((f.parent.name, f.read_text()) for f in runs.glob("*/facade.json")))
    assert answers["fast"] == answers["spyne"]


def test_fast_path_runs_a_failing_operation_once(paths):
    """A poll that ends in a fault asks the authentication manager once, not once per path."""
    before = paths["auth"].calls
    status, _, data = _call(paths["fast"], _status(SID, "bad"))
    assert status.startswith("500") and b"Session-token validation failed" in data
    assert paths["auth"].calls - before == 1

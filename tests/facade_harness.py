"""Real processes for the façade tests: devauth, supervisor and the façade under gunicorn, plus SOAP clients.

Test modules import the fixtures they use (`from facade_harness import ...`).
Every component is the real one, started as `python -m ...` on free loopback
ports, with its own spool under the test's temporary directory.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from harness import ARTIFACTS, ROOT, Managed, free_port, processes_with_arg, start_supervisor, wait_for, write_env
from jobs import config as jobs_config
from jobs.config import Config

PROGRAMS = ROOT / "tests" / "programs"
AUTH_PATH = "/authManager/AuthManager"
USERS = {  # username: (password, project)
    "alice": ("alice-pw-1", "demo"),
    "dave": ("dave-pw-4", "demo"),
    "bob": ("bob-pw-2", "other"),
}
BARE_MAX_BODY = 64 * 1024
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "waiter.sintef.no"


def wait_http(url: str, proc: Managed, timeout: float = 30.0, what: str = "server") -> None:
    def ready():
        if not proc.alive():
            raise AssertionError(f"{what} exited early:\n{proc.output()}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(ready, timeout, 0.1, what=f"{what} at {url}")


@dataclass
class DevAuth:
    """A `python -m devauth serve` process with the USERS above."""
    proc: Managed
    port: int
    users_file: Path

    @property
    def wsdl(self) -> str:
        return f"http://127.0.0.1:{self.port}{AUTH_PATH}?wsdl"

    def token(self, user: str = "alice") -> str:
        password, project = USERS[user]
        client = suds_client(self.wsdl)
        return str(client.service.getSessionToken(user, password, project))

    def stop(self) -> None:
        self.proc.stop()


def start_devauth(directory: Path, token_ttl: float | None = None) -> DevAuth:
    directory.mkdir(parents=True, exist_ok=True)
    env_file = write_env(directory)
    users_file = directory / "devauth" / "users.json"
    users_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ENV_FILE": str(env_file)}
    for user, (password, project) in USERS.items():
        subprocess.run([sys.executable, "-m", "devauth", "adduser", user, "--project", project,
                        "--password-stdin", "--replace", "--users-file", str(users_file)],
                       input=password + "\n", text=True, env=env, cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    argv = [sys.executable, "-m", "devauth", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--users-file", str(users_file)]
    if token_ttl is not None:
        argv += ["--token-ttl", str(token_ttl)]
    proc = Managed(argv, directory / "devauth.log", {"ENV_FILE": str(env_file), "LOG_LEVEL": "warning"})
    auth = DevAuth(proc, port, users_file)
    wait_http(auth.wsdl, proc, what="devauth")
    return auth


@dataclass
class Stack:
    """A façade (and usually a supervisor) over one spool, with helpers to call it."""
    directory: Path
    env_file: Path
    config: Config
    facade: Managed
    auth: DevAuth
    supervisor: Managed | None = None
    extras: list[Managed] = field(default_factory=list)
    broken: BrokenAuthManagers | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.facade_port}{self.config.context_root}/Waiter"

    @property
    def wsdl(self) -> str:
        return self.base_url + "?wsdl"

    @property
    def spool(self) -> Path:
        return self.config.spool_dir

    def extra(self, auth_url: str | None = None) -> str:
        """extraParameters as the WFM sends them, with '=' inside values and the trailing comma."""
        return (f"gss=http://gss.example/gss?wsdl=1&x=2,auth={auth_url or self.auth.wsdl},"
                f"WFM=http://wfm.example/wfm,newWorkflowUrl=http://x/new?a=b=c,")

    def token(self, user: str = "alice") -> str:
        return self.auth.token(user)

    def spool_entries(self) -> list[str]:
        """What incoming/ and runs/ hold (both empty after a refused request)."""
        return sorted(os.listdir(self.spool / "incoming")) + sorted(os.listdir(self.spool / "runs"))

    def state(self, sid: str) -> dict | None:
        try:
            return json.loads((self.spool / "runs" / sid / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_state(self, sid: str, states: set[str], timeout: float = 30) -> dict:
        return wait_for(lambda: (s := self.state(sid)) and s["state"] in states and s,
                        timeout, what=f"{sid} in {states}")

    def attempt_file(self, sid: str, name: str, attempt: int = 1) -> Path:
        """The supervisor's files (logs, exit record) in the attempt's directory, the program's in its work/."""
        own = name in ("stdout.log", "stderr.log", "exit.json") or name.startswith(".")
        return self.spool / "runs" / sid / "attempts" / str(attempt) / ("" if own else "work") / name

    def post(self, body: bytes | str, headers: dict | None = None) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return requests.post(self.base_url, data=data, timeout=30,
                             headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.facade_port}{self.config.context_root}/{service}"

    def stop(self) -> None:
        for m in [self.facade, self.supervisor, *self.extras]:
            if m is not None:
                m.stop()
        for p in processes_with_arg(str(self.directory)):  # never leave programs behind
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    p.kill()
                except psutil.Error:
                    pass  # it ended meanwhile


def start_facade(env_file: Path, log: Path, **extra_env) -> Managed:
    cfg = jobs_config.load(env_file, {})
    m = Managed([sys.executable, "-m", "facade"], log, {"ENV_FILE": str(env_file), **extra_env})
    url = f"http://127.0.0.1:{cfg.facade_port}{cfg.context_root}/Waiter?wsdl"
    wait_http(url, m, what="facade")
    return m


def definitions_dir(directory: Path) -> Path:
    """The waiter plus the test programs Tree (a process tree) and ExitWith (fails on demand)."""
    defs = directory / "definitions"
    defs.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "jobs" / "definitions" / "waiter.toml", PROGRAMS / "tree.toml", PROGRAMS / "exit_with.toml"):
        (defs / src.name).symlink_to(src)
    return defs


def make_stack(directory: Path, auth: DevAuth, supervisor: bool = True, facade_env: dict | None = None,
               **overrides) -> Stack:
    """A stack whose façade allows `auth` (AUTH_MANAGERS) unless `overrides` say otherwise.

    `facade_env`: extra environment variables for the façade process only."""
    directory.mkdir(parents=True, exist_ok=True)
    overrides.setdefault("DEFINITIONS_DIR", str(definitions_dir(directory)))
    overrides.setdefault("AUTH_MANAGERS", auth.wsdl)
    env_file = write_env(directory, **overrides)
    cfg = jobs_config.load(env_file, {})
    sup = start_supervisor(env_file, directory / "supervisor.log") if supervisor else None
    try:
        fac = start_facade(env_file, directory / "facade.log", **(facade_env or {}))
    except BaseException:
        if sup:
            sup.stop()
        raise
    return Stack(directory, env_file, cfg, fac, auth, sup)


class BrokenAuthManagers:
    """Loopback ports standing in for authentication managers that fail, held open for a module.

    `dead` refuses connections (bound, never listening); `silent` accepts and
    never answers; `error` is an HTTP server answering every request with 403
    and ERROR_BODY, recording the paths it was asked for in `requests`.
    """
    ERROR_BODY = "secret-metadata-token-1234"

    def __init__(self):
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))
        self._silent = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.requests: list[str] = []
        seen, body = self.requests, self.ERROR_BODY.encode()

        class Forbidden(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.path)
                self.send_response(403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass
        self._error = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
        threading.Thread(target=self._error.serve_forever, daemon=True).start()

    def url(self, which: str, path: str = "/auth?wsdl") -> str:
        sock = {"dead": self._dead, "silent": self._silent, "error": self._error.socket}[which]
        return f"http://127.0.0.1:{sock.getsockname()[1]}{path}"

    def close(self) -> None:
        self._error.shutdown()
        self._error.server_close()
        self._dead.close()
        self._silent.close()


class CountingProxy:
    """A TCP forwarder to a local port that counts the connections made through it."""

    def __init__(self, target_port: int):
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, args=(target_port,), daemon=True).start()

    def _serve(self, target_port: int) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def new_sid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def suds_client(wsdl: str, timeout: float = 30):
    """A client built the way clfpy builds its clients (no cache), plus a timeout."""
    from suds.cache import NoCache
    from suds.client import Client
    return Client(wsdl, cache=NoCache(), timeout=timeout)


def zeep_client(wsdl: str):
    import zeep
    from zeep.transports import Transport
    return zeep.Client(wsdl, transport=Transport(timeout=30, operation_timeout=30))


@dataclass
class FaultInfo:
    """A SOAP fault as either client library reports it."""
    code: str
    message: str
    detail: str


CLIENTS = ("zeep", "suds")


class Soap:
    """A zeep and a suds client for one WSDL, called the same way."""

    def __init__(self, wsdl: str):
        self.zeep = zeep_client(wsdl)
        self.suds = suds_client(wsdl)

    def call(self, kind: str, op: str, *args):
        return getattr(getattr(self, kind).service, op)(*args)

    def fault(self, kind: str, op: str, *args) -> FaultInfo:
        """Call and return the fault; fail if the call succeeds."""
        import suds
        import zeep.exceptions
        try:
            result = self.call(kind, op, *args)
        except zeep.exceptions.Fault as e:
            detail = "" if e.detail is None else " ".join(e.detail.itertext())
            return FaultInfo(str(e.code), str(e.message), detail)
        except suds.WebFault as e:
            return FaultInfo(str(e.fault.faultcode), str(e.fault.faultstring), str(getattr(e.fault, "detail", "")))
        raise AssertionError(f"{kind} {op}{args!r} returned {result!r} instead of a fault")


def soap_envelope(inner: str, ns: str = TNS) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
            f'xmlns:w="{ns}"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>')


def fault_string(response: requests.Response) -> str:
    from lxml import etree
    doc = etree.fromstring(response.content)
    return doc.findtext(f".//{{{SOAP_ENV}}}Fault/faultstring")


# -- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def devauth(tmp_path_factory):
    auth = start_devauth(tmp_path_factory.mktemp("devauth"))
    yield auth
    auth.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, devauth):
    """devauth + supervisor + façade, shared by the tests of one module."""
    s = make_stack(tmp_path_factory.mktemp("stack"), devauth, MAX_PARALLEL_JOBS="25")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def bare_stack(tmp_path_factory, devauth):
    """A façade without supervisor, for requests that must be refused before reaching the spool.

    It allows devauth and, to see how their failures are reported, the broken
    authentication managers in `.broken` (`/auth` on `dead` and `silent`, `/allowed` on `error`).
    """
    broken = BrokenAuthManagers()
    allowed = [devauth.wsdl, broken.url("dead", "/auth"), broken.url("silent", "/auth"), broken.url("error", "/allowed")]
    try:
        s = make_stack(tmp_path_factory.mktemp("bare"), devauth, supervisor=False, AUTH_MANAGERS=" ".join(allowed),
                       AUTH_TIMEOUT_SECONDS="1.5", MAX_BODY_BYTES=str(BARE_MAX_BODY))
    except BaseException:
        broken.close()
        raise
    s.broken = broken
    yield s
    s.stop()
    broken.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


__all__ = [
    "AUTH_PATH", "BARE_MAX_BODY", "CLIENTS", "SOAP_ENV", "TNS", "USERS",
    "BrokenAuthManagers", "CountingProxy", "DevAuth", "FaultInfo", "Soap", "Stack",
    "fault_string", "make_stack", "new_sid", "soap_envelope", "start_devauth", "start_facade", "suds_client",
    "zeep_client",
    "artifacts", "bare_stack", "devauth", "stack",
]

"""The development authentication manager, driven as a real gunicorn process.

Why these tests: devauth is only useful if clients built from the platform's
published contract (shared/contracts) and the clients in use (zeep, suds,
clfpy) work against it unchanged, and if tokens survive the multi-worker
deployment; so every test talks SOAP over HTTP to a real server.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from lxml import etree

from devauth.service import make_wsgi_app
from devauth.tokens import TokenStore, tokens_path_for, ttl_from_env
from jobs import config as jobs_config
from jobs.errors import ConfigError
from devauth.users import (
    UsersFileError,
    add_user,
    ensure_demo_user,
    load_users,
    verify_password,
)

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = Path(__file__).resolve().parents[2] / "shared" / "contracts"
TNS = "http://authmanager.sintef.no/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
BINDING = f"{{{TNS}}}AuthManagerPortBinding"
SERVICE_PATH = "/authManager/AuthManager"

ALICE_PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "s3cret-bob"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m devauth serve` subprocess on a free loopback port."""

    def __init__(self, users_file: Path, logdir: Path, *extra: str, env: dict | None = None):
        self.users_file = users_file
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}{SERVICE_PATH}"
        self.wsdl = f"{self.url}?wsdl"
        self.stdout_path = logdir / f"devauth-{self.port}.out"
        self.stderr_path = logdir / f"devauth-{self.port}.err"
        cmd = [sys.executable, "-m", "devauth", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--users-file", str(users_file), *extra]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, "LOG_LEVEL": "warning", **(env or {})},
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.wsdl, timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"devauth did not come up at {self.wsdl}:\n{self.stderr_path.read_text()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _adduser_cli(users_file: Path, username: str, password: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "devauth", "adduser", username, "--password-stdin",
         "--users-file", str(users_file), *args],
        cwd=REPO, input=password + "\n", text=True, check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("devauth") / "users.json"
    _adduser_cli(path, "alice", ALICE_PASSWORD, "--project", "p1", "--role", "user", "--role", "admin")
    add_user(path, "bob", BOB_PASSWORD, {"p2": ["viewer"], "p3": []})
    return path


@pytest.fixture(scope="module")
def server(users_file):
    srv = Server(users_file, users_file.parent, "--workers", "2")
    yield srv
    srv.stop()


@pytest.fixture
def contract_wsdl(tmp_path) -> Path:
    """A copy of the contract whose schema import points at the local XSD."""
    if not (CONTRACTS / "AuthManager.wsdl").is_file():  # shared/ sits beside the repository, not in it
        pytest.skip(f"contract files not found in {CONTRACTS}: the steering repository's shared/ is not beside this one")
    xsd = tmp_path / "AuthManager.xsd"
    shutil.copyfile(CONTRACTS / "AuthManager.xsd", xsd)
    text = (CONTRACTS / "AuthManager.wsdl").read_text(encoding="utf-8")
    text, count = re.subn(r'schemaLocation="[^"]*"', f'schemaLocation="{xsd.name}"', text)
    assert count == 1
    wsdl = tmp_path / "AuthManager.wsdl"
    wsdl.write_text(text, encoding="utf-8")
    return wsdl


def _soap(url: str, operation: str, **children: str) -> requests.Response:
    """POST a hand-written document/literal request with qualified children."""
    body = "".join(f"<a:{k}>{v}</a:{k}>" for k, v in children.items())
    envelope = (
        f'<?xml version="1.0" encoding="utf-8"?><S:Envelope xmlns:S="{SOAP_ENV}"><S:Body>'
        f'<a:{operation} xmlns:a="{TNS}">{body}</a:{operation}></S:Body></S:Envelope>'
    )
    return requests.post(url, data=envelope.encode(), timeout=10,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})


def test_wsdl_and_paths(server):
    """The WSDL is served with our address, printed on start, and other paths are 404."""
    r = requests.get(server.wsdl, timeout=5)
    assert r.status_code == 200
    root = etree.fromstring(r.content)
    assert root.get("targetNamespace") == TNS
    address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == server.url
    assert f"WSDL at {server.wsdl}" in server.stdout()
    assert requests.get(f"http://127.0.0.1:{server.port}/nope", timeout=5).status_code == 404
    # The response child `return` is unqualified, as in the contract.
    resp = _soap(server.url, "validateSessionToken", sessionToken="x")
    ret = etree.fromstring(resp.content).find(f".//{{{TNS}}}validateSessionTokenResponse")
    assert [c.tag for c in ret] == ["return"] and ret[0].text == "false"


def test_dtd_refused(server, tmp_path):
    """A request carrying a DTD (e.g. an external entity) gets a client fault, nothing resolved."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    envelope = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "{secret.as_uri()}">]>'
        f'<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body><a:getSessionToken xmlns:a="{TNS}">'
        "<a:username>&e;</a:username><a:password>p</a:password><a:project>p</a:project>"
        "</a:getSessionToken></S:Body></S:Envelope>"
    )
    r = requests.post(server.url, data=envelope, timeout=10, headers={"Content-Type": "text/xml"})
    assert r.status_code == 500 and "TOP-SECRET" not in r.text
    fault = etree.fromstring(r.content).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault.findtext("faultcode").endswith("Client.DTDNotAllowed")


def test_zeep_client_from_contract(server, contract_wsdl):
    """A zeep client generated from the real contract drives every operation."""
    import zeep
    import zeep.exceptions

    client = zeep.Client(str(contract_wsdl))
    svc = client.create_service(BINDING, server.url)
    token = svc.getSessionToken("alice", ALICE_PASSWORD, "p1")
    assert isinstance(token, str) and len(token) >= 40
    assert svc.validateSessionToken(token) is True
    assert svc.getUsername(token) == "alice"
    assert svc.getProject(token) == "p1"
    assert svc.getRoles(token) == ["user", "admin"]
    assert svc.getEndpoint(token, "authManager") == server.url

    with pytest.raises(zeep.exceptions.Fault) as bad:
        svc.getSessionToken("alice", "wrong", "p1")
    assert "Invalid username or password" in bad.value.message
    with pytest.raises(zeep.exceptions.Fault) as not_member:
        svc.getSessionToken("alice", ALICE_PASSWORD, "p2")
    assert "not a member of project 'p2'" in not_member.value.message
    with pytest.raises(zeep.exceptions.Fault) as unknown:
        svc.getUsername("no-such-token")
    assert "invalid or expired session token" in unknown.value.message
    assert svc.validateSessionToken("no-such-token") is False

    # A project without roles yields an empty list, not a fault.
    bob = svc.getSessionToken("bob", BOB_PASSWORD, "p3")
    assert svc.getRoles(bob) == [] and svc.getProject(bob) == "p3"


def test_suds_client_from_contract(server, contract_wsdl):
    """A suds client generated from the real contract, pointed at our address, works."""
    from suds import WebFault
    from suds.cache import NoCache
    from suds.client import Client

    client = Client(contract_wsdl.as_uri(), location=server.url, cache=NoCache())
    token = client.service.getSessionToken("bob", BOB_PASSWORD, "p2")
    assert client.service.validateSessionToken(token) is True
    assert client.service.getUsername(token) == "bob"
    assert client.service.getProject(token) == "p2"
    assert list(client.service.getRoles(token)) == ["viewer"]
    with pytest.raises(WebFault) as bad:
        client.service.getSessionToken("bob", "wrong", "p2")
    assert "Invalid username or password" in bad.value.fault.faultstring
    assert client.service.validateSessionToken("no-such-token") is False


def test_clfpy_auth_client(server):
    """clfpy.AuthClient, built from our own WSDL, gets and inspects a token."""
    from clfpy import AuthClient
    from suds import WebFault

    auth = AuthClient(server.wsdl)
    token = auth.get_session_token("alice", "p1", ALICE_PASSWORD)  # (username, project, password)
    assert isinstance(token, str) and not isinstance(token, WebFault)
    assert auth.validate_session_token(token) is True
    assert auth.get_username(token) == "alice"
    assert auth.get_project(token) == "p1"
    assert list(auth.get_roles(token)) == ["user", "admin"]
    assert auth.validate_session_token("no-such-token") is False
    assert isinstance(auth.get_session_token("alice", "p1", "wrong"), WebFault)


def test_tokens_shared_between_workers(server):
    """A token issued by one gunicorn worker validates in the other worker too."""
    issued = _soap(server.url, "getSessionToken", username="alice", password=ALICE_PASSWORD, project="p1")
    assert issued.status_code == 200
    token = etree.fromstring(issued.content).findtext(f".//{{{TNS}}}getSessionTokenResponse/return")
    issuer = issued.headers["X-Devauth-Worker"]

    def validate(_):
        r = _soap(server.url, "validateSessionToken", sessionToken=token)
        return r.headers["X-Devauth-Worker"], r.text

    seen = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _round in range(10):
            for worker, text in pool.map(validate, range(16)):
                assert "<return>true</return>" in text
                seen.add(worker)
            if seen - {issuer}:
                break
    assert seen - {issuer}, f"all validations were answered by the issuing worker {issuer}"


def test_no_plain_secrets_on_disk(server, users_file):
    """The users file holds only scrypt hashes and the token database only token digests."""
    token = _soap(server.url, "getSessionToken", username="bob", password=BOB_PASSWORD, project="p2")
    token = etree.fromstring(token.content).findtext(f".//{{{TNS}}}getSessionTokenResponse/return")
    raw = users_file.read_text()
    assert ALICE_PASSWORD not in raw and BOB_PASSWORD not in raw
    for user in load_users(users_file).values():
        assert user.password_hash.startswith("scrypt$")
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    db = tokens_path_for(users_file)
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert token and token not in dump


def test_token_expiry_and_demo_account(tmp_path):
    """With --token-ttl 2 a token is valid at first and invalid after 2 s; --demo logs in."""
    import zeep
    import zeep.exceptions

    users = tmp_path / "users.json"
    srv = Server(users, tmp_path, "--workers", "1", "--token-ttl", "2", "--demo")
    try:
        creds_file = tmp_path / "demo-credentials.txt"
        assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
        creds = dict(line.split("=", 1) for line in creds_file.read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
        assert creds["password"] in srv.stdout()
        client = zeep.Client(srv.wsdl)
        token = client.service.getSessionToken("demo", creds["password"], "demo")
        assert client.service.validateSessionToken(token) is True
        assert client.service.getRoles(token) == ["user"]
        time.sleep(2.3)
        assert client.service.validateSessionToken(token) is False
        with pytest.raises(zeep.exceptions.Fault):
            client.service.getProject(token)
    finally:
        srv.stop()


def test_demo_credentials_kept_or_reset(tmp_path):
    """ensure_demo_user keeps a working demo password and resets it when its record is lost."""
    users = tmp_path / "users.json"
    first, changed = ensure_demo_user(users)
    assert changed
    again, changed = ensure_demo_user(users)
    assert not changed and again["password"] == first["password"]
    (tmp_path / "demo-credentials.txt").unlink()
    reset, changed = ensure_demo_user(users)
    assert changed and reset["password"] != first["password"]
    assert verify_password(reset["password"], load_users(users)["demo"].password_hash)


def test_bad_users_file_is_named(tmp_path):
    """A malformed users file is reported with its path, by the loader and by `serve`."""
    bad = tmp_path / "users.json"
    bad.write_text('{"users": [{"username": "x", "password_hash": "plain"}]}')
    with pytest.raises(UsersFileError, match=re.escape(str(bad))):
        load_users(bad)
    result = subprocess.run(
        [sys.executable, "-m", "devauth", "serve", "--port", "0", "--users-file", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr and "password_hash" in result.stderr


def test_token_store_clock_and_ttl_sources(tmp_path, monkeypatch):
    """Tokens expire by the store's clock; the TTL comes from the argument or DEVAUTH_TOKEN_TTL."""
    now = [1000.0]
    store = TokenStore(tmp_path / "t.sqlite3", ttl=10, clock=lambda: now[0])
    token = store.issue("alice", "p1", ["user"])
    assert store.lookup(token).roles == ("user",)
    now[0] += 9.9
    assert store.lookup(token) is not None
    now[0] += 0.1
    assert store.lookup(token) is None and store.lookup(None) is None
    assert ttl_from_env({}) == 86400 and ttl_from_env({"DEVAUTH_TOKEN_TTL": "5"}) == 5
    with pytest.raises(ConfigError, match="DEVAUTH_TOKEN_TTL"):
        ttl_from_env({"DEVAUTH_TOKEN_TTL": "-1"})
    monkeypatch.setenv("DEVAUTH_TOKEN_TTL", "7")
    cfg = jobs_config.load(environ={"DEVAUTH_USERS_FILE": str(tmp_path / "u.json")})
    app = make_wsgi_app(cfg)
    assert app.backend.users_file == tmp_path / "u.json" and app.backend.store.ttl == 7
    assert make_wsgi_app(tmp_path / "u.json", token_ttl=3).backend.store.ttl == 3

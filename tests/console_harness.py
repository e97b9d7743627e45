"""The console as a real process (python -m console under granian) over a façade stack, and logged-in sessions;
and `board`, the console's view model in the test's own process, for the rules that need no server.

Users: the façade harness's alice and dave (project demo), bob (project other),
and olga, whose role in project ops is `operator` (getRoles), so she sees all.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests

from console.board import Console as Board
from facade_harness import USERS, make_stack, wait_http
from harness import ROOT, Managed, free_port
from jobs import config

OPERATOR = ("olga", "olga-pw-9", "ops")


class Console:
    def __init__(self, stack, proc: Managed, port: int):
        self.stack, self.proc, self.port = stack, proc, port
        self.url = f"http://127.0.0.1:{port}"

    def session(self, user: str = "alice") -> requests.Session:
        """A requests session logged in as user."""
        password, project = (OPERATOR[1], OPERATOR[2]) if user == OPERATOR[0] else USERS[user]
        s = requests.Session()
        r = s.post(self.url + "/login", data={"username": user, "password": password, "project": project,
                                              "csrf_token": self.csrf(s, "/login")}, timeout=30)
        assert r.status_code == 200 and r.url == self.url + "/", r.text
        return s

    def csrf(self, s: requests.Session, path: str = "/") -> str:
        page = s.get(self.url + path, timeout=30).text
        return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)

    def restart(self) -> None:
        """Stop the console (SIGTERM) and start it again on the same port, over the same files."""
        self.stop()
        self.start()

    def stop(self) -> None:
        self.proc.stop()
        self.stack.extras.remove(self.proc)

    def start(self) -> None:
        self.proc, _ = start_console(self.stack.env_file, self.stack.directory / "console.log", **self.env)
        self.stack.extras.append(self.proc)

    env: dict[str, str] = {}


def start_console(env_file, log, **env: str) -> tuple[Managed, int]:
    """A console process for env_file; `env` overrides settings of the file (e.g. CONSOLE_PORT)."""
    port = int(env.get("CONSOLE_PORT") or config.load(env_file, {}).console_port)
    proc = Managed([sys.executable, "-m", "console"], log, {"ENV_FILE": str(env_file), **env})
    wait_http(f"http://127.0.0.1:{port}/login", proc, what="console")
    return proc, port


@pytest.fixture
def second_console(console, tmp_path):
    """Another console over the same stack: its own port, signing key (so its own sessions) and a /metrics
    bearer token (`metrics_token`)."""
    token = tmp_path / "metrics-token"
    token.write_text("scrape-token-0123456789\n")
    env = {"CONSOLE_PORT": str(free_port()), "CONSOLE_SECRET_FILE": str(tmp_path / "secret"),
           "CONSOLE_METRICS_TOKEN_FILE": str(token)}
    proc, port = start_console(console.stack.env_file, tmp_path / "console.log", **env)
    other = Console(console.stack, proc, port)
    other.env, other.metrics_token = env, "scrape-token-0123456789"
    console.stack.extras.append(proc)
    yield other
    if proc in console.stack.extras:
        other.stop()


def add_operator(devauth) -> None:
    user, password, project = OPERATOR
    subprocess.run([sys.executable, "-m", "devauth", "adduser", user, "--project", project, "--role", "operator",
                    "--password-stdin", "--replace", "--users-file", str(devauth.users_file)],
                   input=password + "\n", text=True, cwd=ROOT, check=True, capture_output=True)


@pytest.fixture(scope="module")
def console(tmp_path_factory, devauth):
    """devauth + supervisor + façade (one worker) + console on one spool."""
    add_operator(devauth)
    directory = tmp_path_factory.mktemp("console")
    stack = make_stack(directory, devauth, FACADE_WORKERS="1", CONSOLE_PORT=str(free_port()),
                       CONSOLE_SECRET_FILE=str(directory / "console-secret"), MAX_PARALLEL_JOBS="25")
    try:
        proc, port = start_console(stack.env_file, directory / "console.log")
    except BaseException:
        stack.stop()
        raise
    stack.extras.append(proc)
    yield Console(stack, proc, port)
    stack.stop()


@pytest.fixture
def board(tmp_path) -> Board:
    """The console's view model over an empty spool, in this process: no server, no authentication manager."""
    env = tmp_path / "env"
    env.write_text(f"SPOOL_DIR={tmp_path / 'spool'}\nAUTH_MANAGERS=http://127.0.0.1:9/authManager/AuthManager?wsdl\n")
    return Board(config.load(env, {}))

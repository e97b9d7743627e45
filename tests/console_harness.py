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


def start_console(env_file, log) -> tuple[Managed, int]:
    port = config.load(env_file, {}).console_port
    proc = Managed([sys.executable, "-m", "console"], log, {"ENV_FILE": str(env_file)})
    wait_http(f"http://127.0.0.1:{port}/login", proc, what="console")
    return proc, port


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

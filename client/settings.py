"""Where the services are and who the user is: options, then the environment, then the env file."""
from __future__ import annotations

import getpass
import os
import sys
import urllib.parse

from jobs.cli import USAGE, CliError

from . import PROG, SERVICE
from .soap import Service, login

AUTH_PATH = "/authManager/AuthManager?wsdl"


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Settings:
    """Where the services are and who we are, from options, environment and env file."""

    def __init__(self, args):
        self.args = args
        self._cfg = None

    def cfg(self, needed_for: str):
        if self._cfg is None:
            from jobs import config
            from jobs.errors import ConfigError
            try:
                self._cfg = config.load(self.args.env_file)
            except ConfigError as e:
                raise CliError(f"{e} (needed for {needed_for}; or pass it as an option)", USAGE) from None
        return self._cfg

    @property
    def service_name(self) -> str:
        return getattr(self.args, "service", None) or SERVICE

    @property
    def facade_root(self) -> str:
        """The façade's context root, whose 404 page lists its services: --url's directory, else the env file's."""
        if self.args.url:
            return urllib.parse.urljoin(self.args.url, ".")
        c = self.cfg("the façade's URL (--url)")
        return f"http://{_local(c.facade_host)}:{c.facade_port}{c.context_root}/"

    @property
    def service_url(self) -> str:
        if self.args.url:
            return self.args.url
        return f"{self.facade_root}{self.service_name}?wsdl"

    def service(self) -> Service:
        return Service(self.service_url, self.args.timeout, self.service_name, self.facade_root)

    @property
    def auth_url(self) -> str:
        if self.args.auth:
            return self.args.auth
        c = self.cfg("the authentication manager URL (--auth)")
        return f"http://{_local(c.devauth_host)}:{c.devauth_port}{AUTH_PATH}"

    @property
    def extra_parameters(self) -> str:
        """As the workflow manager sends it: key=value pairs, each followed by a comma."""
        return f"auth={self.auth_url},"

    def password(self) -> str:
        a = self.args
        if a.password_stdin:
            line = sys.stdin.readline()
            pw = line[:-1] if line.endswith("\n") else line
            pw = pw[:-1] if pw.endswith("\r") else pw
        else:
            try:
                pw = getpass.getpass(f"password for {a.user} in project {a.project}: ")
            except EOFError:
                pw = ""
        if not pw:
            raise CliError("no password given", USAGE)
        return pw

    def token(self) -> str:
        a = self.args
        if a.token:
            return a.token
        if os.environ.get("SESSION_TOKEN"):
            return os.environ["SESSION_TOKEN"]
        if a.user and a.project:
            return login(self.auth_url, a.user, a.project, self.password(), a.timeout)
        raise CliError("no session token: pass --token, set SESSION_TOKEN, or give --user and --project "
                          f"to log in (see `{PROG} token --help`)", USAGE)

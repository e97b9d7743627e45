"""Session-token checks against the authentication manager named in `extraParameters`.

Built on the platform's client library `clfpy`, with its two traps closed:
`ExtraParameters` splits values on every '=' (URLs with a query break it) and
drops the last pair when the trailing comma is missing; `SoapClient` builds its
suds client without a timeout and *returns* a suds `WebFault` instead of
raising. A slow or dead authentication manager must cost a bounded time and
end in a clear fault, never a hung worker.

Caches are per worker process: one suds client per auth URL (loading a WSDL is
the expensive part) and positive validations per (token, auth URL) for
AUTH_CACHE_SECONDS, which keeps the polling hot path off the network.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import clfpy
import suds
import suds.client
from suds.cache import NoCache

from .errors import AuthManagerUnavailable, InvalidRequest, TokenValidationFailed

MAX_EXTRA_PARAMETERS = 16 * 1024
MAX_URL = 2048
MAX_TOKEN = 4096
MAX_CACHED_TOKENS = 10000
MAX_CACHED_CLIENTS = 32
_OWNER_MAX = 256


def parse_extra_parameters(raw: object) -> dict[str, str]:
    """`key1=value1,key2=value2,` into a dict; each pair splits on its first '=' only."""
    expected = "expected 'auth=<WSDL URL of the authentication manager>,' (key=value pairs, comma-separated)"
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidRequest(f"extraParameters: missing; {expected}")
    if not isinstance(raw, str):
        raise InvalidRequest(f"extraParameters: must be a string; {expected}")
    if len(raw) > MAX_EXTRA_PARAMETERS:
        raise InvalidRequest(f"extraParameters: longer than {MAX_EXTRA_PARAMETERS} characters")
    pars: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue  # the trailing comma, or an empty pair
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"extraParameters: malformed entry {item.strip()[:60]!r}; {expected}")
        pars[key.strip()] = value.strip()
    return pars


class ExtraParameters(clfpy.ExtraParameters):
    """clfpy's accessor class over a parser that handles '=' in values and names what is wrong."""

    def __init__(self, extraParametersString: object):  # noqa: N803 (clfpy's signature)
        self.pars = parse_extra_parameters(extraParametersString)

    def auth_url(self) -> str:
        """The authentication manager's WSDL URL, checked to be a plausible http(s) URL."""
        if "auth" not in self.pars:
            raise InvalidRequest("extraParameters: no 'auth=' entry naming the authentication manager's WSDL URL")
        return validate_auth_url(self.get_auth_WSDL_URL())


def validate_auth_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidRequest(
            f"extraParameters: auth={url[:80]!r} is not an http(s) URL of at most {MAX_URL} characters")
    return url


class TimedAuthClient(clfpy.AuthClient):
    """clfpy's AuthClient with a suds client that times out, and calls that raise.

    `call` returns the operation's result or the `WebFault` clfpy hands back;
    a network problem or timeout becomes AuthManagerUnavailable.
    """

    def __init__(self, wsdl_url: str, timeout: float):
        # Not super().__init__: clfpy's SoapClient would build a suds client without a timeout.
        self.wsdl_url = wsdl_url
        self.timeout = timeout
        self._lock = threading.Lock()  # a suds client is not safe for concurrent use
        try:
            self.client = suds.client.Client(wsdl_url, cache=NoCache(), timeout=timeout)
        except Exception as e:  # noqa: BLE001 - any failure to load the WSDL means "unavailable"
            raise AuthManagerUnavailable(
                f"authentication manager unavailable: could not load its WSDL from {wsdl_url} "
                f"within {timeout:g} s ({_short(e)})") from None

    def call(self, name: str, method: Callable[[str], Any], token: str) -> Any:
        with self._lock:
            try:
                return method(token)
            except Exception as e:  # noqa: BLE001
                raise AuthManagerUnavailable(
                    f"authentication manager unavailable: {name} at {self.wsdl_url} failed "
                    f"or took longer than {self.timeout:g} s ({_short(e)})") from None


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class Identity:
    """Who a valid session token belongs to, as the authentication manager says."""
    username: str | None
    project: str | None


class Authenticator:
    """Validates tokens, with the per-worker caches described in the module docstring."""

    def __init__(self, timeout: float, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 client_factory: Callable[[str, float], TimedAuthClient] = TimedAuthClient):
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._factory = client_factory
        self._clients: dict[str, TimedAuthClient] = {}
        self._valid: dict[tuple[str, str], tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def identify(self, token: object, auth_url: str) -> Identity:
        """The token's owner, or TokenValidationFailed / AuthManagerUnavailable."""
        if not isinstance(token, str) or not token.strip():
            raise TokenValidationFailed("no session token given")
        if len(token) > MAX_TOKEN:
            raise TokenValidationFailed(f"session token longer than {MAX_TOKEN} characters")
        key = (token, auth_url)
        now = self._clock()
        hit = self._valid.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        client = self._client(auth_url)
        answer = client.call("validateSessionToken", client.validate_session_token, token)
        if answer is not True:
            why = (f"the authentication manager answered with a fault: {_fault_text(answer)}"
                   if isinstance(answer, suds.WebFault) else "the token is unknown or expired")
            raise TokenValidationFailed(why)
        project = client.call("getProject", client.get_project, token)
        if isinstance(project, suds.WebFault) or project is None:
            raise TokenValidationFailed("the authentication manager could not name the token's project")
        username = client.call("getUsername", client.get_username, token)
        ident = Identity(
            username=None if isinstance(username, suds.WebFault) or username is None else str(username)[:_OWNER_MAX],
            project=str(project)[:_OWNER_MAX],
        )
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._valid) >= MAX_CACHED_TOKENS:
                    self._valid = {k: v for k, v in self._valid.items() if v[0] > now}
                    if len(self._valid) >= MAX_CACHED_TOKENS:
                        self._valid.clear()
                self._valid[key] = (now + self.cache_seconds, ident)
        return ident

    def _client(self, auth_url: str) -> TimedAuthClient:
        client = self._clients.get(auth_url)
        if client is None:
            client = self._factory(auth_url, self.timeout)  # raises AuthManagerUnavailable
            with self._lock:
                if len(self._clients) >= MAX_CACHED_CLIENTS:
                    self._clients.pop(next(iter(self._clients)))
                client = self._clients.setdefault(auth_url, client)
        return client


def _fault_text(fault: suds.WebFault) -> str:
    try:
        text = str(fault.fault.faultstring)
    except AttributeError:
        text = str(fault)
    return text[:200]

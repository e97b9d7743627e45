"""The one client of the platform's authentication manager: clfpy's AuthClient, with its traps closed.

clfpy's `SoapClient` builds its suds client without a timeout and *returns*
a suds `WebFault` (or `MethodNotFound`) instead of raising it. Here the suds
client times out, one call runs at a time (a suds client is not thread-safe),
and every failure is one of two errors: the manager refused (a fault: bad
password, unknown token) or it could not be used, which says how (could not
be reached, did not answer in time, answered with an error) but never what it
answered; that goes to the log. A slow or dead manager costs a bounded time.

The façade validates tokens others obtained (facade/auth.py, with its caches);
the console logs a person in (getSessionToken, then validateSessionToken,
getProject, getUsername, getRoles).
"""
from __future__ import annotations

import threading
import urllib.error
from dataclasses import dataclass
from typing import Any, Callable

import clfpy
import structlog
import suds
import suds.client
from suds import MethodNotFound
from suds.cache import NoCache
from suds.transport import TransportError

from .errors import JobsError

log = structlog.get_logger("jobs.authclient")


class AuthRefused(JobsError):
    """The authentication manager said no (wrong password, not a member, token unknown or expired)."""


class AuthUnavailable(JobsError):
    """The authentication manager could not be asked (down, too slow, broken)."""

    def __init__(self, url: str, why: str, step: str):
        super().__init__(f"the authentication manager {why} ({step}); the details are in the log")
        self.url, self.why, self.step = url, why, step


@dataclass(frozen=True)
class Session:
    token: str
    username: str
    project: str
    roles: tuple[str, ...]


class AuthManagerClient(clfpy.AuthClient):
    """One authentication manager; thread-safe. The WSDL is loaded by connect() or the first call."""

    def __init__(self, wsdl_url: str, timeout: float):
        # Not super().__init__: clfpy's SoapClient would load the WSDL into a suds client without a timeout.
        self.wsdl_url = wsdl_url
        self.timeout = timeout
        self.client: suds.client.Client | None = None
        self._lock = threading.Lock()

    def connect(self) -> "AuthManagerClient":
        """Load the WSDL now; AuthUnavailable if it cannot be."""
        with self._lock:
            self._connect()
        return self

    def call(self, step: str, method: Callable[..., Any], *args) -> Any:
        """`method(*args)` (one of clfpy's): its answer; AuthRefused for a fault, AuthUnavailable otherwise."""
        with self._lock:
            self._connect()
            try:
                answer = method(*args)
            except Exception as e:  # noqa: BLE001 - any other failure means "could not be used"
                raise self._unavailable(step, e) from None
        if isinstance(answer, (suds.WebFault, MethodNotFound)):
            raise AuthRefused(fault_text(answer))
        return answer

    # -- a person's login (the console) ---------------------------------------------
    def login(self, username: str, password: str, project: str) -> Session:
        """A new session token for (username, password, project), with who it belongs to."""
        token = self.call("getSessionToken", self.get_session_token, username, project, password)
        if not token:
            raise AuthRefused("the authentication manager issued no token")
        return self.session(str(token))

    def session(self, token: str) -> Session:
        """Who the token belongs to now; AuthRefused if it is no longer valid."""
        if not self.valid(token):
            raise AuthRefused("the session token is unknown or expired")
        roles = self.call("getRoles", self.get_roles, token) or []
        if isinstance(roles, str):
            roles = [roles]
        return Session(token, str(self.call("getUsername", self.get_username, token) or ""),
                       str(self.call("getProject", self.get_project, token) or ""), tuple(str(r) for r in roles))

    def valid(self, token: str) -> bool:
        """Whether the manager says the token is valid: True and nothing else ("true", 1) counts."""
        try:
            return self.call("validateSessionToken", self.validate_session_token, token) is True
        except AuthRefused:
            return False

    def _connect(self) -> None:
        if self.client is None:
            try:
                self.client = suds.client.Client(self.wsdl_url, cache=NoCache(), timeout=self.timeout)
            except Exception as e:  # noqa: BLE001 - any failure to load the WSDL means "unavailable"
                raise self._unavailable("loading its WSDL", e) from None

    def _unavailable(self, step: str, e: Exception) -> AuthUnavailable:
        log.warning("auth_manager_unavailable", url=self.wsdl_url, step=step, error=_short(e))
        if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
            why = f"did not answer within {self.timeout:g} s"
        elif isinstance(e, (TransportError, urllib.error.HTTPError)) or not isinstance(e, OSError):
            why = "answered with an error"
        else:
            why = "could not be reached"
        return AuthUnavailable(self.wsdl_url, why, step)


def fault_text(fault: Exception) -> str:
    """A fault's faultstring (at most 200 characters), for messages and logs."""
    try:
        text = str(fault.fault.faultstring)
    except AttributeError:
        text = str(fault)
    return text[:200]


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= 200 else text[:197] + "..."

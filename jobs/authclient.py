"""A client of the platform's authentication manager for logins (the console): suds with a timeout.

The façade validates tokens others obtained (facade/auth.py); a console logs a
person in: getSessionToken, then validateSessionToken, getProject, getUsername
and getRoles. The trap clfpy leaves open is closed here too: its suds client
has no timeout and it returns faults instead of raising them, so this client
builds its own (timeout, faults raised) and turns every failure into one of two
errors: the manager refused (bad password, unknown token) or it could not be
used (down, slow, broken), which says how but never what it answered.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog
import suds
import suds.client
from suds.cache import NoCache

from .errors import JobsError

log = structlog.get_logger("jobs.authclient")


class AuthRefused(JobsError):
    """The authentication manager said no (wrong password, not a member, token unknown or expired)."""


class AuthUnavailable(JobsError):
    """The authentication manager could not be asked (down, too slow, broken)."""


@dataclass(frozen=True)
class Session:
    token: str
    username: str
    project: str
    roles: tuple[str, ...]


class AuthManagerClient:
    """One authentication manager; thread-safe (a suds client is not: one call at a time)."""

    def __init__(self, wsdl_url: str, timeout: float):
        self.wsdl_url = wsdl_url
        self.timeout = timeout
        self._client: suds.client.Client | None = None
        self._lock = threading.Lock()

    def login(self, username: str, password: str, project: str) -> Session:
        """A new session token for (username, password, project), with who it belongs to."""
        token = self._call("getSessionToken", username, password, project)
        if not token:
            raise AuthRefused("the authentication manager issued no token")
        return self.session(str(token))

    def session(self, token: str) -> Session:
        """Who the token belongs to now; AuthRefused if it is no longer valid."""
        if self._call("validateSessionToken", token) is not True:
            raise AuthRefused("the session token is unknown or expired")
        roles = self._call("getRoles", token) or []
        if isinstance(roles, str):
            roles = [roles]
        return Session(token, str(self._call("getUsername", token) or ""), str(self._call("getProject", token) or ""),
                       tuple(str(r) for r in roles))

    def valid(self, token: str) -> bool:
        try:
            return self._call("validateSessionToken", token) is True
        except AuthRefused:
            return False

    def _call(self, operation: str, *args):
        with self._lock:
            try:
                if self._client is None:
                    self._client = suds.client.Client(self.wsdl_url, cache=NoCache(), timeout=self.timeout)
                return getattr(self._client.service, operation)(*args)
            except suds.WebFault as e:
                raise AuthRefused(_fault_text(e)) from None
            except Exception as e:  # noqa: BLE001 - any other failure means "could not be used"
                log.warning("auth_manager_unavailable", url=self.wsdl_url, operation=operation,
                            error=f"{type(e).__name__}: {e}"[:200])
                timed_out = isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError)
                why = f"did not answer within {self.timeout:g} s" if timed_out else "could not be used"
                raise AuthUnavailable(f"the authentication manager {why}; the details are in the console's log") from None


def _fault_text(fault: suds.WebFault) -> str:
    try:
        return str(fault.fault.faultstring)[:200]
    except AttributeError:
        return str(fault)[:200]

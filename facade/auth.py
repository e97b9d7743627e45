"""Session-token checks against the authentication manager named in `extraParameters`.

Built on the platform's client library `clfpy`, with its traps closed:
`ExtraParameters` splits values on every '=' (URLs with a query break it) and
drops the last pair when the trailing comma is missing (here); its suds client
has no timeout and returns faults instead of raising them (jobs/authclient.py,
shared with the console). A slow or dead authentication manager must cost a
bounded time and end in a clear fault, never a hung worker.

Caches are per worker process: one suds client per auth URL (loading a WSDL is
the expensive part) and positive validations per (token, auth URL) for
AUTH_CACHE_SECONDS, which keeps the polling hot path off the network. A token
used in the last few minutes is validated again by a background thread in
the last quarter of that time (`_refresh_soon`, `due`), so its polls never
wait for the manager:
before, every poll that came after the expiry asked the manager itself, and
S1's p99 was those herds. A token not in the cache (new, or idle longer than
AUTH_CACHE_SECONDS) is asked about once for all the polls that miss it at the
same time (`_validate`): the others wait for that answer.

Only the authentication managers in AUTH_MANAGERS are ever asked: the URL
comes from the caller, and whoever names their own manager could vouch for
made-up users, or make the façade fetch any URL it can reach. When a manager
cannot be used, the fault says how (unreachable, too slow, an error) but never
what it answered; that goes to the log.
"""
from __future__ import annotations

import copy
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple
from urllib.parse import urlsplit

import clfpy
import structlog

from jobs.authclient import AuthManagerClient, AuthRefused, AuthUnavailable
from jobs.errors import ConfigError

from .errors import AuthManagerUnavailable, FacadeError, InvalidRequest, TokenValidationFailed
from .inline import must_not_wait

MAX_EXTRA_PARAMETERS = 16 * 1024
MAX_URL = 2048
MAX_TOKEN = 4096
MAX_CACHED_TOKENS = 10000
REFRESH_AHEAD = 0.25  # a token in use in the last quarter of its cached validation is validated again, in the background
KEEP_WARM_FACTOR = 4  # ... also while idle, for this many AUTH_CACHE_SECONDS after its last use (Authenticator.due)
SWEEP_MAX_SECONDS = 1.0  # the refresh thread looks at the cache at least this often
MAX_CACHED_CLIENTS = 32
FOLLOW_FACTOR = 4  # a request waits this many AUTH_TIMEOUTs for another's validation of its token (three calls)
MAX_CACHED_VERDICTS = 256  # allow-list verdicts by URL: a poll's auth URL is one of a few, every time
_OWNER_MAX = 256
_DEFAULT_PORTS = {"http": 80, "https": 443}
log = structlog.get_logger("facade.auth")
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)  # '.', '/', '\\' in disguise
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")  # str.isspace() or below 32: one scan in C, not per character



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
    if not ok or len(url) > MAX_URL or _BLANK_OR_CONTROL.search(url):
        raise InvalidRequest(
            f"extraParameters: auth={url[:80]!r} is not an http(s) URL of at most {MAX_URL} characters")
    return url


class _Url(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str
    query: str


def _parsed(url: str) -> _Url | None:
    """The parts URLs are compared by, or None for a URL no allow-list entry may match.

    Refused outright: userinfo (`http://allowed@evil/`), fragments, backslashes,
    control characters, and paths with dot segments or encoded '.', '/', '\\'
    (a server may resolve them to a path the prefix did not admit).
    """
    if "\\" in url or _BLANK_OR_CONTROL.search(url):
        return None
    try:
        p = urlsplit(url)
        scheme = p.scheme.lower()
        port = _DEFAULT_PORTS.get(scheme) if p.port is None else p.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not p.hostname or "@" in p.netloc or p.fragment or "#" in url:
        return None
    path = p.path or "/"
    if _ENCODED_SEPARATOR.search(path) or any(seg in (".", "..") for seg in path.split("/")):
        return None
    return _Url(scheme, p.hostname, port, path, p.query)


class AuthManagers:
    """The allow-list AUTH_MANAGERS: which authentication managers the façade may ask.

    An entry with a query (`.../AuthManager?wsdl`) admits exactly that URL; an
    entry without one is a prefix that ends at a path boundary, so
    `http://auth.example/am` admits `http://auth.example/am/AuthManager?wsdl`
    but not `http://auth.example/amx` nor `http://auth.example.evil.com/am`.
    Scheme, host and port always match exactly (the default port made explicit).
    """

    def __init__(self, entries: Iterable[str]):
        entries = list(entries)
        if not entries:
            raise ConfigError(
                "AUTH_MANAGERS is empty: set it to the WSDL URL of the platform's authentication manager "
                "(e.g. https://auth.example/authManager/AuthManager?wsdl; for the development one: "
                "http://DEVAUTH_HOST:DEVAUTH_PORT/authManager/AuthManager?wsdl); "
                "the façade asks no other")
        self._entries: list[_Url] = []
        for entry in entries:
            parsed = _parsed(entry)
            if parsed is None or len(entry) > MAX_URL:
                raise ConfigError(f"AUTH_MANAGERS: {entry[:100]!r} is not an http(s) URL without userinfo, "
                                  "fragment, '..' or encoded separators")
            self._entries.append(parsed)
        # entries with a query are whole WSDL URLs: they can be asked without a job naming them
        self.urls = tuple(dict.fromkeys(e for e, p in zip(entries, self._entries) if p.query))
        self._verdicts: dict[str, bool] = {}  # the list never changes: each URL is parsed once

    def allows(self, url: str) -> bool:
        verdict = self._verdicts.get(url)
        if verdict is None:
            u = _parsed(url)
            verdict = u is not None and any(_admits(e, u) for e in self._entries)
            if len(self._verdicts) >= MAX_CACHED_VERDICTS:
                self._verdicts.clear()
            self._verdicts[url] = verdict
        return verdict

    def check(self, url: str) -> str:
        """The URL, or InvalidRequest naming it: it is not one the façade may ask."""
        if not self.allows(url):
            raise InvalidRequest(
                f"authentication manager {_clip(url)!r} is not an allowed authentication manager "
                "of this service (AUTH_MANAGERS); nothing was sent to it")
        return url


def _admits(entry: _Url, u: _Url) -> bool:
    if entry[:3] != u[:3]:
        return False
    if entry.query:
        return entry.path == u.path and entry.query == u.query
    base = entry.path.rstrip("/")
    return u.path in (entry.path, base) or u.path.startswith(base + "/")


def _clip(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[:limit - 3] + "..."


def _check_token(token: object) -> None:
    """An empty or oversized token fails at once, before any manager is asked."""
    if not isinstance(token, str) or not token.strip():
        raise TokenValidationFailed("no session token given")
    if len(token) > MAX_TOKEN:
        raise TokenValidationFailed(f"session token longer than {MAX_TOKEN} characters")


@dataclass(frozen=True)
class Identity:
    """Who a valid session token belongs to, as the authentication manager says."""
    username: str | None
    project: str | None


class _Flight:
    """One validation of a token under way, and its outcome for every request that waits for it."""
    __slots__ = ("done", "ident", "error")

    def __init__(self):
        self.done = threading.Event()
        self.ident: Identity | None = None
        self.error: BaseException | None = None


class Authenticator:
    """Validates tokens, with the per-worker caches described in the module docstring."""

    def __init__(self, allowed: AuthManagers, timeout: float, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 client_factory: Callable[[str, float], AuthManagerClient] = AuthManagerClient,
                 keep_warm_seconds: float | None = None):
        self.allowed = allowed
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.keep_warm_seconds = KEEP_WARM_FACTOR * cache_seconds if keep_warm_seconds is None else keep_warm_seconds
        self._clock = clock
        self._factory = client_factory
        self._clients: dict[str, AuthManagerClient] = {}
        self._valid: dict[tuple[str, str], tuple[float, Identity]] = {}
        self._lock = threading.Lock()
        self._refreshing: dict[tuple[str, str], None] = {}  # tokens to validate again, in order (under _lock)
        self._refresh_wake = threading.Condition(self._lock)
        self._refresher_pid: int | None = None  # the process whose refresh thread runs
        self._used: dict[tuple[str, str], float] = {}  # when each cached token was last used (see `due`)
        self._flights: dict[tuple[str, str], _Flight] = {}  # validations under way for a cache miss (under _lock)

    def identify(self, token: object, auth_url: str | None) -> Identity:
        """The token's owner, or InvalidRequest (URL not allowed) / TokenValidationFailed / AuthManagerUnavailable.

        auth_url None: no job names a manager (an unknown serviceID); see `_identify_anywhere`.
        """
        if auth_url is None:
            return self._identify_anywhere(token)
        self.allowed.check(auth_url)  # every call, polls too: a spec's auth_url may come from anywhere
        _check_token(token)
        key = (token, auth_url)
        now = self._clock()
        hit = self._valid.get(key)
        if hit is not None and hit[0] > now:
            self._used[key] = now
            if hit[0] - now < self.cache_seconds * REFRESH_AHEAD:
                self._refresh_soon(key, now)
            return hit[1]
        must_not_wait("the authentication manager must validate the token")
        return self._validate(key, now)

    def _validate(self, key: tuple[str, str], now: float) -> Identity:
        """Ask the manager about a token the cache does not hold, once for all the polls that miss it together.

        The first asks; the others (pool threads) wait for its answer or its
        error. Before, each asked: after an idle spell of a shared token, S1's
        first seconds were 250 polls over 100 ms behind a herd of suds calls.
        """
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.ident = self._ask(self._client(key[1]), key[0])
                self._remember(key, now, flight.ident)
            except AuthUnavailable as e:
                flight.error = AuthManagerUnavailable(
                    f"authentication manager unavailable: {_clip(e.url)} {e.why} ({e.step}); "
                    "the details are in the service's log")
            except Exception as e:  # noqa: BLE001 - handed to the followers, raised again below
                flight.error = e
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
        elif not flight.done.wait(FOLLOW_FACTOR * self.timeout):
            raise AuthManagerUnavailable("authentication manager unavailable: another request's validation of "
                                         f"this token did not end in {FOLLOW_FACTOR * self.timeout:g} s")
        if flight.error is not None:
            raise (flight.error if leader else copy.copy(flight.error)) from None
        if flight.ident is None:  # the asking request was interrupted (its own exception went its way)
            raise AuthManagerUnavailable("authentication manager unavailable: the validation of this token "
                                         "was interrupted")
        return flight.ident

    def _remember(self, key: tuple[str, str], now: float, ident: Identity) -> None:
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._valid) >= MAX_CACHED_TOKENS:
                    self._valid = {k: v for k, v in self._valid.items() if v[0] > now}
                    if len(self._valid) >= MAX_CACHED_TOKENS:
                        self._valid.clear()
                self._valid[key] = (now + self.cache_seconds, ident)
                self._used.setdefault(key, now)
                self._start_refresher()

    def _refresh_soon(self, key: tuple[str, str], now: float) -> None:
        """Have the refresh thread validate a token in use again before its cached validation runs out.

        Without it, the polls that arrive after expiry all wait for the
        manager, and the worker's event loop waits with them. An answer is
        still used for at most AUTH_CACHE_SECONDS after the manager gave it,
        and a refusal drops the token at once. Never waits.
        """
        with self._lock:
            hit = self._valid.get(key)
            if key in self._refreshing or hit is None or hit[0] - now >= self.cache_seconds * REFRESH_AHEAD:
                return  # under way, or just done
            self._refreshing[key] = None
            self._start_refresher()
            self._refresh_wake.notify()

    def _start_refresher(self) -> None:
        """The refresh thread of this process, started once (the app is built before the workers fork). Under _lock."""
        if self._refresher_pid != os.getpid():
            self._refresher_pid = os.getpid()
            threading.Thread(target=self._refresh_loop, name="auth-refresh", daemon=True).start()

    def due(self, now: float) -> tuple[list[tuple[str, str]], float]:
        """The tokens to validate again now, and the seconds until the next one is due. Under _lock.

        Those are the tokens used in the last KEEP_WARM_FACTOR x AUTH_CACHE_SECONDS
        whose cached validation is in its last quarter, used or not since: a
        token idle for a while (a workflow manager's pause, a login shared by
        workflows that poll in turn) finds its validation fresh when its
        polls come back, instead of 1,000 polls waiting for the manager at
        once (S1's first seconds after an idle spell: 250 polls over 100 ms).
        A token no longer used drops out of the cache as before.
        """
        keep, window = self.keep_warm_seconds, self.cache_seconds * REFRESH_AHEAD
        due, wait = [], window
        for key, used in list(self._used.items()):
            hit = self._valid.get(key)
            if hit is None or now - used > keep:
                del self._used[key]
            elif hit[0] - now < window:
                due.append(key)
            else:
                wait = min(wait, hit[0] - window - now)
        return due, wait

    def _refresh_loop(self) -> None:
        while True:
            with self._refresh_wake:
                while not self._refreshing:
                    due, wait = self.due(self._clock())
                    self._refreshing.update(dict.fromkeys(due))
                    if not self._refreshing:
                        self._refresh_wake.wait(min(wait, SWEEP_MAX_SECONDS))
                key = next(iter(self._refreshing))
            token, auth_url = key
            now = self._clock()
            try:
                self._remember(key, now, self._ask(self._client(auth_url), token))
            except TokenValidationFailed:
                with self._lock:
                    self._valid.pop(key, None)
            except Exception as e:  # noqa: BLE001 - an outage: the entry runs out and the next poll asks itself
                log.warning("auth_refresh_failed", error=f"{type(e).__name__}: {_clip(str(e))}")
                with self._lock:
                    self._used.pop(key, None)  # not again before a poll uses it (no retry loop against an outage)
            finally:
                with self._lock:
                    self._refreshing.pop(key, None)

    def _identify_anywhere(self, token: object) -> Identity:
        """The token's owner by any manager that can be asked without a job naming one.

        Those are the whole URLs in AUTH_MANAGERS and the managers this worker
        has already loaded, the ones with the token cached first. Fails as a
        job's own manager would: with the first refusal, else the first
        outage; with none to ask, as a manager that does not know the token.
        """
        _check_token(token)
        urls = list(dict.fromkeys(self.allowed.urls + tuple(self._clients)))
        urls.sort(key=lambda url: (token, url) not in self._valid)
        refusals: list[FacadeError] = []
        outages: list[FacadeError] = []
        for url in urls:
            try:
                return self.identify(token, url)
            except TokenValidationFailed as e:
                refusals.append(e)
            except AuthManagerUnavailable as e:
                outages.append(e)
        raise (refusals + outages + [TokenValidationFailed("the token is unknown or expired")])[0]

    @staticmethod
    def _ask(client: AuthManagerClient, token: str) -> Identity:
        try:
            valid = client.call("validateSessionToken", client.validate_session_token, token)
        except AuthRefused as e:
            raise TokenValidationFailed(f"the authentication manager answered with a fault: {e}") from None
        if valid is not True:
            raise TokenValidationFailed("the token is unknown or expired")
        try:
            project = client.call("getProject", client.get_project, token)
        except AuthRefused:
            project = None
        if project is None:
            raise TokenValidationFailed("the authentication manager could not name the token's project")
        try:
            username = client.call("getUsername", client.get_username, token)
        except AuthRefused:
            username = None
        return Identity(username=None if username is None else str(username)[:_OWNER_MAX],
                        project=str(project)[:_OWNER_MAX])

    def _client(self, auth_url: str) -> AuthManagerClient:
        client = self._clients.get(auth_url)
        if client is None:
            client = self._factory(auth_url, self.timeout).connect()  # a manager not loaded is not kept
            with self._lock:
                if len(self._clients) >= MAX_CACHED_CLIENTS:
                    self._clients.pop(next(iter(self._clients)))
                client = self._clients.setdefault(auth_url, client)
        return client


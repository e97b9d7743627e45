"""Session tokens of the development authentication manager, shared by all workers.

Why sqlite: the service runs under gunicorn with several worker processes and
a token issued by one worker must validate in any other, also after a worker
restart.  An sqlite database next to the users file (WAL mode, one short
connection per operation, so it is also safe across fork) is the smallest
store that handles concurrent processes correctly.

Tokens are ``secrets.token_urlsafe(32)``; the database keeps only their
SHA-256, so a copied database file grants no sessions.  Each token carries a
snapshot of the username, project and roles at login and expires ``ttl``
seconds after issue (24 h unless ``DEVAUTH_TOKEN_TTL`` or ``--token-ttl`` says
otherwise).  Expired rows are purged whenever a token is issued.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from jobs.errors import ConfigError

DEFAULT_TTL_SECONDS = 24 * 3600.0
TTL_ENV = "DEVAUTH_TOKEN_TTL"
MAX_TTL_SECONDS = 366 * 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    project      TEXT NOT NULL,
    roles        TEXT NOT NULL,
    issued_at    REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expires_at ON tokens (expires_at);
"""


def parse_ttl(raw: str | float, source: str = TTL_ENV) -> float:
    """Validate a TTL in seconds (> 0, at most a year); ConfigError names ``source``."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={raw!r}: must be a number of seconds") from None
    if not 0 < value <= MAX_TTL_SECONDS:
        raise ConfigError(f"{source}={value}: must be in (0, {MAX_TTL_SECONDS:.0f}] seconds")
    return value


def ttl_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The TTL from ``DEVAUTH_TOKEN_TTL``, else 24 h."""
    environ = os.environ if environ is None else environ
    raw = environ.get(TTL_ENV, "").strip()
    return parse_ttl(raw) if raw else DEFAULT_TTL_SECONDS


def tokens_path_for(users_file: str | os.PathLike) -> Path:
    """The token database belonging to a users file: ``<stem>.tokens.sqlite3`` beside it."""
    users_file = Path(users_file)
    return users_file.with_name(f"{users_file.stem}.tokens.sqlite3")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    """What a valid token stands for."""

    username: str
    project: str
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float


class TokenStore:
    """Issue and look up expiring session tokens in an sqlite file."""

    def __init__(self, path: str | os.PathLike, ttl: float = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.ttl = parse_ttl(ttl, "token ttl")
        self._clock = clock
        self._initialised = False

    def _connect(self) -> sqlite3.Connection:
        if not self._initialised:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file private before sqlite does (sqlite would use the umask).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        if not self._initialised:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._initialised = True
        return conn

    def issue(self, username: str, project: str, roles: Sequence[str]) -> str:
        """Create and persist a new token for (username, project, roles)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
                conn.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
                    (_digest(token), username, project, json.dumps(list(roles)), now, now + self.ttl),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return token

    def lookup(self, token: str | None) -> Session | None:
        """The session of a valid, unexpired token, else None."""
        if not token or not isinstance(token, str) or len(token) > 512:
            return None
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT username, project, roles, issued_at, expires_at FROM tokens "
                "WHERE token_sha256 = ?",
                (_digest(token),),
            ).fetchone()
        if row is None or row[4] <= self._clock():
            return None
        return Session(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4])

    def revoke(self, token: str) -> bool:
        """Forget a token; True if it existed."""
        with closing(self._connect()) as conn:
            cur = conn.execute("DELETE FROM tokens WHERE token_sha256 = ?", (_digest(token),))
            return cur.rowcount > 0

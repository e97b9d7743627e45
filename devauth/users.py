"""Users, passwords and project roles of the development authentication manager.

Why a JSON file: the development authentication manager stands in for the
platform's real one on a developer machine or in CI, so its user database must
be easy to create, inspect and throw away, while never holding a plain password.

Format (UTF-8 JSON, written atomically by this module)::

    {
      "version": 1,
      "users": [
        {
          "username": "demo",
          "password_hash": "scrypt$16384$8$1$<salt, base64>$<key, base64>",
          "projects": {"demo": ["user"]}
        }
      ]
    }

* ``username``: 1-64 characters from ``A-Z a-z 0-9 . _ @ + -``; unique.
* ``password_hash``: a self-describing scrypt hash,
  ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (standard base64, 16-byte random salt,
  32-byte key).  Create it with :func:`hash_password`, never by hand.
* ``projects``: maps each project the user may log in to (same character set
  as usernames) to the list of role names ``getRoles`` returns for a session
  token of that project.

Changes go through :func:`add_user` (``python -m devauth adduser``), which
holds an exclusive lock on ``<file>.lock`` during read-modify-write and replaces
the file atomically, so a running server never reads half a file.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from jobs.errors import JobsError

FORMAT_VERSION = 1
DEFAULT_ROLES = ("user",)

_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_ROLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# scrypt cost: 16 MiB of memory and ~50 ms per hash on a laptop; plenty for a
# development service and cheap enough for tests.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_KEY_LEN = 32


class UsersFileError(JobsError):
    """The users file is unreadable or malformed; the message names the file."""


class UserExists(JobsError):
    """add_user was asked to create a user that already exists."""


@dataclass(frozen=True)
class User:
    """One entry of the users file."""

    username: str
    password_hash: str
    projects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "password_hash": self.password_hash,
            "projects": {p: list(r) for p, r in self.projects.items()},
        }


# --------------------------------------------------------------------------- passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """Return a salted, self-describing scrypt hash of ``password``."""
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM, dklen=_KEY_LEN,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, key = encoded.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    n_, r_, p_ = int(n), int(r), int(p)
    # Bound the cost parameters so that a hand-edited file cannot make every
    # login burn gigabytes of memory.
    if not (2 <= n_ <= 2**17 and n_ & (n_ - 1) == 0 and 1 <= r_ <= 16 and 1 <= p_ <= 16):
        raise ValueError("scrypt parameters out of range")
    salt_b, key_b = base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)
    if len(salt_b) < 8 or not 16 <= len(key_b) <= 64:
        raise ValueError("scrypt salt or key too short")
    return n_, r_, p_, salt_b, key_b


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded`` (constant-time comparison)."""
    try:
        n, r, p, salt, key = _parse_hash(encoded)
    except (ValueError, TypeError):
        return False
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
        maxmem=max(_SCRYPT_MAXMEM, 256 * n * r + 2**20), dklen=len(key),
    )
    return hmac.compare_digest(candidate, key)


# A hash of a random password, checked when the username is unknown so that an
# unknown user and a wrong password take the same time.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


# --------------------------------------------------------------------------- file I/O


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid username or project name, else raise ValueError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r}: must be 1-64 characters from A-Z a-z 0-9 . _ @ + -"
        )
    return value


def validate_role(value: str) -> str:
    """Return ``value`` if it is a valid role name, else raise ValueError."""
    if not isinstance(value, str) or not _ROLE.fullmatch(value):
        raise ValueError(f"role {value!r}: must be 1-64 characters from A-Z a-z 0-9 . _ : -")
    return value


def _parse(path: Path, text: str) -> dict[str, User]:
    def bad(msg: str) -> UsersFileError:
        return UsersFileError(f"{path}: {msg}")

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise bad('expected an object {"users": [...]}')
    version = doc.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise bad(f"unsupported version {version!r} (expected {FORMAT_VERSION})")
    users: dict[str, User] = {}
    for i, entry in enumerate(doc["users"]):
        where = f"users[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"{where}: expected an object")
        unknown = set(entry) - {"username", "password_hash", "projects"}
        if unknown:
            raise bad(f"{where}: unknown keys {sorted(unknown)}")
        try:
            username = validate_name("username", entry.get("username"))
        except ValueError as e:
            raise bad(f"{where}: {e}") from None
        where = f"user {username!r}"
        if username in users:
            raise bad(f"{where}: duplicate username")
        pw_hash = entry.get("password_hash")
        try:
            if not isinstance(pw_hash, str):
                raise ValueError("missing")
            _parse_hash(pw_hash)
        except (ValueError, TypeError):
            raise bad(
                f"{where}: password_hash must look like scrypt$n$r$p$salt$key "
                "(create users with 'python -m devauth adduser')"
            ) from None
        projects = entry.get("projects", {})
        if not isinstance(projects, dict):
            raise bad(f"{where}: projects must be an object mapping project to a list of roles")
        parsed: dict[str, tuple[str, ...]] = {}
        for project, roles in projects.items():
            try:
                validate_name("project", project)
                if not isinstance(roles, list):
                    raise ValueError(f"roles of project {project!r} must be a list")
                parsed[project] = tuple(validate_role(r) for r in roles)
            except ValueError as e:
                raise bad(f"{where}: {e}") from None
        users[username] = User(username, pw_hash, parsed)
    return users


def load_users(path: str | os.PathLike, missing_ok: bool = True) -> dict[str, User]:
    """Read the users file; a missing file is an empty database if ``missing_ok``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise UsersFileError(f"{path}: users file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"{path}: cannot read users file ({e})") from None
    return _parse(path, text)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory, fsync and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_users(path: str | os.PathLike, users: Mapping[str, User]) -> None:
    """Replace the users file atomically with ``users`` (mode 0600)."""
    doc = {"version": FORMAT_VERSION, "users": [u.to_json() for u in users.values()]}
    atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (serialises writers, not readers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_user(
    path: str | os.PathLike,
    username: str,
    password: str,
    projects: Mapping[str, Sequence[str]] | Sequence[str],
    *,
    replace: bool = False,
) -> User:
    """Create ``username`` (or replace it if ``replace``) and save the file.

    ``projects`` maps project to roles, or is a list of projects that each get
    the default roles (``user``).  Raises UserExists, ValueError (bad names),
    UsersFileError (bad file).
    """
    validate_name("username", username)
    if not isinstance(password, str) or not password:
        raise ValueError("password must not be empty")
    if not isinstance(projects, Mapping):
        projects = {p: DEFAULT_ROLES for p in projects}
    if not projects:
        raise ValueError("a user needs at least one project")
    parsed = {
        validate_name("project", p): tuple(dict.fromkeys(validate_role(r) for r in roles))
        for p, roles in projects.items()
    }
    user = User(username, hash_password(password), parsed)
    with locked(path):
        users = load_users(path)
        if username in users and not replace:
            raise UserExists(f"{path}: user {username!r} already exists")
        users[username] = user
        save_users(path, users)
    return user


def authenticate(users: Mapping[str, User], username: str, password: str) -> User | None:
    """Return the user if the password matches; similar timing for unknown users."""
    user = users.get(username)
    if user is None:
        verify_password(password, _dummy_hash())
        return None
    return user if verify_password(password, user.password_hash) else None


# --------------------------------------------------------------------------- demo user

DEMO_USERNAME = "demo"
DEMO_PROJECT = "demo"
DEMO_CREDENTIALS_NAME = "demo-credentials.txt"


def demo_credentials_path(users_file: str | os.PathLike) -> Path:
    """``demo-credentials.txt`` next to the users file."""
    return Path(users_file).parent / DEMO_CREDENTIALS_NAME


def read_demo_credentials(users_file: str | os.PathLike) -> dict[str, str] | None:
    """The ``KEY=value`` lines of the demo credentials file, or None if absent."""
    try:
        text = demo_credentials_path(users_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def ensure_demo_user(users_file: str | os.PathLike) -> tuple[dict[str, str], bool]:
    """Make sure user ``demo`` (project ``demo``) exists and its password is on record.

    The random password is stored hashed in the users file and in clear only in
    ``demo-credentials.txt`` (mode 0600) next to it, so that start scripts can
    show it on every start.  If the demo user exists but the credentials file
    is missing or stale, the password is reset.  Returns (credentials, changed).
    """
    users_file = Path(users_file)
    with locked(users_file):
        users = load_users(users_file)
        creds = read_demo_credentials(users_file)
        user = users.get(DEMO_USERNAME)
        if (
            user is not None
            and creds is not None
            and creds.get("username") == DEMO_USERNAME
            and DEMO_PROJECT in user.projects
            and verify_password(creds.get("password", ""), user.password_hash)
        ):
            return creds, False
        password = secrets.token_urlsafe(12)
        projects = dict(user.projects) if user is not None else {}
        projects.setdefault(DEMO_PROJECT, DEFAULT_ROLES)
        users[DEMO_USERNAME] = User(DEMO_USERNAME, hash_password(password), projects)
        creds = {"username": DEMO_USERNAME, "password": password, "project": DEMO_PROJECT}
        # Credentials first: if we crash in between, the next start resets again.
        atomic_write_text(
            demo_credentials_path(users_file),
            "# Development authentication manager demo account (devauth --demo)\n"
            + "".join(f"{k}={v}\n" for k, v in creds.items()),
            mode=0o600,
        )
        save_users(users_file, users)
        return creds, True

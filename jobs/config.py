"""Configuration: the `env` file, overridden by environment variables, parsed once."""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # a source checkout, or site-packages when installed
PACKAGE_DEFINITIONS = Path(__file__).resolve().parent / "definitions"
SYSTEM_ENV_FILE = Path("/etc/spoolsoap/env")


def env_file_candidates() -> list[Path]:
    """Where the configuration is looked for, first found wins (after ENV_FILE, which must exist):
    ./env, the source checkout's env (an installed package has none), /etc/spoolsoap/env."""
    return [Path.cwd() / "env", PROJECT_ROOT / "env", SYSTEM_ENV_FILE]


def state_dir(environ: dict[str, str]) -> Path:
    """Built-in home of the spool when no env file names one: systemd's $STATE_DIRECTORY
    (StateDirectory=spoolsoap: /var/lib/spoolsoap), /var/lib/spoolsoap for root, else
    $XDG_STATE_HOME/spoolsoap (~/.local/state/spoolsoap)."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/spoolsoap")
    return Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "spoolsoap"


def find_env_file(environ: dict[str, str]) -> Path | None:
    """ENV_FILE if set, else the first candidate that is a file, else None (built-in defaults)."""
    if environ.get("ENV_FILE"):
        return Path(environ["ENV_FILE"]).expanduser().resolve()
    return next((p.resolve() for p in env_file_candidates() if p.is_file()), None)

_SEMWES_ROOT = re.compile(r"/[a-z0-9-]{1,32}")
_DEEP_ROOT = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_LOG_LEVELS = ("debug", "info", "warning", "error")
EXECUTORS = ("local", "slurm")
_SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,-]{0,127}")
# sbatch options the slurm executor sets itself (supervisor/slurm.py); refused in SLURM_OPTIONS
SBATCH_MANAGED = ("--job-name", "-J", "--chdir", "-D", "--output", "-o", "--error", "-e", "--input", "-i",
                  "--export", "--open-mode", "--parsable", "--wrap", "--time", "-t", "--requeue",
                  "--no-requeue", "--array", "-a", "--partition", "-p", "--account", "-A")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse `KEY=value` lines; `#` starts a comment line; values are not quoted."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set ENV_FILE)") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key.strip()):
            raise ConfigError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        values[key.strip()] = value.strip()
    return values


def validate_context_root(value: str) -> str:
    """Accept `/<project>-<service>` (SemWES) or a deeper path (`/mycompany/myvm`)."""
    if value.count("/") == 1:
        if not _SEMWES_ROOT.fullmatch(value):
            raise ConfigError(
                f"CONTEXT_ROOT={value!r}: a one-segment root must be '/' followed by 1-32 "
                "lowercase letters, digits or hyphens (SemWES: /<project>-<service>)"
            )
    elif not _DEEP_ROOT.fullmatch(value) or ".." in value.split("/"):
        raise ConfigError(
            f"CONTEXT_ROOT={value!r}: must be an absolute path like /mycompany/myvm "
            "without a trailing slash, '..' or unusual characters"
        )
    return value


def _number(name: str, raw: str, lo: float, hi: float, kind: type = float):
    """Parse int or float `raw`, naming the key and its allowed range on error."""
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r}: must be {what} in [{lo}, {hi}]") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value}: must be in [{lo}, {hi}]")
    return value


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    return _number(name, raw, lo, hi, int)


_float = _number


def slurm_name_problem(value: str) -> str | None:
    """A partition or account name as sbatch takes it (a partition may be a comma list)."""
    return None if _SLURM_NAME.fullmatch(value) else "must be letters, digits, '_', '.', ',' or '-'"


def sbatch_options_problem(options: list[str] | tuple[str, ...]) -> str | None:
    """Extra sbatch options: each one argument starting with '-', none the executor sets itself."""
    for opt in options:
        if not opt.startswith("-") or opt in ("-", "--"):
            return f"{opt!r}: each option must be one argument starting with '-' (write --mem=4G, not --mem 4G)"
        for managed in SBATCH_MANAGED:
            long_form = managed.startswith("--")
            if opt == managed or (long_form and opt.startswith(managed + "=")) or \
                    (not long_form and opt.startswith(managed) and not opt.startswith("--")):
                return (f"{opt!r}: {managed} is set by the supervisor (use SLURM_PARTITION / SLURM_ACCOUNT, "
                        "or the definition's [slurm] table and [limits] max_runtime_seconds)")
    return None


def _slurm_options(raw: str) -> tuple[str, ...]:
    try:
        options = shlex.split(raw)
    except ValueError as e:
        raise ConfigError(f"SLURM_OPTIONS={raw!r}: cannot split into arguments ({e})") from None
    problem = sbatch_options_problem(options)
    if problem:
        raise ConfigError(f"SLURM_OPTIONS: {problem}")
    return tuple(options)


def _slurm_name(name: str, raw: str) -> str:
    if raw and slurm_name_problem(raw):
        raise ConfigError(f"{name}={raw!r}: {slurm_name_problem(raw)}, or empty for the cluster's default")
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}={raw!r}: must be true or false")
    return value in ("true", "1", "yes")


def _addresses(name: str, raw: str) -> tuple[str, ...]:
    """IP addresses or networks (CIDR), or `*`, separated by commas or spaces."""
    entries = tuple(e for e in re.split(r"[,\s]+", raw) if e)
    for e in entries:
        try:
            if e != "*":
                ipaddress.ip_network(e, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {e!r} is not an IP address or network (e.g. 10.0.0.0/8), nor '*'") from None
    return entries


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


@dataclass(frozen=True)
class Config:
    context_root: str
    spool_dir: Path
    definitions_dir: Path
    max_parallel_jobs: int
    retention_days: float
    reconcile_seconds: float
    log_level: str
    facade_host: str
    facade_port: int
    facade_workers: int
    facade_threads: int
    facade_read_timeout_seconds: float
    auth_cache_seconds: float
    auth_timeout_seconds: float
    auth_managers: tuple[str, ...]
    forwarded_allow_ips: tuple[str, ...]
    abort_wait_seconds: float
    max_body_bytes: int
    devauth_host: str
    devauth_port: int
    devauth_users_file: Path
    supervisor_watch: bool
    facade_fast_path: bool
    executor: str
    supervisor_on_stop: str
    slurm_partition: str
    slurm_account: str
    slurm_options: tuple[str, ...]
    slurm_poll_seconds: float
    slurm_jobcomp_log: Path | None
    slurm_bin_dir: Path | None
    console_host: str
    console_port: int
    console_secret_file: Path
    console_operators: tuple[str, ...]
    console_nice: int
    env_file: Path | None

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * 86400


_DEFAULTS = {
    "CONTEXT_ROOT": "/demo-waiter",
    "SPOOL_DIR": "",            # built-in: state_dir()/spool
    "DEFINITIONS_DIR": str(PACKAGE_DEFINITIONS),
    "MAX_PARALLEL_JOBS": "4",
    "RETENTION_DAYS": "7",
    "RECONCILE_SECONDS": "5",
    "LOG_LEVEL": "info",
    "FACADE_HOST": "127.0.0.1",
    "FACADE_PORT": "8080",
    "FACADE_WORKERS": "2",
    "FACADE_THREADS": "8",
    "FACADE_READ_TIMEOUT_SECONDS": "10",
    "AUTH_CACHE_SECONDS": "30",
    "AUTH_TIMEOUT_SECONDS": "5",
    "AUTH_MANAGERS": "",
    "FORWARDED_ALLOW_IPS": "127.0.0.1,::1",
    "ABORT_WAIT_SECONDS": "4",
    "MAX_BODY_BYTES": "1048576",
    "DEVAUTH_HOST": "127.0.0.1",
    "DEVAUTH_PORT": "8081",
    "DEVAUTH_USERS_FILE": "",   # built-in: state_dir()/devauth/users.json
    "SUPERVISOR_WATCH": "true",
    "FACADE_FAST_PATH": "true",
    "EXECUTOR": "local",
    "SUPERVISOR_ON_STOP": "leave",
    "SLURM_PARTITION": "",
    "SLURM_ACCOUNT": "",
    "SLURM_OPTIONS": "",
    "SLURM_POLL_SECONDS": "2",
    "SLURM_JOBCOMP_LOG": "",
    "SLURM_BIN_DIR": "",
    "CONSOLE_HOST": "127.0.0.1",
    "CONSOLE_PORT": "8082",
    "CONSOLE_SECRET_FILE": "",  # built-in: state_dir()/console/secret
    "CONSOLE_OPERATORS": "",
    "CONSOLE_NICE": "10",
}


def load(env_file: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the env file (`env_file`, else find_env_file()), apply overrides, validate.

    Relative paths are relative to the env file's directory; without an env
    file, to the current directory.
    """
    environ = os.environ if environ is None else environ
    path = Path(env_file).resolve() if env_file else find_env_file(environ)
    state = state_dir(environ)
    raw = dict(_DEFAULTS, SPOOL_DIR=str(state / "spool"), DEVAUTH_USERS_FILE=str(state / "devauth" / "users.json"),
               CONSOLE_SECRET_FILE=str(state / "console" / "secret"))
    if path is not None:
        raw.update(read_env_file(path))
    raw.update({k: v for k, v in environ.items() if k in _DEFAULTS})
    base = path.parent if path is not None else Path.cwd()

    def _path(name: str) -> Path:
        p = Path(raw[name]).expanduser()
        return (p if p.is_absolute() else base / p).resolve()

    level = raw["LOG_LEVEL"].lower()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={raw['LOG_LEVEL']!r}: must be one of {', '.join(_LOG_LEVELS)}")
    watch = raw["SUPERVISOR_WATCH"].lower()
    if watch not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"SUPERVISOR_WATCH={raw['SUPERVISOR_WATCH']!r}: must be true or false")
    return Config(
        context_root=validate_context_root(raw["CONTEXT_ROOT"]),
        spool_dir=_path("SPOOL_DIR"),
        definitions_dir=_path("DEFINITIONS_DIR"),
        max_parallel_jobs=_int("MAX_PARALLEL_JOBS", raw["MAX_PARALLEL_JOBS"], 1, 10000),
        retention_days=_float("RETENTION_DAYS", raw["RETENTION_DAYS"], 0, 3650),
        reconcile_seconds=_float("RECONCILE_SECONDS", raw["RECONCILE_SECONDS"], 0.1, 3600),
        log_level=level,
        facade_host=raw["FACADE_HOST"],
        facade_port=_int("FACADE_PORT", raw["FACADE_PORT"], 0, 65535),
        facade_workers=_int("FACADE_WORKERS", raw["FACADE_WORKERS"], 1, 64),
        facade_threads=_int("FACADE_THREADS", raw["FACADE_THREADS"], 1, 256),
        facade_read_timeout_seconds=_float("FACADE_READ_TIMEOUT_SECONDS", raw["FACADE_READ_TIMEOUT_SECONDS"], 1, 60),
        auth_cache_seconds=_float("AUTH_CACHE_SECONDS", raw["AUTH_CACHE_SECONDS"], 0, 3600),
        auth_timeout_seconds=_float("AUTH_TIMEOUT_SECONDS", raw["AUTH_TIMEOUT_SECONDS"], 0.1, 60),
        auth_managers=tuple(u for u in re.split(r"[,\s]+", raw["AUTH_MANAGERS"]) if u),
        forwarded_allow_ips=_addresses("FORWARDED_ALLOW_IPS", raw["FORWARDED_ALLOW_IPS"]),
        abort_wait_seconds=_float("ABORT_WAIT_SECONDS", raw["ABORT_WAIT_SECONDS"], 0, 30),
        max_body_bytes=_int("MAX_BODY_BYTES", raw["MAX_BODY_BYTES"], 1024, 64 * 1024 * 1024),
        devauth_host=raw["DEVAUTH_HOST"],
        devauth_port=_int("DEVAUTH_PORT", raw["DEVAUTH_PORT"], 0, 65535),
        devauth_users_file=_path("DEVAUTH_USERS_FILE"),
        supervisor_watch=watch in ("true", "1", "yes"),
        facade_fast_path=_flag("FACADE_FAST_PATH", raw["FACADE_FAST_PATH"]),
        executor=_choice("EXECUTOR", raw["EXECUTOR"], EXECUTORS),
        supervisor_on_stop=_choice("SUPERVISOR_ON_STOP", raw["SUPERVISOR_ON_STOP"], ("leave", "requeue")),
        slurm_partition=_slurm_name("SLURM_PARTITION", raw["SLURM_PARTITION"]),
        slurm_account=_slurm_name("SLURM_ACCOUNT", raw["SLURM_ACCOUNT"]),
        slurm_options=_slurm_options(raw["SLURM_OPTIONS"]),
        slurm_poll_seconds=_float("SLURM_POLL_SECONDS", raw["SLURM_POLL_SECONDS"], 0.2, 600),
        slurm_jobcomp_log=_path("SLURM_JOBCOMP_LOG") if raw["SLURM_JOBCOMP_LOG"] else None,
        slurm_bin_dir=_path("SLURM_BIN_DIR") if raw["SLURM_BIN_DIR"] else None,
        console_host=raw["CONSOLE_HOST"],
        console_port=_int("CONSOLE_PORT", raw["CONSOLE_PORT"], 0, 65535),
        console_secret_file=_path("CONSOLE_SECRET_FILE"),
        console_operators=tuple(u for u in re.split(r"[,\s]+", raw["CONSOLE_OPERATORS"]) if u),
        console_nice=_int("CONSOLE_NICE", raw["CONSOLE_NICE"], 0, 19),
        env_file=path,
    )


CONFIG_KEYS = tuple(_DEFAULTS)
assert {f.name for f in fields(Config)} >= {k.lower() for k in CONFIG_KEYS}

"""Configuration: the `env` file, overridden by environment variables, parsed once.

Every key is one row of SETTINGS (name, default, parser, readers, doc); Config and
load() are made from that table, so a new key is one new row (and a line in `env`).
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .limits import cpus_problem, parse_size, processes_problem, size_problem

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
LOG_LEVELS = ("debug", "info", "warning", "error")
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


def _choice(name: str, raw: str, allowed: tuple[str, ...], fold=lambda v: v) -> str:
    """One of `allowed`, after `fold` (LOG_LEVEL takes any case); the message shows what was written."""
    if fold(raw) not in allowed:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return fold(raw)


def _words(name: str, raw: str) -> tuple[str, ...]:
    return tuple(u for u in re.split(r"[,\s]+", raw) if u)


def _weights(kind: type, lo: float, hi: float) -> Parser:
    """`name:value` pairs separated by commas or spaces (PROJECT_SHARES, MAX_RUNNING_PER_JOB), each name once."""
    def parse(name: str, raw: str, base: Path) -> tuple[tuple[str, Any], ...]:
        pairs: dict[str, Any] = {}
        for entry in _words(name, raw):
            key, sep, value = entry.rpartition(":")
            if not sep or not key or len(key) > 256 or key in pairs:
                raise ConfigError(f"{name}: {entry!r} must be name:value, each name once (e.g. projA:2,projB:1)")
            pairs[key] = _number(f"{name} {key}", value, lo, hi, kind)
        return tuple(pairs.items())
    return parse


# A parser takes (key, text as written, the env file's directory) and returns the value, or raises
# ConfigError naming the key and its allowed range. The factories below make the usual ones.
Parser = Callable[[str, str, Path], Any]


def _text(name: str, raw: str, base: Path) -> str:
    return raw


def _path(name: str, raw: str, base: Path) -> Path:
    """Relative to the env file's directory (without one, the current directory)."""
    p = Path(raw).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _path_or_none(name: str, raw: str, base: Path) -> Path | None:
    return _path(name, raw, base) if raw else None


def _ranged(kind: type, lo: float, hi: float) -> Parser:
    return lambda name, raw, base: _number(name, raw, lo, hi, kind)


def _one_of(allowed: tuple[str, ...], fold=lambda v: v) -> Parser:
    return lambda name, raw, base: _choice(name, raw, allowed, fold)


def _plain(parse: Callable[[str, str], Any]) -> Parser:
    """A parser that needs no directory."""
    return lambda name, raw, base: parse(name, raw)


def _limit(kind: str) -> Parser:
    """A job limit's default: empty for none, else a size ("2 GiB"), a number of cores or of processes."""
    def parse(name: str, raw: str, base: Path):
        if not raw.strip():
            return None
        if kind == "size":
            problem = size_problem(raw, 1 << 20 if name == "JOB_MEMORY_LIMIT" else 1)
            if problem:
                raise ConfigError(f"{name}: {problem}, or empty for no limit")
            return parse_size(raw)
        value = _number(name, raw, 0.01 if kind == "cpus" else 1, 4096 if kind == "cpus" else 4_194_304,
                        float if kind == "cpus" else int)
        problem = cpus_problem(value) if kind == "cpus" else processes_problem(value)
        if problem:
            raise ConfigError(f"{name}={raw!r}: {problem}")
        return value
    return parse


def _project_users(name: str, raw: str) -> dict[str, str]:
    """project:user,... (the user each project's jobs run as)."""
    users: dict[str, str] = {}
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        project, sep, user = (p.strip() for p in item.partition(":"))
        if not sep or not project or not user:
            raise ConfigError(f"{name}: {item!r}: expected project:user")
        if project in users:
            raise ConfigError(f"{name}: project {project!r} is given twice")
        users[project] = user
    return users


def _cgroup_parent(name: str, raw: str) -> str:
    if not raw.strip("/") or ".." in raw.split("/") or not re.fullmatch(r"[A-Za-z0-9._@/-]+", raw):
        raise ConfigError(f"{name}={raw!r}: a cgroup path (letters, digits, '.', '_', '-', '/'), without '..'; "
                          "relative: below the supervisor's own cgroup")
    return raw


@dataclass(frozen=True)
class Setting:
    """One key of the env file, written once: Config's attribute is key.lower()."""
    key: str
    default: str | Callable[[Path], str]  # as written in the env file; a callable takes state_dir()
    type: Any
    parse: Parser
    readers: tuple[str, ...]  # the components that read it (tests/test_config.py checks it)
    doc: str

    @property
    def attr(self) -> str:
        return self.key.lower()


def _under_state(*parts: str) -> Callable[[Path], str]:
    return lambda state: str(state.joinpath(*parts))


_PORT = _ranged(int, 0, 65535)
_WORDS = _plain(_words)
SETTINGS: tuple[Setting, ...] = (
    Setting("CONTEXT_ROOT", "/demo-waiter", str, lambda name, raw, base: validate_context_root(raw),
            ("facade", "client", "bench"), "where the facade is mounted: /<project>-<service> or a deeper path"),
    Setting("SPOOL_DIR", _under_state("spool"), Path, _path,
            ("supervisor", "facade", "console", "jobctl", "bench"), "the spool, shared by every component"),
    Setting("DEFINITIONS_DIR", str(PACKAGE_DEFINITIONS), Path, _path,
            ("supervisor", "facade", "console", "jobctl"), "the job definitions (*.toml)"),
    Setting("MAX_PARALLEL_JOBS", "4", int, _ranged(int, 1, 10000), ("supervisor",), "jobs running at once"),
    Setting("RETENTION_DAYS", "7", float, _ranged(float, 0, 3650), ("supervisor",),
            "how long a finished run is kept (read as retention_seconds)"),
    Setting("ACCOUNTING_RETENTION_DAYS", "400", float, _ranged(float, 1, 36500), ("supervisor",),
            "how long the accounting ledger keeps a month of ended attempts (outlives RETENTION_DAYS)"),
    Setting("RECONCILE_SECONDS", "5", float, _ranged(float, 0.1, 3600), ("supervisor", "facade", "console", "jobctl"),
            "the supervisor's full rescan; its heartbeat is judged by it"),
    Setting("LOG_LEVEL", "info", str, _one_of(LOG_LEVELS, str.lower),
            ("supervisor", "facade", "console", "devauth"), "debug, info, warning or error (any case)"),
    Setting("FACADE_HOST", "127.0.0.1", str, _text, ("facade", "client"), "the facade's listening address"),
    Setting("FACADE_PORT", "8080", int, _PORT, ("facade", "client"), "the facade's port"),
    Setting("FACADE_WORKERS", "2", int, _ranged(int, 1, 64), ("facade", "bench"), "granian worker processes"),
    Setting("FACADE_THREADS", "8", int, _ranged(int, 1, 256), ("facade",), "threads per worker running SOAP calls"),
    Setting("FACADE_READ_TIMEOUT_SECONDS", "10", float, _ranged(float, 1, 60), ("facade",),
            "a client's time to send its headers, then its body"),
    Setting("AUTH_CACHE_SECONDS", "30", float, _ranged(float, 0, 3600), ("facade", "console"),
            "how long a validated session token is trusted"),
    Setting("AUTH_TIMEOUT_SECONDS", "5", float, _ranged(float, 0.1, 60), ("facade", "console"),
            "a call to the authentication manager"),
    Setting("AUTH_MANAGERS", "", tuple[str, ...], _WORDS, ("facade", "console"),
            "the authentication managers' WSDL URLs or URL prefixes that may be asked"),
    Setting("FORWARDED_ALLOW_IPS", "127.0.0.1,::1", tuple[str, ...], _plain(_addresses), ("facade", "console"),
            "reverse proxies whose X-Forwarded-* headers are believed"),
    Setting("ABORT_WAIT_SECONDS", "4", float, _ranged(float, 0, 30), ("facade",),
            "how long abortService waits for the job to stop"),
    Setting("MAX_BODY_BYTES", "1048576", int, _ranged(int, 1024, 64 * 1024 * 1024), ("facade",),
            "the largest request body"),
    Setting("DEVAUTH_HOST", "127.0.0.1", str, _text, ("devauth", "client"), "the development auth manager's address"),
    Setting("DEVAUTH_PORT", "8081", int, _PORT, ("devauth", "client"), "the development auth manager's port"),
    Setting("DEVAUTH_USERS_FILE", _under_state("devauth", "users.json"), Path, _path, ("devauth",),
            "the development auth manager's users"),
    Setting("SUPERVISOR_WATCH", "true", bool, _plain(_flag), ("supervisor",),
            "wake the supervisor on spool events (watchdog), besides its rescans"),
    Setting("FACADE_FAST_PATH", "true", bool, _plain(_flag), ("facade",),
            "answer plain getServiceStatus polls without spyne"),
    Setting("EXECUTOR", "local", str, _one_of(EXECUTORS), ("supervisor", "jobctl"),
            "where jobs run: local or slurm"),
    Setting("SUPERVISOR_ON_STOP", "leave", str, _one_of(("leave", "requeue")), ("supervisor",),
            "on SIGTERM: leave jobs running, or requeue them"),
    Setting("SLURM_PARTITION", "", str, _plain(_slurm_name), ("supervisor",), "sbatch --partition; empty: the default"),
    Setting("SLURM_ACCOUNT", "", str, _plain(_slurm_name), ("supervisor",), "sbatch --account; empty: the default"),
    Setting("SLURM_OPTIONS", "", tuple[str, ...], lambda name, raw, base: _slurm_options(raw), ("supervisor",),
            "more sbatch options, one argument each"),
    Setting("SLURM_POLL_SECONDS", "2", float, _ranged(float, 0.2, 600), ("supervisor",), "how often Slurm is asked"),
    Setting("SLURM_JOBCOMP_LOG", "", Path | None, _path_or_none, ("supervisor",),
            "Slurm's job-completion log, for jobs slurmctld forgot"),
    Setting("SLURM_BIN_DIR", "", Path | None, _path_or_none, ("supervisor",), "where sbatch, squeue... are"),
    Setting("JOB_ISOLATION", "auto", str, _one_of(("auto", "off")), ("supervisor",),
            "auto: confine jobs (own user, own cgroup) where this machine allows, and say where not; off: never"),
    Setting("JOB_USER", "", str, _text, ("supervisor",),
            "the unprivileged user jobs run as (empty: not isolated by user)"),
    Setting("PROJECT_USERS", "", dict[str, str], _plain(_project_users), ("supervisor",),
            "project:user,... : a project's jobs run as its own user instead of JOB_USER"),
    Setting("CGROUP_PARENT", "spoolsoap-jobs", str, _plain(_cgroup_parent), ("supervisor",),
            "where attempt cgroups go (one spool-<hash> directory per spool in it): below the supervisor's "
            "own cgroup, or an absolute cgroup path"),
    Setting("JOB_MEMORY_LIMIT", "", int | None, _limit("size"), ("supervisor",),
            "a job's memory when its definition sets none (\"2 GiB\"); empty: no limit"),
    Setting("JOB_CPU_LIMIT", "", float | None, _limit("cpus"), ("supervisor",),
            "a job's CPU cores when its definition sets none; empty: no limit"),
    Setting("JOB_PROCESS_LIMIT", "", int | None, _limit("processes"), ("supervisor",),
            "a job's processes and threads when its definition sets none; empty: no limit"),
    Setting("JOB_LOG_LIMIT", "100 MiB", int | None, _limit("size"), ("supervisor",),
            "stdout and stderr bytes each, when its definition sets none; cut there with a marker; empty: no limit"),
    Setting("CONSOLE_HOST", "127.0.0.1", str, _text, ("console",), "the console's listening address"),
    Setting("CONSOLE_PORT", "8082", int, _PORT, ("console",), "the console's port"),
    Setting("CONSOLE_SECRET_FILE", _under_state("console", "secret"), Path, _path, ("console",),
            "the console's session-signing key"),
    Setting("CONSOLE_OPERATORS", "", tuple[str, ...], _WORDS, ("console",),
            "usernames that see and act on every project's jobs"),
    Setting("CONSOLE_NICE", "10", int, _ranged(int, 0, 19), ("console",), "the console's niceness"),
    Setting("CONSOLE_METRICS_TOKEN_FILE", "", Path | None, _path_or_none, ("console",),
            "a file holding the bearer token a scraper sends to the console's /metrics; empty: operators only"),
    Setting("PROJECT_SHARES", "", tuple[tuple[str, float], ...], _weights(float, 0.001, 1e6), ("supervisor",),
            "fair-share weights, project:weight separated by commas; a project not named weighs 1"),
    Setting("FAIR_SHARE_HALF_LIFE_HOURS", "24", float, _ranged(float, 0.01, 87600), ("supervisor",),
            "past usage counts half after this long"),
    Setting("MAX_RUNNING_PER_PROJECT", "0", int, _ranged(int, 0, 10000), ("supervisor",),
            "jobs of one project running at once; 0: no cap"),
    Setting("MAX_RUNNING_PER_JOB", "", tuple[tuple[str, int], ...], _weights(int, 1, 10000), ("supervisor",),
            "jobs of one type running at once, job:cap separated by commas (e.g. waiter:2); a type not named: no cap"),
)
CONFIG_KEYS = tuple(s.key for s in SETTINGS)
_KNOWN = frozenset(CONFIG_KEYS)

Config = make_dataclass(
    "Config", [(s.attr, s.type) for s in SETTINGS] + [("env_file", Path | None)], frozen=True,
    namespace={"__module__": __name__, "__doc__": "Every setting, parsed once (one attribute per SETTINGS row, and the env file read).",
               "retention_seconds": property(lambda self: self.retention_days * 86400)})


def load(env_file: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the env file (`env_file`, else find_env_file()), apply overrides, validate.

    Relative paths are relative to the env file's directory; without an env
    file, to the current directory.
    """
    environ = os.environ if environ is None else environ
    path = Path(env_file).resolve() if env_file else find_env_file(environ)
    state = state_dir(environ)
    raw = {s.key: s.default(state) if callable(s.default) else s.default for s in SETTINGS}
    if path is not None:
        raw.update(read_env_file(path))
    raw.update({k: v for k, v in environ.items() if k in _KNOWN})
    base = path.parent if path is not None else Path.cwd()
    return Config(**{s.attr: s.parse(s.key, raw[s.key], base) for s in SETTINGS}, env_file=path)

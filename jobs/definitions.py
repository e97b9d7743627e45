"""Declarative job definitions: one TOML file per wrapped program.

A definition says how the SOAP start method looks (name, typed inputs,
outputs), how to run the program (argv template), how to read its progress and
outputs, and its limits. Facade and supervisor both build on it, so adding a
program is adding a file. Every problem is reported as `file: field: what`.
"""
from __future__ import annotations

import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import EXECUTORS, PROJECT_ROOT, sbatch_options_problem, slurm_name_problem
from .errors import DefinitionError, SpecError
from .runfiles import NOTIFICATIONS, RESERVED_FILES

INPUT_TYPES = ("integer", "float", "string", "boolean")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_FIXED_PLACEHOLDERS = ("python", "project", "here", "run_dir", "attempt_dir", "service_id", "attempt")
RESERVED_METHOD_PARAMS = ("serviceID", "sessionToken", "extraParameters")
RESERVED_OUTPUTS = ("status_base64",)


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    max_length: int = 4096
    pattern: str | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, value: Any) -> Any:
        """Check one value against type and bounds; SpecError names the field."""
        if value is None:
            if self.default is None:
                raise SpecError(f"{self.name}: required")
            return self.default
        t = self.type
        if t == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
                    value = int(value)
                else:
                    raise SpecError(f"{self.name}: must be an integer, got {str(value)[:40]!r}")
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise SpecError(f"{self.name}: must be a number")
            try:
                value = float(value)
            except ValueError:
                raise SpecError(f"{self.name}: must be a number, got {str(value)[:40]!r}") from None
            if not math.isfinite(value):
                raise SpecError(f"{self.name}: must be a finite number")
        elif t == "boolean":
            if not isinstance(value, bool):
                raise SpecError(f"{self.name}: must be true or false")
        elif t == "string":
            if not isinstance(value, str):
                raise SpecError(f"{self.name}: must be a string")
            if len(value) > self.max_length:
                raise SpecError(f"{self.name}: longer than {self.max_length} characters")
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise SpecError(f"{self.name}: does not match {self.pattern}")
        if t in ("integer", "float"):
            if self.min is not None and value < self.min:
                raise SpecError(f"{self.name}: must be >= {_num(self.min)}, got {value}")
            if self.max is not None and value > self.max:
                raise SpecError(f"{self.name}: must be <= {_num(self.max)}, got {value}")
        return value


@dataclass(frozen=True)
class OutputSpec:
    name: str
    file: str  # key into Definition.files
    placeholder: str = "UNSET"
    max_bytes: int = 65536


@dataclass(frozen=True)
class SlurmSettings:
    """The definition's [slurm] table: used when the job runs on the slurm executor."""
    partition: str | None = None  # None: SLURM_PARTITION
    account: str | None = None    # None: SLURM_ACCOUNT
    options: tuple[str, ...] = ()  # after SLURM_OPTIONS, e.g. ("--cpus-per-task=4", "--mem=8G")


@dataclass(frozen=True)
class Definition:
    name: str
    path: Path
    service: str
    namespace: str
    start_method: str
    description: str
    argv: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    files: dict[str, str]
    progress_file: str | None
    max_runtime_s: float
    abort_grace_s: float
    retries: int = 0
    retry_delay_s: float = 5.0
    retry_backoff: float = 2.0
    env: dict[str, str] = field(default_factory=dict)
    executor: str | None = None  # None: the configured EXECUTOR
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def validate_inputs(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Apply defaults and bounds; unknown names are refused, never ignored."""
        if not isinstance(raw, dict):
            raise SpecError("inputs: must be a mapping")
        known = {i.name for i in self.inputs}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(f"{unknown[0]}: not an input of job {self.name!r}")
        return {i.name: i.coerce(raw.get(i.name)) for i in self.inputs}

    def render_argv(self, inputs: dict[str, Any], run_dir: Path, attempt_dir: Path,
                    service_id: str, attempt: int) -> list[str]:
        values = {
            "python": sys.executable,
            "project": str(PROJECT_ROOT),
            "here": str(self.path.parent),
            "run_dir": str(run_dir),
            "attempt_dir": str(attempt_dir),
            "service_id": service_id,
            "attempt": str(attempt),
        }
        values.update({f"input.{k}": _argv_str(v) for k, v in inputs.items()})
        values.update({f"file.{k}": str(attempt_dir / v) for k, v in self.files.items()})
        values["file.notifications"] = str(run_dir / NOTIFICATIONS)
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in self.argv]

    def retry_delay(self, failed_attempts: int) -> float:
        return self.retry_delay_s * self.retry_backoff ** max(0, failed_attempts - 1)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _argv_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class _Reader:
    """Typed access to one TOML table that names the file and field on error."""

    def __init__(self, path: Path, table: dict, prefix: str = ""):
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set[str] = set()

    def fail(self, key: str, msg: str) -> DefinitionError:
        return DefinitionError(f"{self.path}: {self.prefix}{key}: {msg}")

    def get(self, key: str, types: type | tuple, default: Any = ..., check=None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "required")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(key, f"must be {_tname(types)}, got a boolean")
        if not isinstance(value, types):
            raise self.fail(key, f"must be {_tname(types)}, got {type(value).__name__}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(key, problem)
        return value

    def sub(self, key: str, default: Any = ...) -> "_Reader | None":
        t = self.get(key, dict, default)
        return None if t is None else _Reader(self.path, t, f"{self.prefix}{key}.")

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.fail(extra[0], "unknown field")


def _tname(types: type | tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "a table", list: "a list"}
    ts = types if isinstance(types, tuple) else (types,)
    if set(ts) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _ident(v: str) -> str | None:
    return None if _NAME.fullmatch(v) else "must be an identifier (letters, digits, _)"


def load_definition(path: Path) -> Definition:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(f"{path}: not valid TOML: {e}") from None
    r = _Reader(path, data)
    name = path.stem
    if not _NAME.fullmatch(name):
        raise DefinitionError(f"{path}: file name must be an identifier (it names the job type)")
    service = r.get("service", str, check=_ident)
    namespace = r.get("namespace", str, check=lambda v: None if v.strip() else "must not be empty")
    start_method = r.get("start_method", str, check=_ident)
    if start_method in ("getServiceStatus", "abortService", "notifyService"):
        raise r.fail("start_method", "clashes with a fixed protocol method")
    description = r.get("description", str, "")
    executor = r.get("executor", str, None, check=lambda v: None if v in EXECUTORS else f"must be one of {', '.join(EXECUTORS)}")

    files_r = r.sub("files", {})
    files = {}
    for key in files_r.table:
        fname = files_r.get(key, str, check=lambda v: None if _FILE.fullmatch(v) else "must be a plain file name")
        if not _NAME.fullmatch(key):
            raise files_r.fail(key, "file keys must be identifiers")
        if fname in RESERVED_FILES:
            raise files_r.fail(key, f"{fname!r} is reserved for the supervisor")
        files[key] = fname

    inputs = []
    inputs_r = r.sub("inputs", {})
    for iname in inputs_r.table:
        if not _NAME.fullmatch(iname) or iname in RESERVED_METHOD_PARAMS:
            raise inputs_r.fail(iname, "input names must be identifiers and not serviceID/sessionToken/extraParameters")
        ir = inputs_r.sub(iname)
        itype = ir.get("type", str, check=lambda v: None if v in INPUT_TYPES else f"must be one of {', '.join(INPUT_TYPES)}")
        pytype = {"integer": int, "float": (int, float), "string": str, "boolean": bool}[itype]
        spec = InputSpec(
            name=iname,
            type=itype,
            default=ir.get("default", pytype, None),
            min=ir.get("min", (int, float), None),
            max=ir.get("max", (int, float), None),
            max_length=ir.get("max_length", int, 4096, check=_positive),
            pattern=ir.get("pattern", str, None, check=_regex_problem),
            description=ir.get("description", str, ""),
        )
        if itype in ("integer", "float") and (spec.min is None or spec.max is None):
            raise ir.fail("max" if spec.min is not None else "min", "numeric inputs need both min and max bounds")
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise ir.fail("min", "is greater than max")
        if spec.default is not None:
            try:
                spec.coerce(spec.default)
            except SpecError as e:
                raise ir.fail("default", str(e)) from None
        ir.finish()
        inputs.append(spec)

    outputs = []
    outputs_r = r.sub("outputs", {})
    for oname in outputs_r.table:
        if not _NAME.fullmatch(oname) or oname in RESERVED_OUTPUTS:
            raise outputs_r.fail(oname, "output names must be identifiers other than status_base64")
        orr = outputs_r.sub(oname)
        spec = OutputSpec(
            name=oname,
            file=orr.get("file", str, check=lambda v: None if v in files else f"must name a key of [files] ({', '.join(files) or 'none'})"),
            placeholder=orr.get("placeholder", str, "UNSET"),
            max_bytes=orr.get("max_bytes", int, 65536, check=_positive),
        )
        orr.finish()
        outputs.append(spec)

    progress_r = r.sub("progress", None)
    progress_file = None
    if progress_r is not None:
        progress_file = progress_r.get("file", str, check=lambda v: None if v in files else "must name a key of [files]")
        progress_r.get("kind", str, "percent", check=lambda v: None if v == "percent" else "only 'percent' (a 0-100 number) is supported")
        progress_r.finish()

    argv = r.get("argv", list, check=lambda v: None if v and all(isinstance(a, str) for a in v) else "must be a non-empty list of strings")
    allowed = set(_FIXED_PLACEHOLDERS) | {f"input.{i.name}" for i in inputs} | {f"file.{k}" for k in files} | {"file.notifications"}
    for a in argv:
        for m in _PLACEHOLDER.finditer(a):
            if m.group(1) not in allowed:
                raise r.fail("argv", f"unknown placeholder {{{m.group(1)}}}; known: {', '.join(sorted(allowed))}")

    limits = r.sub("limits", {})
    max_runtime = limits.get("max_runtime_seconds", (int, float), 86400, check=_positive)
    grace = limits.get("abort_grace_seconds", (int, float), 10, check=_non_negative)
    limits.finish()
    retry_r = r.sub("retry", {})
    retries = retry_r.get("count", int, 0, check=lambda v: None if 0 <= v <= 100 else "must be in [0, 100]")
    retry_delay = retry_r.get("delay_seconds", (int, float), 5, check=_non_negative)
    backoff = retry_r.get("backoff", (int, float), 2, check=lambda v: None if v >= 1 else "must be >= 1")
    retry_r.finish()
    env_r = r.sub("env", {})
    env = {k: env_r.get(k, str) for k in env_r.table}
    slurm_r = r.sub("slurm", {})
    slurm = SlurmSettings(
        partition=slurm_r.get("partition", str, None, check=slurm_name_problem),
        account=slurm_r.get("account", str, None, check=slurm_name_problem),
        options=tuple(slurm_r.get("options", list, [], check=lambda v: (
            "must be a list of strings" if not all(isinstance(o, str) for o in v) else sbatch_options_problem(v)))),
    )
    slurm_r.finish()
    r.finish()
    return Definition(
        name=name, path=path.resolve(), service=service, namespace=namespace, start_method=start_method,
        description=description, argv=tuple(argv), inputs=tuple(inputs), outputs=tuple(outputs),
        files=files, progress_file=progress_file, max_runtime_s=float(max_runtime), abort_grace_s=float(grace),
        retries=retries, retry_delay_s=float(retry_delay), retry_backoff=float(backoff), env=env,
        executor=executor, slurm=slurm,
    )


def _regex_problem(v: str) -> str | None:
    try:
        re.compile(v)
    except re.error as e:
        return f"not a valid regular expression ({e})"
    return None


def load_definitions(directory: Path) -> dict[str, Definition]:
    """All `*.toml` files of a directory; any bad file stops start-up."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DefinitionError(f"{directory}: definitions directory not found (DEFINITIONS_DIR)")
    defs: dict[str, Definition] = {}
    services: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        d = load_definition(path)
        if d.service in services:
            raise DefinitionError(f"{path}: service: {d.service!r} already defined by {services[d.service]}")
        services[d.service] = path
        defs[d.name] = d
    if not defs:
        raise DefinitionError(f"{directory}: no job definitions (*.toml) found")
    return defs

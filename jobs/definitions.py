"""Declarative job definitions: one TOML file per wrapped program.

A definition says how the SOAP start method looks (name, typed inputs,
outputs), how to run the program (argv template), how to read its progress and
outputs, and its limits. Facade and supervisor both build on it, so adding a
program is adding a file. Every problem is reported as `file: field: what`.
"""
from __future__ import annotations

import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .config import EXECUTORS, PROJECT_ROOT, sbatch_options_problem, slurm_name_problem
from .errors import DefinitionError, SpecError
from .limits import DefinitionLimits, cpus_problem, parse_size, processes_problem, size_problem
from .runfiles import NOTIFICATIONS_FD_PATH, RESERVED_FILES

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
    limits: DefinitionLimits = field(default_factory=DefinitionLimits)  # jobs/limits.py job_limits() adds the defaults

    def validate_inputs(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Apply defaults and bounds; unknown names are refused, never ignored."""
        if not isinstance(raw, dict):
            raise SpecError("inputs: must be a mapping")
        known = {i.name for i in self.inputs}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(f"{unknown[0]}: not an input of job {self.name!r}")
        return {i.name: i.coerce(raw.get(i.name)) for i in self.inputs}

    def render_argv(self, inputs: dict[str, Any], service_id: str, attempt: int) -> list[str]:
        """The program's argv. Its files are named relative to its working directory (the attempt's
        work/, jobs/runfiles.py), which {attempt_dir} and {run_dir} name ("."): a confined program
        cannot reach the run directory. It reads notifications from the descriptor the shim opens
        for it ({file.notifications} is /dev/fd/3)."""
        values = {
            "python": sys.executable,
            "project": str(PROJECT_ROOT),
            "here": str(self.path.parent),
            "run_dir": ".",
            "attempt_dir": ".",
            "service_id": service_id,
            "attempt": str(attempt),
        }
        values.update({f"input.{k}": _argv_str(v) for k, v in inputs.items()})
        values.update({f"file.{k}": v for k, v in self.files.items()})
        values["file.notifications"] = NOTIFICATIONS_FD_PATH
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in self.argv]

    def program_files(self) -> list[str]:
        """The existing files its argv names through {python}, {project} and {here} alone: what its
        job user must be able to read (./bin/up checks that before it runs jobs as another user)."""
        fixed = {"python": sys.executable, "project": str(PROJECT_ROOT), "here": str(self.path.parent)}
        found = []
        for arg in self.argv:
            path = _PLACEHOLDER.sub(lambda m: fixed.get(m.group(1), "\0"), arg)
            if "\0" not in path and os.path.isabs(path) and os.path.isfile(path):
                found.append(path)
        return found

    def retry_delay(self, failed_attempts: int) -> float:
        return self.retry_delay_s * self.retry_backoff ** max(0, failed_attempts - 1)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _argv_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class _InputTable(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    default: Any = None  # its type follows `type`: checked once that is known
    min: int | float | None = None
    max: int | float | None = None
    max_length: int = 4096
    pattern: str | None = None
    description: str = ""


class _OutputTable(msgspec.Struct, forbid_unknown_fields=True):
    file: str
    placeholder: str = "UNSET"
    max_bytes: int = 65536


class _ProgressTable(msgspec.Struct, forbid_unknown_fields=True):
    file: str
    kind: str = "percent"


class _LimitsTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    max_runtime_seconds: int | float = 86400
    abort_grace_seconds: int | float = 10
    memory: int | str | None = None
    cpus: int | float | None = None
    processes: int | None = None
    log_bytes: int | str | None = None


class _RetryTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    count: int = 0
    delay_seconds: int | float = 5
    backoff: int | float = 2


class _SlurmTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    partition: str | None = None
    account: str | None = None
    options: list[Any] = []


class _DefinitionFile(msgspec.Struct, forbid_unknown_fields=True):
    """A definition file's shape; the tables keyed by names (files, inputs, outputs, env) are
    converted one entry at a time, so that a problem names its key."""
    service: str
    namespace: str
    start_method: str
    argv: list[Any]
    description: str = ""
    executor: str | None = None
    files: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    progress: _ProgressTable | None = None
    limits: _LimitsTable = _LimitsTable()
    retry: _RetryTable = _RetryTable()
    env: dict[str, Any] = {}
    slurm: _SlurmTable = _SlurmTable()


_EXPECTED = {"str": "a string", "int": "an integer", "int | float": "a number", "bool": "a boolean",
             "object": "a table", "array": "a list"}
_GOT = {"array": "list", "object": "dict"}
_MSGSPEC_PROBLEM = re.compile(r"(?P<text>.*?)(?: - at `\$(?P<at>[^`]*)`)?")
_NAMED_FIELD = re.compile(r"Object (missing required|contains unknown) field `(?P<name>[^`]*)`")
_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _field_problem(message: str, where: str) -> str:
    """msgspec's complaint as `field: problem`, in the words the definitions always used."""
    m = _MSGSPEC_PROBLEM.fullmatch(message)
    text, field_name = m["text"], (where + (m["at"] or "")).strip(".")
    if named := _NAMED_FIELD.fullmatch(text):
        field_name = f"{field_name}.{named['name']}".strip(".")
        return f"{field_name}: {'required' if named[1].startswith('missing') else 'unknown field'}"
    if typed := _WRONG_TYPE.fullmatch(text):
        want = _EXPECTED.get(typed["want"].removesuffix(" | null"), typed["want"])
        got = "a boolean" if typed["got"] == "bool" else _GOT.get(typed["got"], typed["got"])
        return f"{field_name}: must be {want}, got {got}"
    return f"{field_name}: {text}"


def _convert(path: Path, value: Any, kind: Any, where: str = "") -> Any:
    """A TOML value as `kind` (bool is no number); DefinitionError `file: field: problem` if it is not one."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        raise DefinitionError(f"{path}: {_field_problem(str(e), where)}") from None


def _check(path: Path, where: str, problem: str | None) -> None:
    if problem:
        raise DefinitionError(f"{path}: {where}: {problem}")


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _ident(v: str) -> str | None:
    return None if _NAME.fullmatch(v) else "must be an identifier (letters, digits, _)"


def _in_files(files: dict[str, str], v: str) -> str | None:
    return None if v in files else f"must name a key of [files] ({', '.join(files) or 'none'})"


_INPUT_PYTYPES = {"integer": int, "float": int | float, "string": str, "boolean": bool}


def _load_files(path: Path, table: dict[str, Any]) -> dict[str, str]:
    files = {}
    for key, value in table.items():
        fname = _convert(path, value, str, f"files.{key}")
        _check(path, f"files.{key}", None if _FILE.fullmatch(fname) else "must be a plain file name")
        _check(path, f"files.{key}", None if _NAME.fullmatch(key) else "file keys must be identifiers")
        _check(path, f"files.{key}", f"{fname!r} is reserved for the supervisor" if fname in RESERVED_FILES else None)
        files[key] = fname
    return files


def _load_input(path: Path, iname: str, value: Any) -> InputSpec:
    where = f"inputs.{iname}"
    _check(path, where, None if _NAME.fullmatch(iname) and iname not in RESERVED_METHOD_PARAMS else
           "input names must be identifiers and not serviceID/sessionToken/extraParameters")
    t = _convert(path, value, _InputTable, where)
    _check(path, f"{where}.type", None if t.type in INPUT_TYPES else f"must be one of {', '.join(INPUT_TYPES)}")
    _check(path, f"{where}.max_length", _positive(t.max_length))
    _check(path, f"{where}.pattern", None if t.pattern is None else _regex_problem(t.pattern))
    default = None if t.default is None else _convert(path, t.default, _INPUT_PYTYPES[t.type], f"{where}.default")
    spec = InputSpec(name=iname, type=t.type, default=default, min=t.min, max=t.max, max_length=t.max_length,
                     pattern=t.pattern, description=t.description)
    if t.type in ("integer", "float") and (spec.min is None or spec.max is None):
        _check(path, f"{where}.{'max' if spec.min is not None else 'min'}", "numeric inputs need both min and max bounds")
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        _check(path, f"{where}.min", "is greater than max")
    if spec.default is not None:
        try:
            spec.coerce(spec.default)
        except SpecError as e:
            _check(path, f"{where}.default", str(e))
    return spec


def _load_output(path: Path, oname: str, value: Any, files: dict[str, str]) -> OutputSpec:
    where = f"outputs.{oname}"
    _check(path, where, None if _NAME.fullmatch(oname) and oname not in RESERVED_OUTPUTS else
           "output names must be identifiers other than status_base64")
    t = _convert(path, value, _OutputTable, where)
    _check(path, f"{where}.file", _in_files(files, t.file))
    _check(path, f"{where}.max_bytes", _positive(t.max_bytes))
    return OutputSpec(name=oname, file=t.file, placeholder=t.placeholder, max_bytes=t.max_bytes)


def load_definition(path: Path) -> Definition:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(f"{path}: not valid TOML: {e}") from None
    name = path.stem
    if not _NAME.fullmatch(name):
        raise DefinitionError(f"{path}: file name must be an identifier (it names the job type)")
    d = _convert(path, data, _DefinitionFile)
    _check(path, "service", _ident(d.service))
    _check(path, "namespace", None if d.namespace.strip() else "must not be empty")
    _check(path, "start_method", _ident(d.start_method))
    if d.start_method in ("getServiceStatus", "abortService", "notifyService"):
        _check(path, "start_method", "clashes with a fixed protocol method")
    if d.executor is not None:
        _check(path, "executor", None if d.executor in EXECUTORS else f"must be one of {', '.join(EXECUTORS)}")
    files = _load_files(path, d.files)
    inputs = [_load_input(path, iname, value) for iname, value in d.inputs.items()]
    outputs = [_load_output(path, oname, value, files) for oname, value in d.outputs.items()]
    progress_file = None
    if d.progress is not None:
        _check(path, "progress.file", None if d.progress.file in files else "must name a key of [files]")
        _check(path, "progress.kind", None if d.progress.kind == "percent" else "only 'percent' (a 0-100 number) is supported")
        progress_file = d.progress.file

    argv = d.argv
    _check(path, "argv", None if argv and all(isinstance(a, str) for a in argv) else "must be a non-empty list of strings")
    allowed = set(_FIXED_PLACEHOLDERS) | {f"input.{i.name}" for i in inputs} | {f"file.{k}" for k in files} | {"file.notifications"}
    for a in argv:
        for m in _PLACEHOLDER.finditer(a):
            if m.group(1) not in allowed:
                _check(path, "argv", f"unknown placeholder {{{m.group(1)}}}; known: {', '.join(sorted(allowed))}")

    _check(path, "limits.max_runtime_seconds", _positive(d.limits.max_runtime_seconds))
    _check(path, "limits.abort_grace_seconds", _non_negative(d.limits.abort_grace_seconds))
    limits = _load_limits(path, d.limits)
    _check(path, "retry.count", None if 0 <= d.retry.count <= 100 else "must be in [0, 100]")
    _check(path, "retry.delay_seconds", _non_negative(d.retry.delay_seconds))
    _check(path, "retry.backoff", None if d.retry.backoff >= 1 else "must be >= 1")
    env = {k: _convert(path, v, str, f"env.{k}") for k, v in d.env.items()}
    for key in ("partition", "account"):
        value = getattr(d.slurm, key)
        _check(path, f"slurm.{key}", None if value is None else slurm_name_problem(value))
    options = d.slurm.options
    _check(path, "slurm.options", "must be a list of strings" if not all(isinstance(o, str) for o in options)
           else sbatch_options_problem(options))
    return Definition(
        name=name, path=path.resolve(), service=d.service, namespace=d.namespace, start_method=d.start_method,
        description=d.description, argv=tuple(argv), inputs=tuple(inputs), outputs=tuple(outputs),
        files=files, progress_file=progress_file, max_runtime_s=float(d.limits.max_runtime_seconds),
        abort_grace_s=float(d.limits.abort_grace_seconds), retries=d.retry.count,
        retry_delay_s=float(d.retry.delay_seconds), retry_backoff=float(d.retry.backoff), env=env,
        executor=d.executor, slurm=SlurmSettings(d.slurm.partition, d.slurm.account, tuple(options)),
        limits=limits,
    )


def _load_limits(path: Path, t: _LimitsTable) -> DefinitionLimits:
    """The [limits] keys memory ("2 GiB"), cpus, processes, log_bytes; unset ones stay None."""
    for key, least in (("memory", 1 << 20), ("log_bytes", 1)):
        value = getattr(t, key)
        _check(path, f"limits.{key}", None if value is None else size_problem(value, least))
    _check(path, "limits.cpus", None if t.cpus is None else cpus_problem(t.cpus))
    _check(path, "limits.processes", None if t.processes is None else processes_problem(t.processes))
    return DefinitionLimits(memory_bytes=None if t.memory is None else parse_size(t.memory),
                            cpus=None if t.cpus is None else float(t.cpus), processes=t.processes,
                            log_bytes=None if t.log_bytes is None else parse_size(t.log_bytes))


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

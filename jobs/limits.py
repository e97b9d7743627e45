"""What one job may use: its definition's [limits], else the configured defaults (JOB_*_LIMIT).

The supervisor enforces them (memory, CPU, processes through the attempt's
cgroup; log bytes in the shim; each output's size when the job ends), the
Slurm executor turns them into sbatch options. None means no limit.
This module imports nothing from the project, so config and definitions may use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
MIN_MEMORY = 1 << 20


def parse_size(value: object) -> int:
    """'2 GiB', '100MB', '512 KiB', 1048576 -> bytes; ValueError says what is expected."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as \"2 GiB\" or a number of bytes, got a boolean")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(str(value))
        unit = m and _UNITS.get(m.group(2).lower())
        if not m or unit is None:
            raise ValueError(f"{value!r}: must be a size such as \"2 GiB\", \"100 MB\" or a number of bytes")
        n = int(float(m.group(1)) * unit)
    if n <= 0:
        raise ValueError(f"{value!r}: must be more than 0 bytes")
    return n


def size_problem(value: object, least: int = 1) -> str | None:
    """Why value is not a size of at least `least` bytes, or None."""
    try:
        n = parse_size(value)
    except ValueError as e:
        return str(e)
    return None if n >= least else f"{value!r}: must be at least {size_text(least)}"


def size_text(n: int) -> str:
    """2147483648 -> '2 GiB', 104857600 -> '100 MiB' (for reasons people read)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"


def cpus_problem(value: float) -> str | None:
    return None if 0.01 <= value <= 4096 else "must be in [0.01, 4096] (cores: 0.5 is half of one core)"


def processes_problem(value: int) -> str | None:
    return None if 1 <= value <= 4_194_304 else "must be in [1, 4194304]"


@dataclass(frozen=True)
class JobLimits:
    """What one job's attempts may use; None: no limit.

    output_bytes: each output's largest size, by output name (the definition's
    outputs.<name>.max_bytes): a bigger output fails the job at its end.
    log_bytes: stdout and stderr each; the shim cuts them there with a marker line.
    """
    memory_bytes: int | None = None
    cpus: float | None = None
    processes: int | None = None
    log_bytes: int | None = None
    output_bytes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DefinitionLimits:
    """A definition's own [limits] keys (None: not given there, the configured default applies)."""
    memory_bytes: int | None = None
    cpus: float | None = None
    processes: int | None = None
    log_bytes: int | None = None


def job_limits(definition, cfg) -> JobLimits:
    """The limits of a job (a jobs.definitions.Definition) under configuration cfg (jobs.config.Config)."""
    own = definition.limits

    def pick(mine, default):
        return default if mine is None else mine
    return JobLimits(memory_bytes=pick(own.memory_bytes, cfg.job_memory_limit),
                     cpus=pick(own.cpus, cfg.job_cpu_limit),
                     processes=pick(own.processes, cfg.job_process_limit),
                     log_bytes=pick(own.log_bytes, cfg.job_log_limit),
                     output_bytes={o.name: o.max_bytes for o in definition.outputs})

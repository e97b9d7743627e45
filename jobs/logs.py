"""structlog set-up shared by every entry point: one JSON event per line."""
from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", stream=None) -> None:
    """Call once per process; JSON lines so operators can grep and parse them."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),  # one write per line: workers never interleave
        cache_logger_on_first_use=True,
    )


def get(name: str, **bound):
    return structlog.get_logger(name).bind(**bound)

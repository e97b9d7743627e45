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


def stdlib_config(level: str) -> dict:
    """A dictConfig for granian's (and spyne's) stdlib records: JSON lines on stderr, like our events."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": structlog.stdlib.ProcessorFormatter,
            "foreign_pre_chain": [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                                  structlog.processors.TimeStamper(fmt="iso", utc=True)],
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                           structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "_granian": {"level": level.upper(), "handlers": [], "propagate": True},
            "granian.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # spyne logs each fault with a traceback and malformed bodies in full; we log faults ourselves
            "spyne": {"level": "CRITICAL", "handlers": [], "propagate": True},
        },
    }


def get(name: str, **bound):
    return structlog.get_logger(name).bind(**bound)

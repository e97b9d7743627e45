"""Logging of the devauth process: one JSON object per line on stderr.

Why one stdlib-based setup: structlog events of devauth and the plain stdlib
records of gunicorn and spyne must come out in the same JSON shape, and
gunicorn (re)applies the logging configuration in its own processes, so the
configuration is a dictConfig dict that gunicorn is handed as well.
"""
from __future__ import annotations

import logging.config
import os

import structlog


def _add_pid(_logger, _name, event_dict):
    event_dict.setdefault("pid", os.getpid())
    return event_dict


_PRE_CHAIN = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _add_pid,
]


def logging_dict(level: str = "info") -> dict:
    """The dictConfig for stdlib logging (also given to gunicorn as logconfig_dict)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _PRE_CHAIN,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
            # spyne is chatty at INFO (interface building) and DEBUG (every message).
            "spyne": {"level": "WARNING", "handlers": [], "propagate": True},
            # These two log the whole body of a malformed request, which may
            # hold a password; the client gets the parse error as a fault anyway.
            "spyne.protocol.soap.soap11.invalid": {"level": "CRITICAL", "propagate": True},
            "spyne.protocol.xml.invalid": {"level": "CRITICAL", "propagate": True},
        },
    }


def configure(level: str = "info") -> dict:
    """Route structlog through stdlib logging and install the JSON handler."""
    structlog.configure(
        processors=[*_PRE_CHAIN, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    config = logging_dict(level)
    logging.config.dictConfig(config)
    return config

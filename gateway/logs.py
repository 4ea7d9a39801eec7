"""structlog set-up: JSON in production, console in development, secrets always redacted."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from gateway.security.redact import Redactor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(fmt: str, level: str, redactor: Redactor, *, final: bool = False) -> None:
    """Configure structlog from the composition root; the redactor runs last but one.

    ``final`` (a process that will not reconfigure) caches each logger on first use, which
    saves a few microseconds per log call on the ingest path.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=final,
    )

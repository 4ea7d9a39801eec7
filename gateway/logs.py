"""structlog set-up: JSON in production, console in development, secrets always redacted."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

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
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=final,
    )
    _route_standard_logging(level, stamp, redactor, renderer)


def _route_standard_logging(level: str, stamp: Any, redactor: Redactor, renderer: Any) -> None:
    """Libraries log through the standard library: aiohttp's "Error handling request", whose
    traceback quotes a malformed header line, API key and all. Their records go through the
    same redactor and renderer; unconfigured, Python printed them raw to stderr."""
    handler = _LibraryRecords(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for earlier in [h for h in root.handlers if isinstance(h, _LibraryRecords)]:
        root.removeHandler(earlier)
    root.addHandler(handler)
    # libraries' info lines (aiohttp's access log of the dev sandbox, aiokafka's group chatter)
    # were hidden by the unconfigured default, and stay so
    root.setLevel(max(LEVELS.get(level, logging.ERROR), logging.WARNING))


class _LibraryRecords(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs, so that configuring again replaces it."""

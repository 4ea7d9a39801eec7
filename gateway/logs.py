"""structlog set-up: JSON in production, console in development, secrets always redacted."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

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
    handler.addFilter(_UnparsableRequests(LEVELS.get(level, logging.ERROR)))
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


class _UnparsableRequests(logging.Filter):
    """aiohttp logs a request it cannot parse at error level, its traceback quoting the bytes
    it refused: a resume token among them was not masked unless it was a known secret. It is
    the client's mistake, answered 400: an info line without the bytes."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._shown = level <= logging.INFO

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if not isinstance(refused, HttpProcessingError):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = f"http.unparsable_request: {type(refused).__name__}", ()
        record.exc_info = record.exc_text = None
        return self._shown

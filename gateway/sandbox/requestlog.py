"""The log of API requests a sandbox answered, for tests to audit.

Tests use it to prove properties of the gateway's traffic, e.g. that no credential ever had
more than N admitted requests in any window. Credentials appear only as a short hash.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.sandbox.faults import APPLIED_FAULT, CONTROL_PREFIX, FaultKind

DEFAULT_MAX_ENTRIES = 10_000


def credential_id(secret: str) -> str:
    """Short, stable, non-secret name of a credential (first 8 hex digits of its SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclass
class RequestNote:
    """Filled in by handlers while a request runs: who asked, and whether it was admitted.

    ``at`` is the instant the rate limiter judged the request, so the log and the limiter agree.
    """

    at: float | None = None
    credential_id: str | None = None
    counted: bool = False


REQUEST_NOTE = web.RequestKey("sandbox_request_note", RequestNote)


def note_of(request: web.Request) -> RequestNote:
    """The request's note, created on first use (handlers also work without the middleware)."""
    if REQUEST_NOTE not in request:
        request[REQUEST_NOTE] = RequestNote()
    return request[REQUEST_NOTE]


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request. ``status`` is None when the connection was dropped instead;
    ``processed_status`` is what the emulator answered before a fault replaced it;
    ``counted`` says whether the request occupied a rate-limit slot."""

    at: float
    credential_id: str | None
    method: str
    path: str
    status: int | None
    fault: FaultKind | None
    processed_status: int | None
    counted: bool

    def to_json(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


class RequestLog:
    """Most recent requests (bounded) plus totals over the sandbox's lifetime."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=max_entries)
        self.status_counts: Counter[int | None] = Counter()

    def append(self, entry: LoggedRequest) -> None:
        """Record one answered request."""
        self._entries.append(entry)
        self.status_counts[entry.status] += 1

    def entries(self) -> list[LoggedRequest]:
        """Retained entries, oldest first."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self.status_counts.clear()

    def middleware(self, clock: Callable[[], float]) -> Middleware:
        """Middleware logging every request outside ``/_sandbox/``; must be the outermost."""

        @web.middleware
        async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith(CONTROL_PREFIX):
                return await handler(request)
            status: int | None = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.append(_entry(request, status, clock))

        return log_requests


def _entry(request: web.Request, status: int | None, clock: Callable[[], float]) -> LoggedRequest:
    note = note_of(request)
    applied = request.get(APPLIED_FAULT)
    return LoggedRequest(
        at=note.at if note.at is not None else clock(),
        credential_id=note.credential_id,
        method=request.method,
        path=request.rel_url.raw_path,
        status=applied.sent_status if applied is not None else status,
        fault=applied.kind if applied is not None else None,
        processed_status=applied.processed_status if applied is not None else status,
        counted=note.counted,
    )

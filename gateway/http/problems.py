"""RFC 9457 problem documents, and the middleware that turns every failure into one."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import hdrs, web
from pydantic import ValidationError

from gateway.errors import BlobCollected, IngestError, InvalidInput, StoreError, Unavailable

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
KEPT_HEADERS = (hdrs.ALLOW, hdrs.RETRY_AFTER, hdrs.WWW_AUTHENTICATE)
"""What an aiohttp error's own response says that its problem document must say too."""


def problem(status: int, type_: str, title: str, detail: str, **extensions: Any) -> web.Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extensions}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)


def invalid(exc: ValidationError) -> InvalidInput:
    """A pydantic error as a 422 that names each offending field."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidInput(detail, errors=errors)


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except IngestError as exc:
        extensions = exc.extensions
        if isinstance(exc, InvalidInput) and "errors" not in extensions:  # one shape for a 422
            field = str(extensions.get("field", "(body)"))
            extensions = {**extensions, "errors": [{"field": field, "message": exc.detail}]}
        refused = problem(exc.status, exc.problem_type, exc.title, exc.detail, **extensions)
        refused.headers.extend(exc.headers)
        return refused
    except BlobCollected:  # expected and short: the payload's bytes are being collected
        log.warning("http.blob_being_collected", path=request.path)
        busy = Unavailable(
            "the payload's stored copy is being deleted; nothing was accepted, retry"
        )
        refused = problem(503, busy.problem_type, busy.title, busy.detail)
        refused.headers[hdrs.RETRY_AFTER] = "1"
        return refused
    except StoreError as exc:  # nothing was committed: the caller may retry
        log.error("http.store_failed", path=request.path, error=type(exc).__name__)
        unavailable = Unavailable("the store failed; nothing was accepted, retry")
        return problem(503, unavailable.problem_type, unavailable.title, unavailable.detail)
    except web.HTTPRequestEntityTooLarge as exc:
        return problem(413, "/problems/too-large", "Payload too large", exc.text or "too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = problem(exc.status, "about:blank", exc.reason, exc.reason)
        for name in KEPT_HEADERS:  # e.g. a 405's Allow
            if name in exc.headers:
                answer.headers[name] = exc.headers[name]
        return answer
    except Exception:
        log.exception("http.unhandled", path=request.path, method=request.method)
        return problem(500, "/problems/internal", "Internal error", "the request failed; see logs")

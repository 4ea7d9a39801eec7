"""RFC 9457 problem documents, and the route wrapper that turns every failure into one."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import hdrs, web
from pydantic import ValidationError

from gateway.errors import (
    BlobCollected,
    IngestError,
    InvalidInput,
    StoreError,
    Unavailable,
    described,
)

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


MAX_NAMED_FIELDS = 10
MAX_FIELD_CHARS = 80
Refused = Callable[[str, int, dict[str, object]], None]
"""Told of each refusal (4xx) by route template and status, with what the problem names:
its type and the fields at fault (never a value)."""


def answered(routes: list[web.RouteDef], refused: Refused | None = None) -> list[web.RouteDef]:
    """The routes, each answering its failures with a problem document, and a last route
    that answers a path or method no route serves (404, or 405 with ``Allow``); ``refused``
    is told of each 4xx, so that input refused is seen by more than its sender (a webhook
    whose mapping fits none of a source's bodies, say).

    A wrapper around each handler rather than an aiohttp middleware: with a middleware,
    aiohttp wraps every request's handler in its chain, 3 % of the instructions of an
    ingested event."""
    wrapped = [
        web.RouteDef(r.method, r.path, _answering(r.handler, r.path, refused), r.kwargs)
        for r in routes
    ]
    return [*wrapped, web.route("*", "/{unrouted:.*}", _answering(_unrouted, "*", refused))]


def _answering(handler: Any, route: str, refused: Refused | None) -> Any:
    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except Exception as exc:
            answer = problem_for(request, exc)
            gone = isinstance(exc, ConnectionError)  # nobody was refused: the client left
            if refused is not None and 400 <= answer.status < 500 and not gone:
                refused(route, answer.status, _named(exc))
            return answer

    return answer


def _named(exc: Exception) -> dict[str, object]:
    """What a refusal's log line may say of it: the problem's type and the names of the
    fields at fault, so that a sender refused for ever can be told which field, without the
    detail (it may quote the input)."""
    if not isinstance(exc, IngestError):
        return {}
    named: dict[str, object] = {"problem": exc.problem_type}
    errors = exc.extensions.get("errors")
    if isinstance(errors, list):
        fields = [str(e.get("field")) for e in errors if isinstance(e, dict)]
    else:
        fields = [str(exc.extensions["field"])] if "field" in exc.extensions else []
    if fields:  # an unknown member is named as the sender wrote it, at any length: cut short
        named["fields"] = [_short(field) for field in fields[:MAX_NAMED_FIELDS]]
    return named


def _short(field: str) -> str:
    return field if len(field) <= MAX_FIELD_CHARS else field[:MAX_FIELD_CHARS] + "…"


async def _unrouted(request: web.Request) -> web.StreamResponse:
    """The router tries this catch-all last: any other route with the path, whatever its
    methods, was tried first (aiohttp would have answered 405 without it)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def problem_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The problem document that answers ``exc``; an aiohttp redirect or success is raised
    again, for aiohttp to answer."""
    if isinstance(exc, IngestError):
        extensions = exc.extensions
        if isinstance(exc, InvalidInput) and "errors" not in extensions:  # one shape for a 422
            field = str(extensions.get("field", "(body)"))
            extensions = {**extensions, "errors": [{"field": field, "message": exc.detail}]}
        errors = extensions.get("errors")
        if isinstance(errors, list) and len(errors) == 1 and "field" not in extensions:
            extensions = {**extensions, "field": errors[0]["field"]}  # named alike, however found
        refused = problem(exc.status, exc.problem_type, exc.title, exc.detail, **extensions)
        refused.headers.extend(exc.headers)
        return refused
    if isinstance(exc, BlobCollected):  # expected and short: the payload's bytes are going
        log.warning("http.blob_being_collected", path=request.path)
        busy = Unavailable(
            "the payload's stored copy is being deleted; nothing was accepted, retry"
        )
        refused = problem(503, busy.problem_type, busy.title, busy.detail)
        refused.headers[hdrs.RETRY_AFTER] = "1"
        return refused
    if isinstance(exc, StoreError):  # nothing was committed: the caller may retry
        log.error(
            "http.store_failed", path=request.path, error=type(exc).__name__, detail=described(exc)
        )
        unavailable = Unavailable("the store failed; nothing was accepted, retry")
        return problem(503, unavailable.problem_type, unavailable.title, unavailable.detail)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return problem(413, "/problems/too-large", "Payload too large", exc.text or "too large")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        answer = problem(exc.status, "about:blank", exc.reason, exc.reason)
        for name in KEPT_HEADERS:  # e.g. a 405's Allow
            if name in exc.headers:
                answer.headers[name] = exc.headers[name]
        return answer
    if isinstance(exc, ConnectionError):  # the client went away mid-upload: nobody reads this
        log.info("http.client_gone", path=request.path, error=type(exc).__name__)
        return problem(400, "about:blank", "Bad request", "the connection closed mid-request")
    log.error("http.unhandled", path=request.path, method=request.method, exc_info=exc)
    return problem(500, "/problems/internal", "Internal error", "the request failed; see logs")

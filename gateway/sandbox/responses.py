"""Error answers shared by the emulated APIs: ``{"message": ...}`` bodies, also for router errors.

Workato, Alteryx Server and (as far as the seeds show) Pixxel all put a human-readable
``message`` in their error bodies, so one helper and one middleware serve every sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler


def message(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error body: ``{"message": text}``."""
    return web.json_response({"message": text}, status=status, headers=headers)


def not_found() -> web.Response:
    """The answer for anything the caller may not see."""
    return message(404, "Not found")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Router errors (unknown path, wrong method) as ``{"message": ...}``, keeping ``Allow``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = message(exc.status, "Not found" if exc.status == 404 else exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response

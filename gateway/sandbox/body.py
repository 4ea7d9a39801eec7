"""Read a request body without buffering more than a limit.

Upstream APIs answer 413 above a size limit; the emulators must do the same without letting a
huge upload grow memory. The result is cached on the request so a middleware can read the body
early (before an injected delay, while the client is still connected) and the handler reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ReceivedBody:
    """The body as received, or ``too_large`` (then ``data`` is empty and nothing was kept)."""

    data: bytes
    too_large: bool


RECEIVED_BODY = web.RequestKey("sandbox_received_body", ReceivedBody)


async def receive_body(request: web.Request, limit_bytes: int) -> ReceivedBody:
    """Return the request body, reading it at most once and never keeping past the limit."""
    if RECEIVED_BODY in request:
        return request[RECEIVED_BODY]
    body = await _read_limited(request, limit_bytes)
    request[RECEIVED_BODY] = body
    return body


async def _read_limited(request: web.Request, limit_bytes: int) -> ReceivedBody:
    declared = request.content_length
    if declared is not None and declared > limit_bytes:
        return ReceivedBody(b"", too_large=True)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit_bytes:
            return ReceivedBody(b"", too_large=True)
        chunks.append(chunk)
    return ReceivedBody(b"".join(chunks), too_large=False)


async def discard_body(request: web.Request) -> None:
    """Consume and drop the body, so closing the connection does not reset it mid-upload."""
    if RECEIVED_BODY in request:
        return
    async for _ in request.content.iter_chunked(CHUNK_BYTES):
        pass

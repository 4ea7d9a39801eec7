"""``POST /v1/hooks/{source}``: third-party webhooks (DESIGN 5.1).

The order of the checks is the order of their cost and of what they may reveal: an unknown
source is 404 before anything is read; a body over the source's cap is 413 before it is held
in memory; the signature is checked (401) before the body is parsed, so nothing of an
unauthenticated body reaches the mapping; then the mapping (422) and the durable accept.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from aiohttp import web

from gateway.clock import Clock
from gateway.config.sources import SourceSettings
from gateway.errors import BadSignature, NotFound, PayloadTooLarge
from gateway.ingest.service import Ingest
from gateway.ingest.webhooks.mapping import map_event
from gateway.ingest.webhooks.source import WebhookSource

log = structlog.get_logger(__name__)


class Hooks:
    """The webhook endpoint of every configured source; sources are built once, at start."""

    def __init__(self, ingest: Ingest, sources: Sequence[SourceSettings], clock: Clock) -> None:
        self._ingest = ingest
        self._clock = clock
        self._sources = {s.name: WebhookSource.from_settings(s) for s in sources}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/hooks/{source}", self.receive)]

    async def receive(self, request: web.Request) -> web.Response:
        source = self._source(request.match_info["source"])
        body = await read_within(request, source.max_body_bytes)
        self._verify(source, request, body)
        mapped = map_event(source.mapping, body, request.headers)
        event = mapped.event
        result = await self._ingest.accept(source.tenant, source.name, event, mapped.data)
        status = 200 if result.outcome == "duplicate" else 202
        return web.json_response(
            {"outcome": result.outcome, "event_id": event.id, "key": event.key}, status=status
        )

    def _source(self, name: str) -> WebhookSource:
        source = self._sources.get(name)
        if source is None:
            raise NotFound("no webhook source is configured under this name")
        return source

    def _verify(self, source: WebhookSource, request: web.Request, body: bytes) -> None:
        try:
            source.verifier.verify(request.headers, body, self._clock())
        except BadSignature as exc:
            # the reason is a fixed word; nothing the sender presented is logged
            log.warning("webhook.rejected", source=source.name, reason=exc.extensions["reason"])
            raise


async def read_within(request: web.Request, cap_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``cap_bytes``: by its declared
    Content-Length before reading, or while reading a chunked or understated one."""
    declared = request.content_length
    if declared is not None and declared > cap_bytes:
        raise _too_large(cap_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > cap_bytes:
            raise _too_large(cap_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(cap_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"this source accepts bodies of at most {cap_bytes} bytes")

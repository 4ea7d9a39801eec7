"""``POST /v1/hooks/{source}``: third-party webhooks (DESIGN 5.1).

The order of the checks is the order of their cost and of what they may reveal: an unknown
source is 404 before anything is read; a body over the source's cap is 413 as soon as that is
known, and one above the spool threshold goes to disk, never into memory; the signature is
checked (401) before the body is parsed, so nothing of an unauthenticated body reaches the
mapping; then the mapping (422) and the durable accept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from aiohttp import hdrs, web

from gateway.clock import Clock
from gateway.config.sources import SourceSettings
from gateway.errors import BadSignature, NotFound
from gateway.ingest.bodies import Bodies, Data
from gateway.ingest.service import Ingest
from gateway.ingest.spool import Body
from gateway.ingest.webhooks.mapping import Ignored, map_event, map_spooled
from gateway.ingest.webhooks.source import WebhookSource
from gateway.ingest.webhooks.verify import BodyBytes
from gateway.messages import CompletionEvent
from gateway.metrics import Metrics

log = structlog.get_logger(__name__)

DECODED_WHOLE_BYTES = 64 * 1024
"""A body up to this size is decoded whole to be mapped (the fastest way for the usual few
kilobytes). A larger one, though in memory, is walked as a spooled one is, a value at a time and
in a thread: decoded whole, a 1 MiB body of small members took about 50 MB and 60 ms of the
loop, for each request at once."""


class Hooks:
    """The webhook endpoint of every configured source; sources are built once, at start."""

    def __init__(
        self,
        ingest: Ingest,
        bodies: Bodies,
        sources: Sequence[SourceSettings],
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._ingest = ingest
        self._bodies = bodies
        self._metrics = metrics
        self._clock = clock
        self._sources = {s.name: WebhookSource.from_settings(s) for s in sources}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/hooks/{source}", self.receive)]

    async def receive(self, request: web.Request) -> web.Response:
        source = self._source(request.match_info["source"])
        arrived = self._clock()  # a signed timestamp is judged by it: a large body read slowly
        signed_body = source.verifier.reads_body  # was stale by the time it had all come
        if not signed_body:  # a header credential: refused before a byte of the body is read
            self._verify(source, request, b"", arrived)
        with await self._bodies.receive(request, source.max_body_bytes) as body:
            if signed_body:
                await self._verify_body(source, request, body, arrived)
            mapped = await self._map(source, body, request)
            if isinstance(mapped, Ignored):
                return self._ignored(source, mapped)
            event, data = mapped
            result = await self._bodies.accept_data(source.tenant, source.name, event, body, data)
        status = 200 if result.outcome == "duplicate" else 202
        return web.json_response(
            {"outcome": result.outcome, "event_id": event.id, "key": event.key}, status=status
        )

    def _ignored(self, source: WebhookSource, ignored: Ignored) -> web.Response:
        """Acknowledged, so that the sender does not retry it; counted and logged like any
        event, so that a mapping that ignores everything is seen."""
        self._metrics.event_counter(source.tenant, source.name, "ignored").inc()
        log.info("webhook.ignored", source=source.name, key=ignored.key, event_id=ignored.event_id)
        answer = {"outcome": "ignored", "event_id": ignored.event_id, "key": ignored.key}
        return web.json_response(answer, status=200)

    def _source(self, name: str) -> WebhookSource:
        source = self._sources.get(name)
        if source is None:
            raise NotFound("no webhook source is configured under this name")
        return source

    @staticmethod
    async def _map(
        source: WebhookSource, body: Body, request: web.Request
    ) -> tuple[CompletionEvent, Data] | Ignored:
        if body.memory is not None and body.size <= DECODED_WHOLE_BYTES:
            mapped = map_event(source.mapping, body.memory, request.headers)
            if isinstance(mapped, Ignored):
                return mapped
            return mapped.event, mapped.data
        walked = await asyncio.to_thread(map_spooled, source.mapping, body, request.headers)
        if isinstance(walked, Ignored) or body.memory is None:
            return walked
        event, (start, end) = walked
        return event, body.memory[start:end]  # the exact bytes, as the whole decoding gives

    async def _verify_body(
        self, source: WebhookSource, request: web.Request, body: Body, arrived: float
    ) -> None:
        if body.memory is not None:
            self._verify(source, request, body.memory, arrived)
        else:  # hashing a spooled body reads it from disk: keep the loop serving
            await asyncio.to_thread(self._verify, source, request, body.chunks(), arrived)

    def _verify(
        self, source: WebhookSource, request: web.Request, body: BodyBytes, arrived: float
    ) -> None:
        try:
            source.verifier.verify(request.headers, body, arrived)
        except BadSignature as exc:
            # the reason is a fixed word; nothing the sender presented is logged
            reason = exc.extensions["reason"]
            self._metrics.webhooks_rejected.labels(source.name, reason).inc()
            log.warning("webhook.rejected", source=source.name, reason=reason)
            exc.headers = ((hdrs.WWW_AUTHENTICATE, source.verifier.challenge),)
            raise

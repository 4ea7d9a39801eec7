"""The ingest service: every entry point (HTTP today, Kafka and webhooks later) goes through it.

It turns validated messages into store records (sealing the token on the way), lets the store
correlate them in one transaction, and wakes the tenant's delivery lane when a match was made.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import structlog

from gateway.blobs.base import BlobMeta
from gateway.blobs.reservation import reserve
from gateway.clock import Clock
from gateway.config.connections import ConnectionSettings
from gateway.config.settings import IngestSettings
from gateway.errors import InvalidInput
from gateway.messages import CompletionEvent, WaitRegistration
from gateway.metrics import Metrics
from gateway.security.tokens import TokenCipher, token_digest
from gateway.store.base import Store
from gateway.store.records import (
    EXPIRED_ON_ARRIVAL,
    Acceptance,
    Cancellation,
    NewEvent,
    NewWait,
    NewWatch,
    Outcome,
    Registration,
    WaitView,
)

log = structlog.get_logger(__name__)

BLOB_RESERVATION_S = 3600.0


class Ingest:
    """Registers waits and accepts events for a tenant, durably, idempotently."""

    def __init__(
        self,
        store: Store,
        cipher: TokenCipher,
        settings: IngestSettings,
        clock: Clock,
        metrics: Metrics,
        on_match: Callable[[str], None],
        on_finished: Callable[[Outcome], None] | None = None,
        raw_mode_tenants: frozenset[str] = frozenset(),
        connections: Sequence[ConnectionSettings] = (),
    ) -> None:
        self._connections = {c.name: c for c in connections}  # to refuse what cannot be polled
        self._raw_mode_tenants = raw_mode_tenants
        self._store = store
        self._cipher = cipher
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._on_match = on_match
        self._on_finished = on_finished

    async def register(self, tenant: str, reg: WaitRegistration) -> Registration:
        now = self._clock()
        wait = self.prepare_wait(tenant, reg, now)
        result = await self._store.register_wait(wait, now)
        self._registered(wait, result)
        return result

    def prepare_wait(self, tenant: str, reg: WaitRegistration, now: float) -> NewWait:
        """A validated registration as a store record, its token sealed."""
        return NewWait(
            tenant=tenant,
            key=reg.key,
            token_digest=token_digest(reg.resume_token),
            sealed=self._cipher.seal(reg.resume_token, aad=tenant),
            expires_at=self._expires_at(reg, now),
            job_json=reg.job.model_dump_json() if reg.job else None,
            metadata_json=(  # {} stays {}: an action reading a member of null fails
                None if reg.metadata is None else json.dumps(reg.metadata, ensure_ascii=False)
            ),
            watch=self._watch(tenant, reg),
        )

    def _watch(self, tenant: str, reg: WaitRegistration) -> NewWatch | None:
        if reg.watch is None:
            return None
        conn = self._connections.get(reg.watch.connection)
        if conn is None or not conn.serves(tenant):  # another tenant's is not said to exist
            raise InvalidInput("no such connection is configured", field="watch.connection")
        if conn.kind != reg.watch.kind:
            raise InvalidInput(
                f"connection {reg.watch.connection!r} is not of kind {reg.watch.kind!r}",
                field="watch.kind",
            )
        return NewWatch(reg.watch.kind, reg.watch.connection, reg.watch.model_dump_json())

    def _registered(self, wait: NewWait, result: Registration) -> None:
        if result.conflict == EXPIRED_ON_ARRIVAL:  # invalid input (a 422, or a dead letter),
            return  # counted and logged where it is refused, as any other
        self._metrics.waits.labels(wait.tenant, result.outcome).inc()
        log.info(
            "wait.registered",
            tenant=wait.tenant,
            key=wait.key,
            outcome=result.outcome,
            matched=result.matched,
            conflict=result.conflict,
        )
        if result.matched:
            self._on_match(wait.tenant)

    def _expires_at(self, reg: WaitRegistration, now: float) -> float:
        """Workato drops a suspended job after 60 days: the deadline never goes past that. One
        in the past is the store's to refuse: the same registration sent again after its
        expiry (a Kafka record read again after a crash, say) is a repeat, not an error."""
        cap = now + self._settings.max_wait_s
        if reg.expires_at is not None:
            return min(reg.expires_at.timestamp(), cap)
        if reg.timeout_s is not None:
            return min(now + reg.timeout_s, cap)
        return cap

    async def accept(
        self,
        tenant: str,
        source: str,
        event: CompletionEvent,
        data: bytes,
        blob: BlobMeta | None = None,
        wait_id: int | None = None,
    ) -> Acceptance:
        """Persist an event whose ``data`` member is given as its exact JSON bytes, or as a
        stored ``blob`` (then ``data`` is empty); with a ``wait_id``, an answer for that wait
        only (see ``NewEvent.wait_id``)."""
        record = self.prepare_event(tenant, source, event, data, blob, wait_id)
        result = await self._store.record_event(record, self._clock())
        self._accepted(record, result)
        return result

    def prepare_event(
        self,
        tenant: str,
        source: str,
        event: CompletionEvent,
        data: bytes,
        blob: BlobMeta | None = None,
        wait_id: int | None = None,
    ) -> NewEvent:
        """A validated event as a store record; InvalidInput if the tenant cannot take it."""
        if blob is None:
            self.require_object(tenant, data[:1])
        return NewEvent(
            tenant=tenant,
            source=source,
            event_id=event.id,
            key=event.key,
            status=event.status,
            data=data,
            occurred_at=event.occurred_at.timestamp() if event.occurred_at else None,
            buffer_ttl_s=self._settings.event_buffer_ttl_s,
            blob=blob,
            wait_id=wait_id,
        )

    async def reserve_blob(self, blob: BlobMeta) -> None:
        """Record a blob before its bytes are stored: bytes whose event never commits (a crash,
        a refused event) are then still collected once the reservation lapses."""
        await reserve(self._store, blob, self._clock() + BLOB_RESERVATION_S, self._clock)

    def require_object(self, tenant: str, leading: bytes) -> None:
        """A raw-mode tenant's data becomes the resume ``data`` itself: it must be an object
        (``leading`` is its first byte)."""
        if tenant in self._raw_mode_tenants and leading != b"{":
            raise InvalidInput("data must be a JSON object for a raw-mode tenant", field="data")

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Sequence[int] | None = None
    ) -> tuple[list[Registration], list[Acceptance]]:
        """Prepared registrations and events in one transaction (a consumer's fetched batch),
        interleaved as ``waits_at`` says (see ``Store.ingest_batch``)."""
        registered, accepted = await self._store.ingest_batch(
            waits, events, self._clock(), waits_at
        )
        for wait, registration in zip(waits, registered, strict=True):
            self._registered(wait, registration)
        self._accepted_all(events, accepted)
        return registered, accepted

    def _accepted_all(self, events: list[NewEvent], results: list[Acceptance]) -> None:
        """``_accepted`` for a batch: each count and wake-up once, not once per event."""
        if log.is_enabled_for(logging.INFO):
            for event, result in zip(events, results, strict=True):
                self._log_accepted(event, result)
        counts = Counter(
            (e.tenant, e.source, r.outcome) for e, r in zip(events, results, strict=True)
        )
        for (tenant, source, outcome), n in counts.items():
            self._metrics.event_counter(tenant, source, outcome).inc(n)
        matched = {tenant for (tenant, _, outcome) in counts if outcome == "matched"}
        for tenant in matched:
            self._on_match(tenant)

    def _accepted(self, event: NewEvent, result: Acceptance) -> None:
        self._metrics.event_counter(event.tenant, event.source, result.outcome).inc()
        if log.is_enabled_for(logging.INFO):  # building the call costs more than the check
            self._log_accepted(event, result)
        if result.outcome == "matched":
            self._on_match(event.tenant)

    @staticmethod
    def _log_accepted(event: NewEvent, result: Acceptance) -> None:
        log.info(
            "event.accepted",
            tenant=event.tenant,
            source=event.source,
            key=event.key,
            event_id=event.event_id,
            outcome=result.outcome,
        )

    async def wait(self, tenant: str, key: str) -> WaitView | None:
        return await self._store.get_wait(tenant, key, self._clock())

    async def cancel(self, tenant: str, key: str) -> Cancellation:
        result = await self._store.cancel_wait(tenant, key, self._clock())
        log.info("wait.cancel", tenant=tenant, key=key, outcome=result.outcome)
        if result.finished is not None and self._on_finished is not None:
            self._on_finished(result.finished)  # a final state: counted and published
        return result

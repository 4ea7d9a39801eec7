"""The dead-letter topic (``resume.dlq``): a refused record is republished with its original
key, value and headers, plus headers saying why and where it was read.

Its offset is committed only after the dead-letter send succeeded, so failed sends are retried
until they succeed (or the consumer stops, and the record is read again on the next start):
nothing is dropped silently. A crash between the two may dead-letter a record twice; the
``dlq.original.*`` headers identify it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import structlog
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from gateway.ingest.kafka.records import Poison, Record
from gateway.metrics import Metrics

log = structlog.get_logger(__name__)

KIND = "dlq.error.kind"
DETAIL = "dlq.error.detail"
TOPIC = "dlq.original.topic"
PARTITION = "dlq.original.partition"
OFFSET = "dlq.original.offset"
TIMESTAMP = "dlq.original.timestamp_ms"
GROUP = "dlq.consumer.group"
VALUE_OMITTED = "dlq.value_omitted_bytes"
KEY_OMITTED = "dlq.key_omitted_bytes"
HEADERS_OMITTED = "dlq.headers_omitted"
"""How many of the record's own headers were left out: with its value gone, the record was
still too large for the dead-letter topic."""
VALUE_NULL = "dlq.value_null"
"""Set when the original value was null: with no key either, it goes as an empty value."""

Headers = list[tuple[str, bytes]]
FAILING_AFTER = 3
"""Refusals in a row of a batch's dead letters after which the consumer says it is failing."""


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` used here."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Awaitable[Any]]: ...


def dead_letter_headers(record: Record, poison: Poison, group: str) -> Headers:
    """The record's own headers first, then the error and its origin (all UTF-8 text)."""
    added = {
        KIND: poison.kind,
        DETAIL: poison.detail,
        TOPIC: record.topic,
        PARTITION: str(record.partition),
        OFFSET: str(record.offset),
        TIMESTAMP: str(record.timestamp),
        GROUP: group,
    }
    own = [(_printable(name), value) for name, value in record.headers]
    return [*own, *((name, text.encode()) for name, text in added.items())]


def _printable(name: str) -> str:
    """A header name that was not UTF-8 (held as lone surrogates, see ``rawbatch``) with its
    bytes escaped (``\\xff``): a producer sends names as UTF-8."""
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class DeadLetters:
    """Sends poison records to the dead-letter topic, retrying until every one is stored."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        group: str,
        retry_backoff_s: float,
        metrics: Metrics,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._group = group
        self._backoff_s = retry_backoff_s
        self._metrics = metrics
        self._failing = 0

    @property
    def failing(self) -> bool:
        """True while some batch's dead letters have been refused ``FAILING_AFTER`` times in a
        row: its commit, and every later one, waits for them (a missing topic, a broker that
        refuses them). One refusal, a leader moving say, does not make the gateway unready."""
        return self._failing > 0

    async def send_all(self, poison: list[tuple[Record, Poison]]) -> None:
        """Return once the broker acknowledged every one of them."""
        pending = poison
        refusals = 0
        try:
            while pending:
                results = await asyncio.gather(*(self._send(r, p) for r, p in pending))
                pending = [item for item, sent in zip(pending, results, strict=True) if not sent]
                if pending:
                    refusals += 1
                    if refusals == FAILING_AFTER:
                        self._count_failing(+1)
                    log.warning("kafka.dlq_retry", records=len(pending), topic=self._topic)
                    await asyncio.sleep(self._backoff_s)
        finally:
            if refusals >= FAILING_AFTER:
                self._count_failing(-1)

    def _count_failing(self, change: int) -> None:
        self._failing += change
        self._metrics.kafka_dlq_failing.set(1 if self._failing else 0)

    async def _send(self, record: Record, poison: Poison) -> bool:
        headers = dead_letter_headers(record, poison, self._group)
        if record.value is None:
            headers.append((VALUE_NULL, b"true"))
        try:
            await self._produce(record.value, record.key, headers)
        except MessageSizeTooLargeError:
            size = len(record.value or b"")
            headers.append((VALUE_OMITTED, str(size).encode()))
            log.error("kafka.dlq_value_omitted", bytes=size, **_origin(record))
            try:
                await self._produce(None, record.key, headers)
            except MessageSizeTooLargeError:  # its key or headers alone: it was retried for
                # ever, and no offset after it could be committed
                return await self._send_bare(record, poison, headers)
            except KafkaError as exc:
                return self._failed(record, exc)
        except KafkaError as exc:
            return self._failed(record, exc)
        self._dead_lettered(record, poison)
        return True

    async def _send_bare(self, record: Record, poison: Poison, headers: Headers) -> bool:
        """The dead letter with only what says why and where: no value, key or own headers."""
        own = len(record.headers)
        key_size = str(len(record.key or b"")).encode()
        bare = [*headers[own:], (KEY_OMITTED, key_size), (HEADERS_OMITTED, str(own).encode())]
        log.error("kafka.dlq_key_and_headers_omitted", headers=own, **_origin(record))
        try:
            await self._produce(None, None, bare)
        except KafkaError as exc:
            return self._failed(record, exc)
        self._dead_lettered(record, poison)
        return True

    async def _produce(self, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        if value is None and key is None:  # aiokafka refuses to send neither (an assertion,
            value = b""  # which ended the batch and the gateway, on every restart)
        delivered = await self._producer.send(self._topic, value=value, key=key, headers=headers)
        await delivered

    def _failed(self, record: Record, exc: KafkaError) -> bool:
        log.warning("kafka.dlq_send_failed", error=type(exc).__name__, **_origin(record))
        return False

    def _dead_lettered(self, record: Record, poison: Poison) -> None:
        self._metrics.kafka_records.labels(record.topic, "dead_lettered").inc()
        log.warning(
            "kafka.dead_lettered", kind=poison.kind, detail=poison.detail, **_origin(record)
        )


def _origin(record: Record) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}

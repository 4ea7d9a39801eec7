"""Reading past a record aiokafka refuses to decode (a header name that is not UTF-8).

aiokafka's ``getmany`` raises on such a record, and again at every later call: a batch is
decoded from its first record, so no seek inside it helps (see ``rawbatch``). What that
``getmany`` had taken from other partitions goes with its exception, although their positions
moved on. So the consumer notes every partition's position before each ``getmany`` and, after
such a failure, puts them all back; then it reads each partition a record at a time, handing
the records on as usual, up to the refused one. That one's batch is fetched and read by
``rawbatch``, its records are handed on (the decoder dead-letters the refused one), and the
partition goes on after the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka.errors import CorruptRecordException, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition

from gateway.config.kafka import KafkaSettings
from gateway.ingest.kafka.rawbatch import fetch_batch
from gateway.ingest.kafka.records import Record
from gateway.kafka_connection import ms

log = structlog.get_logger(__name__)

Positions = dict[TopicPartition, int]


def is_refusal(exc: BaseException) -> bool:
    """Whether ``getmany`` raised for a header name that is not UTF-8: aiokafka's compiled
    decoder raises the UnicodeDecodeError, its pure-Python one wraps it."""
    return isinstance(exc, UnicodeDecodeError) or (
        isinstance(exc, CorruptRecordException) and isinstance(exc.__cause__, UnicodeDecodeError)
    )


async def positions(consumer: Any) -> Positions:
    """Where each assigned partition's next record is (no request: aiokafka keeps them)."""
    found: Positions = {}
    for tp in consumer.assignment():
        with contextlib.suppress(IllegalStateError):  # unassigned meanwhile
            found[tp] = await consumer.position(tp)
    return found


class ReadPast:
    """Reads past the refused record, handing every other record on with ``hand_on``."""

    def __init__(
        self,
        consumer: Any,
        settings: KafkaSettings,
        hand_on: Callable[[list[Record]], Awaitable[None]],
    ) -> None:
        self._consumer = consumer
        self._settings = settings
        self._hand_on = hand_on

    async def __call__(self, before: Positions) -> None:
        """After a ``getmany`` that raised a refusal; ``before`` is what ``positions`` said
        just before it."""
        consumer = self._consumer
        handed = 0
        try:
            for tp, offset in before.items():
                consumer.seek(tp, offset)
            for tp in sorted(before):
                highwater = consumer.highwater(tp)
                if highwater is not None and before[tp] >= highwater:
                    continue  # read to its end: the refused record is elsewhere
                read = await self._read_up_to_refused(tp)
                if read is None:
                    return
                handed += read
        except IllegalStateError:  # a rebalance took the partition: its new owner reads it
            return
        except KafkaError as exc:
            if not exc.retriable:  # a corrupt batch, an unknown codec: as in getmany
                raise
            log.warning("kafka.read_past_failed", error=type(exc).__name__)
            consumer._client.force_metadata_update()  # a leader moving, say
        if not handed:  # nothing found, nothing read (a fetch still on its way): back off
            await asyncio.sleep(self._settings.retry_backoff_s)

    async def _read_up_to_refused(self, tp: TopicPartition) -> int | None:
        """None once ``tp``'s refused record is read past; else how many of its records
        were handed on (up to a batch: a partition with more goes on in the next round)."""
        consumer, s = self._consumer, self._settings
        records: list[Record] = []
        try:
            while len(records) < s.max_batch_records:
                fetched = await consumer.getmany(tp, timeout_ms=ms(s.fetch_wait_s), max_records=1)
                if not fetched:
                    break
                records.extend(fetched[tp])
            return len(records)
        except (UnicodeDecodeError, CorruptRecordException) as exc:
            if not is_refusal(exc):
                raise
            offset = await consumer.position(tp)
        finally:
            if records:
                await self._hand_on(records)
        max_bytes, wait_ms = s.max_partition_fetch_bytes, ms(s.fetch_wait_s)
        batch = await fetch_batch(consumer, tp, offset, max_bytes, wait_ms)
        if batch is None:
            return len(records)
        refused = batch.records[0].offset  # the records before it were handed out
        where = {"topic": tp.topic, "partition": tp.partition, "offset": refused}
        log.warning("kafka.undecodable_record", read_past=batch.next_offset, **where)
        await self._hand_on(list(batch.records))
        consumer.seek(tp, batch.next_offset)
        return None

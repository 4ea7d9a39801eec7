"""The Kafka source: consumes ``resume.events`` and ``resume.waits`` into the store.

At least once in, exactly once in effect (DESIGN 5.2, invariants 1 and 2): every fetched batch
is persisted in one store transaction, its poison records are dead-lettered, and only then are
its offsets committed. A redelivered record is recognised by the store as a duplicate
(``event_id`` per tenant and source) or a repeat (same token). Batches are pipelined — the
next one is fetched and decoded while the previous one commits — but offsets are committed in
fetch order, so a crash never skips past a batch that was not persisted. A batch whose
successor is already persisted when its turn comes hands its offsets on instead of committing
them: one round trip to the broker then commits both, so the commits, one at a time, never
become what the intake waits for.

Shutdown order (``stop``): stop fetching, finish the batches in hand (bounded), commit, leave
the group, close the dead-letter producer. A rebalance drains the same way before giving up
partitions, so their new owner starts exactly where this one stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    KafkaError,
)
from aiokafka.structs import TopicPartition

from gateway.clock import Budget, Clock
from gateway.config.kafka import KafkaSettings
from gateway.errors import BrokerError
from gateway.ingest.kafka.decode import Decoder, Preparer
from gateway.ingest.kafka.dlq import DeadLetters
from gateway.ingest.kafka.flow import Backpressure, Flow
from gateway.ingest.kafka.records import Batch, Poison, PoisonKind, Record
from gateway.ingest.kafka.refused import ReadPast, is_refusal, positions
from gateway.kafka_connection import close_consumer, connection_options, ms
from gateway.metrics import Metrics
from gateway.store.records import (
    CONFLICTS,
    EXPIRED_ON_ARRIVAL,
    Acceptance,
    NewEvent,
    NewWait,
    Registration,
)
from gateway.wakeable import sleep_or_wake

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 2.0
FETCH_HEADSTART_S = 0.001
"""How long fetched batches wait before they are decoded. aiokafka sends the next fetch request
from a task of its own, a few turns of the event loop after ``getmany`` drained its buffer;
decoding and writing the batches first held the loop for a tenth of a second, and only then did
the request leave, so the broker's round trip was added to every cycle instead of overlapping
it. The loop's quick callbacks run well within this pause."""
CLOSE_MIN_S = 0.1
"""What each Kafka client gets to close however little of the stop's time is left."""


class BatchIngest(Preparer, Protocol):
    """What the consumer needs of ``Ingest``: prepare records, persist a batch at once."""

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Sequence[int] | None = None
    ) -> tuple[list[Registration], list[Acceptance]]: ...


@dataclass(slots=True)
class InFlight:
    """A fetched batch until its offsets are committed or handed on to its successor."""

    started: float  # time.monotonic()
    task: asyncio.Task[None] = field(init=False)
    persisted: Batch | None = None
    """Set once stored and dead-lettered: from then on its offsets may be committed."""


class KafkaIngest:
    """The consumer service: ``start()``, ``stop()``; ``failed`` is set if it dies."""

    def __init__(
        self,
        settings: KafkaSettings,
        ingest: BatchIngest,
        tenants: frozenset[str],
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._ingest = ingest
        self._clock = clock
        self._metrics = metrics
        self._decoder = Decoder(
            ingest,
            tenants,
            settings.events_topic,
            settings.waits_topic,
            settings.max_message_bytes,
        )
        self._flow = Backpressure(settings.max_batches_in_flight, settings.pause_after_s)
        self._consumer: Any = None  # AIOKafkaConsumer (untyped library)
        self._producer: Any = None
        self._dead_letters: DeadLetters | None = None
        self._intake: asyncio.Task[None] | None = None
        self._in_flight: list[InFlight] = []
        self._changed = asyncio.Event()
        self._numbers = itertools.count(1)
        self.failed = asyncio.Event()
        """Set when the intake or a batch died; the gateway then stops rather than limp on."""
        self.failure: BaseException | None = None

    @property
    def paused(self) -> bool:
        """True while the partitions are paused because the store is behind."""
        return self._flow.paused

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the dead-letter producer and the consumer, then start fetching."""
        s = self._settings
        try:
            self._producer = AIOKafkaProducer(
                **connection_options(s, "dlq"),
                acks="all",
                max_request_size=s.dlq_max_request_bytes,
            )
            await self._producer.start()
            self._consumer = self._new_consumer()
            await self._consumer.start()
        except KafkaError as exc:
            await self._close_clients()
            raise BrokerError(f"cannot connect to Kafka {s.bootstrap_servers}: {exc}") from exc
        self._dead_letters = DeadLetters(
            self._producer, s.dlq_topic, s.group_id, s.retry_backoff_s, self._metrics
        )
        self._intake = self._spawn(self._fetch_forever(), "kafka-intake")
        log.info("kafka.started", topics=s.topics, group=s.group_id)

    def _new_consumer(self) -> Any:
        s = self._settings
        consumer = AIOKafkaConsumer(
            **connection_options(s, "consumer"),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=ms(s.session_timeout_s),
            heartbeat_interval_ms=ms(s.heartbeat_interval_s),
            max_poll_interval_ms=ms(s.max_poll_interval_s),
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
        )
        consumer.subscribe(s.topics, listener=_Rebalance(self._drain_for_rebalance))
        return consumer

    async def stop(self, timeout_s: float) -> None:
        """Stop fetching, finish and commit the batches in hand, leave the group. Idempotent."""
        if self._intake is not None:
            intake, self._intake = self._intake, None
            intake.cancel()
            await asyncio.gather(intake, return_exceptions=True)
        budget = Budget(timeout_s, least=CLOSE_MIN_S)
        await self._drain(timeout_s, cancel_after=True)
        await self._close_clients(budget)
        log.info("kafka.stopped")

    async def _close_clients(self, budget: Budget | None = None) -> None:
        """Close the consumer (it commits nothing, auto-commit being off, and leaves the
        group), then the producer, each within ``budget`` if given: a dead letter queued for a
        broker that is gone waited aiokafka's 40 s. Nothing is lost by cutting either short:
        what was not committed is read again."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        closes = [("consumer", consumer, close_consumer), ("producer", producer, _stop_producer)]
        for name, client, close in closes:
            if client is None:
                continue
            left = None if budget is None else budget.left()
            try:
                async with asyncio.timeout(left):
                    await close(client)
            except TimeoutError:
                log.warning("kafka.close_timed_out", client=name, seconds=round(left or 0, 3))
            except Exception:  # the other client still closes
                log.exception("kafka.close_failed", client=name)

    async def check(self) -> str:
        """Readiness: ``up``, ``down`` (broker unreachable, or the consumer died),
        ``dlq_failing`` (consumption waits for dead letters the broker does not take) or
        ``topics_missing: <the topics>``."""
        consumer = self._consumer
        if consumer is None or self.failed.is_set():
            return "down"
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                topics = await consumer.topics()
        except (KafkaError, TimeoutError):
            return "down"
        missing = [topic for topic in self._settings.topics if topic not in topics]
        if missing:  # which ones: a typo in a topic's name is the usual cause
            return f"topics_missing: {', '.join(missing)}"
        if self._dead_letters is not None and self._dead_letters.failing:
            return "dlq_failing"
        return "up"

    # -- supervision -----------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._supervise)
        return task

    def _supervise(self, task: asyncio.Task[None]) -> None:
        self._in_flight = [b for b in self._in_flight if b.task is not task]
        self._changed.set()
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, _Abandoned):  # the batch before it failed, and said so
            return
        log.critical("kafka.task_died", task=task.get_name(), exc_info=exc)
        if self.failure is None:
            self.failure = exc
        self.failed.set()

    # -- intake ----------------------------------------------------------------------------

    async def _fetch_forever(self) -> None:
        while not self.failed.is_set():  # after a failure the gateway stops: fetch no more
            self._changed.clear()
            flow = self._flow.decide(len(self._in_flight), self._oldest_age_s())
            self._steer(flow)
            if flow is Flow.HOLD:
                await self._wait_changed(self._flow.hold_for_s(self._oldest_age_s()))
                continue
            if flow is Flow.PAUSE:  # keep polling, or the group counts us as dead
                await self._wait_changed(self._settings.fetch_wait_s)
            wait_ms = 0 if flow is Flow.PAUSE else ms(self._settings.fetch_wait_s)
            size = self._settings.max_batch_records
            room = max(1, self._settings.max_batches_in_flight - len(self._in_flight))
            before = await positions(self._consumer)
            try:
                fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=room * size)
            except (UnicodeDecodeError, CorruptRecordException) as exc:
                if not is_refusal(exc):
                    raise
                # a header name aiokafka cannot decode: read past it, or every getmany fails
                await ReadPast(self._consumer, self._settings, self._start_batches)(before)
                continue
            records = [record for records in fetched.values() for record in records]
            if records:
                await self._start_batches(records)

    async def _start_batches(self, records: list[Record]) -> None:
        """As many batches as there is room for, in flight at once (a rebalance or a stop
        waits for them), started in fetch order once aiokafka's fetcher has had the loop."""
        go = asyncio.Event()
        size = self._settings.max_batch_records
        for at in range(0, len(records), size):
            self._submit(records[at : at + size], go)
        try:
            await asyncio.sleep(FETCH_HEADSTART_S)
        finally:  # even when stopped: the batches in flight finish and commit
            go.set()  # wakes them in the order they waited, which is the fetch order

    def _steer(self, flow: Flow) -> None:
        """Pause every assigned partition while the flow says so; resume them after."""
        consumer = self._consumer
        paused = consumer.paused()
        if flow is Flow.PAUSE:
            fresh = consumer.assignment() - paused  # includes partitions assigned meanwhile
            if fresh:
                consumer.pause(*fresh)
            if not paused:
                log.warning(
                    "kafka.paused",
                    batches_in_flight=len(self._in_flight),
                    oldest_batch_s=round(self._oldest_age_s(), 3),
                )
        elif paused:
            consumer.resume(*paused)
            log.info("kafka.resumed", batches_in_flight=len(self._in_flight))
        # from the decision, not the transition: a rebalance while paused hands over partitions
        # unpaused, and the gauge stayed at 1 with nothing paused
        self._metrics.kafka_paused.set(1 if flow is Flow.PAUSE else 0)

    async def _wait_changed(self, timeout_s: float) -> None:
        await sleep_or_wake(self._changed, timeout_s)

    def _oldest_age_s(self) -> float:
        return time.monotonic() - self._in_flight[0].started if self._in_flight else 0.0

    def _submit(self, records: list[Record], go: asyncio.Event) -> None:
        previous = self._in_flight[-1].task if self._in_flight else None
        entry = InFlight(time.monotonic())
        name = f"kafka-batch-{next(self._numbers)}"
        entry.task = self._spawn(self._handle(records, entry, previous, go), name)
        self._in_flight.append(entry)

    # -- one batch -------------------------------------------------------------------------

    async def _handle(
        self,
        records: list[Record],
        entry: InFlight,
        previous: asyncio.Task[None] | None,
        go: asyncio.Event,
    ) -> None:
        await go.wait()  # see FETCH_HEADSTART_S
        batch = self._decoder.batch(records, self._clock())
        await self._persist(batch)
        assert self._dead_letters is not None
        try:
            await self._dead_letters.send_all(batch.poison)
            entry.persisted = batch
            if previous is not None:
                await asyncio.wait({previous})
                if previous.cancelled() or previous.exception() is not None:
                    raise _Abandoned  # its offsets come first: neither commits, both are read again
            if self.failed.is_set():  # a batch failed before this one was fetched: it must not
                raise _Abandoned  # commit past that batch's records while the gateway stops
            if not self._hand_on(entry, batch):
                await self._commit(batch)
        except KafkaError as exc:
            raise BrokerError(f"Kafka refused: {exc}") from exc
        self._metrics.kafka_batch.observe(time.monotonic() - entry.started)

    def _hand_on(self, entry: InFlight, batch: Batch) -> bool:
        """Leave this batch's offsets to its successor if that one is persisted already: it
        waits for this one, then commits both in one request."""
        at = self._in_flight.index(entry)
        successor = self._in_flight[at + 1].persisted if at + 1 < len(self._in_flight) else None
        if successor is None:
            return False
        for tp, offset in batch.offsets.items():
            successor.offsets[tp] = max(offset, successor.offsets.get(tp, 0))
        return True

    async def _persist(self, batch: Batch) -> None:
        if not batch.waits and not batch.events:
            return
        registered, _ = await self._ingest.ingest_batch(
            [wait for _, wait in batch.waits], [event for _, event in batch.events], batch.waits_at
        )
        refused = 0
        for (record, _), result in zip(batch.waits, registered, strict=True):
            if result.outcome == "conflict":
                refused += 1
                reason = result.conflict or "conflict"
                kind: PoisonKind = "invalid" if reason == EXPIRED_ON_ARRIVAL else "conflict"
                batch.poison.append((record, Poison(kind, CONFLICTS.get(reason, reason))))
        self._count(batch, len(batch.waits) - refused)

    def _count(self, batch: Batch, waits: int) -> None:
        """The records stored; a refused registration is counted as dead-lettered instead."""
        s, counter = self._settings, self._metrics.kafka_records
        for topic, n in ((s.waits_topic, waits), (s.events_topic, len(batch.events))):
            if n:
                counter.labels(topic, "ingested").inc(n)

    async def _commit(self, batch: Batch) -> None:
        offsets = {TopicPartition(t, p): offset for (t, p), offset in batch.offsets.items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member meanwhile: it reads these records again,
            # and the store recognises them as duplicates.
            log.warning("kafka.commit_skipped", reason=str(exc), records=batch.size)

    # -- draining --------------------------------------------------------------------------

    async def _drain(self, timeout_s: float, cancel_after: bool = False) -> None:
        """Wait for the batches in flight to commit; optionally cancel what is left after."""
        tasks = [b.task for b in self._in_flight]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("kafka.drain_timeout", batches=len(pending))
        if cancel_after:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _drain_for_rebalance(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("kafka.partitions_revoked", partitions=len(revoked))
            await self._drain(self._settings.session_timeout_s)


class _Abandoned(Exception):
    """A batch fetched after one that failed or was cancelled, even once that one has left
    the batches in flight: its offsets must not be committed either (they are past the failed
    batch's), nor any after it."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
    """Commits the batches in flight before partitions are handed to another member."""

    def __init__(self, on_revoked: Callable[[set[TopicPartition]], Any]) -> None:
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka.partitions_assigned", partitions=sorted(map(str, assigned)))


async def _stop_producer(producer: Any) -> None:
    await producer.stop()

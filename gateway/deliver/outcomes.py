"""Publishes every finished delivery to ``resume.outcomes`` (DESIGN 5.2), keyed by its
correlation key, as the published ``outcome`` JSON document — never the resume token.

Lanes hand outcomes over with ``offer``, which never waits: a bounded queue sits between them
and the broker, so a slow or absent broker cannot hold up a delivery. A failed publish is
logged and retried after ``retry_backoff_s``, before newer outcomes (so order is not kept across
a retry: each message carries ``finished_at``); when the queue is full the oldest outcome is
dropped and counted (``gateway_outcomes_published_total{result="dropped"}``); so are those
left queued when ``stop`` runs out of time, and those sent but not acknowledged by then are
counted ``unconfirmed``.
"""

from __future__ import annotations

import asyncio
import collections
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.clock import Budget
from gateway.config.kafka import KafkaSettings
from gateway.errors import BrokerError
from gateway.kafka_connection import connection_options
from gateway.messages import OutcomeMessage
from gateway.metrics import Metrics
from gateway.store.records import Outcome
from gateway.wakeable import sleep_or_wake

log = structlog.get_logger(__name__)
STOP_MIN_S = 0.1
"""What the producer gets to flush and close however little of the stop's time is left."""

CHUNK = 500  # outcomes sent before their acknowledgements are awaited together


def outcome_message(outcome: Outcome) -> bytes:
    """The ``outcome`` document (``schemas/outcome.schema.json``) for one finished delivery."""
    message = OutcomeMessage(
        tenant=outcome.tenant,
        key=outcome.key,
        delivery_id=outcome.delivery_id,
        event_id=outcome.event_id,
        source=outcome.source,
        state=outcome.state,
        reason=outcome.reason,
        attempts=outcome.attempts,
        last_status=outcome.last_status,
        received_at=datetime.fromtimestamp(outcome.received_at, UTC),
        finished_at=datetime.fromtimestamp(outcome.finished_at, UTC),
        duration_ms=round((outcome.finished_at - outcome.received_at) * 1000, 3),
    )
    return message.model_dump_json().encode()


class OutcomePublisher:
    """``offer`` from the lanes; one named, supervised task publishes in the background."""

    def __init__(self, settings: KafkaSettings, metrics: Metrics, producer: Any = None) -> None:
        """``producer``: an ``AIOKafkaProducer`` look-alike (tests); built from ``settings``
        when not given."""
        if settings.outcomes_topic is None:
            raise ValueError("the outcomes publisher needs kafka.outcomes_topic")
        self._settings = settings
        self._topic = settings.outcomes_topic
        self._metrics = metrics
        self._queue: collections.deque[Outcome] = collections.deque()
        self._sending: set[Outcome] = set()
        """Taken off the queue and handed to the producer, not yet acknowledged."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._producer: Any = producer  # AIOKafkaProducer (untyped library)
        # a broker falling behind shows before the queue overflows and outcomes are dropped
        metrics.outcomes_queued.set_function(lambda: len(self._queue) + len(self._sending))
        self._task: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    def offer(self, outcome: Outcome) -> None:
        """Queue an outcome for publishing; never blocks (the ``on_outcome`` hook)."""
        self._queue.append(outcome)
        self._trim()
        self._idle.clear()
        self._wake.set()

    def _trim(self) -> None:
        dropped = 0
        while len(self._queue) > self._settings.outcomes_max_queued:
            self._queue.popleft()
            dropped += 1
        if dropped:
            self._metrics.outcomes_published.labels("dropped").inc(dropped)
            log.warning("outcomes.dropped", count=dropped, queued=len(self._queue))

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**connection_options(self._settings, "outcomes"))
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise BrokerError(f"cannot connect the outcomes publisher: {exc}") from exc
        self._task = asyncio.create_task(self._publish_forever(), name="outcomes-publisher")
        self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        log.critical("outcomes.task_died", exc_info=self.failure)
        self.failed.set()

    async def stop(self, timeout_s: float) -> None:
        """Publish what is queued (bounded by ``timeout_s``), then close. Idempotent."""
        budget = Budget(timeout_s, least=STOP_MIN_S)
        if self._task is not None:
            await sleep_or_wake(self._idle, timeout_s)
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # never handed over: dropped; handed over unacknowledged, the producer's stop may
        # still flush them: unconfirmed (before, the chunk cut short left no trace)
        dropped, unconfirmed = len(self._queue), len(self._sending)
        if dropped or unconfirmed:
            self._metrics.outcomes_published.labels("dropped").inc(dropped)
            self._metrics.outcomes_published.labels("unconfirmed").inc(unconfirmed)
            log.warning("outcomes.unpublished", dropped=dropped, unconfirmed=unconfirmed)
            self._queue.clear()  # written off: no longer shown as queued
            self._sending.clear()
        if self._producer is not None:  # its flush waits for a broker that may be gone (40 s)
            producer, self._producer = self._producer, None
            left = budget.left()
            try:
                async with asyncio.timeout(left):
                    await producer.stop()
            except TimeoutError:
                log.warning("outcomes.close_timed_out", seconds=round(left, 3))

    async def _publish_forever(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            chunk = [self._queue.popleft() for _ in range(min(CHUNK, len(self._queue)))]
            self._sending.update(chunk)
            failed, errors = await self._publish(chunk)
            self._sending.clear()
            self._metrics.outcomes_published.labels("sent").inc(len(chunk) - len(failed))
            if failed:
                self._queue.extendleft(reversed(failed))
                self._trim()
                log.warning(
                    "outcomes.publish_failed",
                    count=len(failed),
                    errors=sorted(errors),
                    retry_in_s=self._settings.retry_backoff_s,
                )
                await asyncio.sleep(self._settings.retry_backoff_s)

    async def _publish(self, chunk: list[Outcome]) -> tuple[list[Outcome], set[str]]:
        """Send a chunk; the outcomes the broker did not acknowledge (in order), and why."""
        results = await asyncio.gather(*(self._send(o) for o in chunk), return_exceptions=True)
        failed = [(o, r) for o, r in zip(chunk, results, strict=True) if isinstance(r, Exception)]
        return [o for o, _ in failed], {type(r).__name__ for _, r in failed}

    async def _send(self, outcome: Outcome) -> None:
        delivered = await self._producer.send(
            self._topic, value=outcome_message(outcome), key=outcome.key.encode()
        )
        await delivered
        self._sending.discard(outcome)

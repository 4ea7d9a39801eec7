"""Poison records go to ``resume.dlq`` with their original key, value and headers plus headers
describing the error; consumption goes on, and the offsets move past them only after the
dead-letter topic has them. Also: when the store falls behind, the partitions are paused and
later resumed, and nothing is lost on the way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from gateway.clock import system_clock
from gateway.config.kafka import KafkaSettings
from gateway.errors import StoreError
from gateway.ingest.kafka import KafkaIngest
from gateway.sandbox.workato_state import WorkatoSandbox
from gateway.store.records import Acceptance, NewEvent, NewWait, Registration
from tests.conftest import RunningGateway, SettingsFactory
from tests.kafka_broker import (
    DLQ,
    EVENTS,
    WAITS,
    Message,
    Tansu,
    committed,
    event_value,
    kafka_config,
    produce,
    read_topic,
    wait_value,
)

pytestmark = pytest.mark.timeout(60)
Start = Any
MAX_MESSAGE_BYTES = 2048


def poison(open_token: str) -> list[tuple[str, Message]]:
    """One record of every kind the gateway must refuse, with the kind it must be filed as."""
    big = event_value("acme", "big", "k-big", b'{"pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}')
    return [
        ("not_json", Message(EVENTS, b"k1", b"{not json")),
        ("not_json", Message(EVENTS, b"k2", b"\xff\xfe")),
        ("not_json", Message(EVENTS, b"k3", None)),  # a tombstone
        ("invalid", Message(EVENTS, b"k4", b"[1, 2, 3]")),
        ("invalid", Message(EVENTS, b"k5", event_value("acme", "e5", "k5", status="done"))),
        ("invalid", Message(EVENTS, b"k6", b'{"tenant": "acme", "id": "e6", "key": "k6"}')),
        ("invalid", Message(EVENTS, b"k7", event_value("acme", "e7", "k7", b"[1]"))),  # raw mode
        ("invalid", Message(WAITS, b"k8", wait_value("acme", "k8", "t", bogus=1))),
        (
            "invalid",
            Message(
                WAITS, b"k9", wait_value("acme", "k9", "t9", expires_at="2001-01-01T00:00:00Z")
            ),
        ),
        ("unknown_tenant", Message(EVENTS, b"k10", event_value("nobody", "e10", "k10"))),
        ("unknown_tenant", Message(WAITS, b"k11", wait_value("nobody", "k11", "t11"))),
        ("oversized", Message(EVENTS, b"k-big", big)),
        ("conflict", Message(WAITS, b"held", wait_value("acme", "held", open_token + "-other"))),
    ]


async def test_every_kind_of_poison_is_dead_lettered_with_headers_and_consumption_goes_on(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    config = kafka_config(kafka.bootstrap, max_message_bytes=MAX_MESSAGE_BYTES)
    gw: RunningGateway = await start_gateway(make_settings({"kafka": config}, raw_mode=True))
    held = workato.create_job()
    status, _ = await gw.post("/v1/waits", {"key": "held", "resume_token": held.resume.token})
    assert status == 201
    jobs = [workato.create_job() for _ in range(3)]
    bad: list[tuple[str | None, Message]] = list(poison(held.resume.token))
    good: list[tuple[str | None, Message]] = []
    for i, job in enumerate(jobs):
        key = f"ok-{i}"
        good.append((None, Message(WAITS, key.encode(), wait_value("acme", key, job.resume.token))))
        good.append((None, Message(EVENTS, key.encode(), event_value("acme", key, key))))
    # Poison first, between and after the good records; each record has a header of its own.
    mixed = [*bad[:5], *good[:2], *bad[5:10], *good[2:], *bad[10:]]
    sent = [
        Message(m.topic, m.key, m.value, [("trace", f"t-{n}".encode())])
        for n, (_, m) in enumerate(mixed)
    ]
    meta = await produce(kafka.bootstrap, sent)

    dead = await read_topic(kafka.bootstrap, DLQ, len(bad))
    assert len(dead) == len(bad)
    for record in dead:
        headers = dict(record.headers)
        n = int(headers["trace"].decode().removeprefix("t-"))
        kind, original, where = mixed[n][0], sent[n], meta[n]
        assert headers["dlq.error.kind"].decode() == kind
        assert headers["dlq.error.detail"]
        assert (record.key, record.value) == (original.key, original.value)
        assert headers["dlq.original.topic"].decode() == where.topic
        assert int(headers["dlq.original.partition"]) == where.partition
        assert int(headers["dlq.original.offset"]) == where.offset
        assert headers["dlq.consumer.group"] == b"resume-gateway"
        assert held.resume.token.encode() not in headers["dlq.error.detail"]
    assert sorted(dict(r.headers)["dlq.error.kind"].decode() for r in dead) == sorted(
        str(kind) for kind, _ in bad
    )

    deadline = time.monotonic() + 20
    while not all(job.resume.count == 1 for job in jobs):
        assert time.monotonic() < deadline, "the good records were not all processed"
        await asyncio.sleep(0.05)
    assert held.resume.count == 0
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS, WAITS]) < len(mixed):
        assert time.monotonic() < deadline, "the offsets did not move past the poison"
        await asyncio.sleep(0.1)


class SlowStore:
    """Wraps the ingest so that each batch takes a while: the store 'falls behind'."""

    def __init__(self, ingest: Any, delay_s: float) -> None:
        self._ingest = ingest
        self._delay_s = delay_s
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ingest, name)

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent]
    ) -> tuple[list[Registration], list[Acceptance]]:
        self.batches += 1
        await asyncio.sleep(self._delay_s)
        result: tuple[list[Registration], list[Acceptance]] = await self._ingest.ingest_batch(
            waits, events
        )
        return result


async def test_a_store_that_falls_behind_pauses_the_partitions_until_it_catches_up(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    gw: RunningGateway = await start_gateway(make_settings())
    config = kafka_config(
        kafka.bootstrap, max_batch_records=20, max_batches_in_flight=2, pause_after_s=0.3
    )
    slow = SlowStore(gw.gateway.ingest, delay_s=0.5)
    consumer = KafkaIngest(
        KafkaSettings.model_validate(config),
        slow,
        frozenset({"acme"}),
        system_clock,
        gw.gateway.metrics,
    )
    await consumer.start()
    pauses = 0

    async def watch() -> None:
        nonlocal pauses
        was = False
        while True:
            if consumer.paused and not was:
                pauses += 1
            was = consumer.paused
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch(), name="watch-paused")
    try:
        count = 200
        events = [
            Message(EVENTS, f"k{i}".encode(), event_value("acme", f"e{i}", f"k{i}"))
            for i in range(count)
        ]
        await produce(kafka.bootstrap, events)
        deadline = time.monotonic() + 30
        while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < count:
            assert time.monotonic() < deadline, "not everything was consumed"
            await asyncio.sleep(0.1)
        assert pauses >= 1, "the consumer never paused although each batch took 0.5 s"
        assert slow.batches >= count // 20
        deadline = time.monotonic() + 5
        while consumer.paused:  # it decides again at its next poll
            assert time.monotonic() < deadline, "it resumes once the store caught up"
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await consumer.stop(5.0)


class FailingOnce:
    """Wraps the ingest so that its first batch fails, as a store error would fail it."""

    def __init__(self, ingest: Any) -> None:
        self._ingest = ingest
        self.failed = False
        self.persisted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ingest, name)

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent]
    ) -> tuple[list[Registration], list[Acceptance]]:
        if not self.failed:
            self.failed = True
            raise StoreError("sqlite: database is locked")
        result: tuple[list[Registration], list[Acceptance]] = await self._ingest.ingest_batch(
            waits, events
        )
        self.persisted += [event.event_id for event in events]
        return result


async def test_after_a_failed_batch_no_later_batch_commits_past_it(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """The batches chained behind a failed one are abandoned; one fetched after it had left
    the batches in flight had no predecessor, committed, and the failed records were lost."""
    gw: RunningGateway = await start_gateway(make_settings())
    failing = FailingOnce(gw.gateway.ingest)
    consumer = KafkaIngest(
        KafkaSettings.model_validate(kafka_config(kafka.bootstrap)),
        failing,
        frozenset({"acme"}),
        system_clock,
        gw.gateway.metrics,
    )
    await consumer.start()
    try:
        first = [Message(EVENTS, b"one", event_value("acme", f"a{i}", "one")) for i in range(5)]
        await produce(kafka.bootstrap, first)
        await asyncio.wait_for(consumer.failed.wait(), 20)
        later = [Message(EVENTS, b"one", event_value("acme", f"b{i}", "one")) for i in range(5)]
        await produce(kafka.bootstrap, later)
        await asyncio.sleep(1.5)  # a fetch, a batch and a commit take far less
        assert await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) == 0
        assert failing.persisted == []
    finally:
        await consumer.stop(5.0)


async def produce_without_key_or_value(bootstrap: str) -> None:
    """What Java and librdkafka producers may send; aiokafka's ``send`` refuses it, so the
    record goes through its accumulator."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.client._wait_on_metadata(EVENTS)
        sent = await producer._message_accumulator.add_message(
            TopicPartition(EVENTS, 0), None, None, 30, timestamp_ms=None, headers=[]
        )
        await sent
    finally:
        await producer.stop()


async def test_a_record_without_key_or_value_is_dead_lettered_not_a_crash(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """Sent on as it came, it made aiokafka assert: the batch died, the gateway stopped, and
    the record was read again on the next start."""
    gw: RunningGateway = await start_gateway(
        make_settings({"kafka": kafka_config(kafka.bootstrap)})
    )
    await produce_without_key_or_value(kafka.bootstrap)
    (dead,) = await read_topic(kafka.bootstrap, DLQ, 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (None, b"")
    assert (headers["dlq.error.kind"], headers["dlq.value_null"]) == (b"not_json", b"true")
    deadline = time.monotonic() + 10
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < 1:
        assert time.monotonic() < deadline, "the offset did not move past the record"
        await asyncio.sleep(0.1)
    assert not gw.gateway.kafka.failed.is_set()


async def test_dead_letters_the_broker_refuses_make_the_gateway_unready_until_they_are_taken(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """A dead-letter topic the broker refuses (missing where topics are not created on first
    use, or too small for the record) holds every commit after the poison record; /readyz said
    up while consumption had stopped. Staged with a request limit no record fits in."""
    config = kafka_config(kafka.bootstrap, dlq_max_request_bytes=1)
    gw: RunningGateway = await start_gateway(make_settings({"kafka": config}))
    await produce(kafka.bootstrap, [Message(EVENTS, b"k", b"{not json")])
    deadline = time.monotonic() + 10
    while (ready := await gw.get("/readyz"))[0] == 200:
        assert time.monotonic() < deadline, "readiness stayed up"
        await asyncio.sleep(0.1)
    status, problem = ready
    assert (status, problem["checks"]["kafka"]) == (503, "dlq_failing")
    async with gw.http.get(gw.url + "/metrics") as resp:
        assert "gateway_kafka_dlq_failing 1.0" in await resp.text()
    assert await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) == 0

"""Poison records go to ``resume.dlq`` with their original key, value and headers plus headers
describing the error; consumption goes on, and the offsets move past them only after the
dead-letter topic has them. Also: when the store falls behind, the partitions are paused and
later resumed, and nothing is lost on the way."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import aiokafka.consumer.fetcher
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.util import calc_crc32c
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
    # each record counted once: the conflict and the expired registration, refused by the
    # store, were counted as ingested too
    registry, waits = gw.gateway.metrics.registry, {"topic": WAITS}
    bad_waits = sum(m.topic == WAITS for _, m in bad)
    ingested = registry.get_sample_value(RECORDS, {**waits, "result": "ingested"})
    dead = registry.get_sample_value(RECORDS, {**waits, "result": "dead_lettered"})
    assert (ingested, dead) == (len(jobs), bad_waits)


RECORDS = "gateway_kafka_records_total"


class SlowStore:
    """Wraps the ingest so that each batch takes a while: the store 'falls behind'."""

    def __init__(self, ingest: Any, delay_s: float) -> None:
        self._ingest = ingest
        self._delay_s = delay_s
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ingest, name)

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Any = None
    ) -> tuple[list[Registration], list[Acceptance]]:
        self.batches += 1
        await asyncio.sleep(self._delay_s)
        result: tuple[list[Registration], list[Acceptance]] = await self._ingest.ingest_batch(
            waits, events, waits_at
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

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ingest, name)

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Any = None
    ) -> tuple[list[Registration], list[Acceptance]]:
        if not self.failed:
            self.failed = True
            raise StoreError("sqlite: database is locked")
        result: tuple[list[Registration], list[Acceptance]] = await self._ingest.ingest_batch(
            waits, events, waits_at
        )
        return result


async def test_after_a_failed_batch_nothing_later_is_committed(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """After a batch failed the intake fetches no more, and nothing is committed past the
    failed records: a restart reads them again. (A batch that a fetch under way brought in
    after the failure is abandoned too: ``test_kafka.py``.)"""
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


class RawName(str):
    """A header name whose bytes are not UTF-8 (librdkafka sends what it is given): aiokafka's
    pure-Python batch builder encodes names with ``encode``."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"bad\xff" + str(self).encode()


Row = tuple[bytes, bytes, list[tuple[str, bytes]]]


class MarkerBuilder(_DefaultRecordBatchBuilderPy):
    """Builds a transaction marker: a control batch, which consumers skip."""

    def build(self) -> bytearray:
        batch: bytearray = super().build()
        attributes_at = struct.calcsize(">qiibI")
        struct.pack_into(">h", batch, attributes_at, 0x20 | 0x10)  # control, transactional
        crc = calc_crc32c(bytes(batch[attributes_at:]))
        struct.pack_into(">I", batch, struct.calcsize(">qiib"), crc)
        return batch


MARKER: list[Row] = [(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])]  # a commit marker


async def produce_batches(bootstrap: str, partition: int, batches: list[list[Row]]) -> None:
    """Each list of rows as one record batch of ``EVENTS``' ``partition``, in order;
    ``MARKER`` as a transaction marker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for rows in batches:
            batch = producer.create_batch()
            builder = MarkerBuilder if rows is MARKER else _DefaultRecordBatchBuilderPy
            batch._builder = builder(  # not the compiled builder: it encodes names in C
                2, 0, 0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20
            )
            for key, value, headers in rows:
                batch.append(timestamp=None, key=key, value=value, headers=headers)
            await (await producer.send_batch(batch, EVENTS, partition=partition))
    finally:
        await producer.stop()


def partition_0_last(shuffle: Any) -> Any:
    """``random.shuffle``, except that a fetch's partitions are put in order, partition 0
    last (aiokafka shuffles node ids with it too)."""

    def order(items: list[Any]) -> None:
        if items and isinstance(items[0], tuple) and isinstance(items[0][0], TopicPartition):
            items.sort(key=lambda item: (item[0].partition == 0, item[0]))
        else:
            shuffle(items)

    return order


async def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_its_batch_read_on(
    kafka: Tansu,
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka raised on such a name at every fetch of the partition: the intake died, and
    the gateway with it, on every start. Records of all four partitions are on the topic
    before the gateway starts, and aiokafka's fetch, which shuffles the partitions it asks
    for, asks for partition 0 last: the getmany that fails has consumed the other partitions'
    records first, and takes them with it."""
    random = aiokafka.consumer.fetcher.random
    monkeypatch.setattr(random, "shuffle", partition_0_last(random.shuffle))
    jobs = {f"r-{n}": workato.create_job() for n in range(12)}
    bad_key = "r-2"
    row: dict[str, Row] = {
        key: (key.encode(), event_value("acme", key, key), [("trace", key.encode())])
        for key in jobs
    }
    bad_row = (bad_key.encode(), row[bad_key][1], [("trace", b"x"), (RawName("-name"), b"v")])
    # partition 0: a batch, then the refused record between two good ones in one batch, then
    # another batch; the rest spread over every partition by their keys
    await produce_batches(
        kafka.bootstrap, 0, [[row["r-0"]], [row["r-1"], bad_row, row["r-3"]], [row["r-4"]]]
    )
    rest = [Message(EVENTS, row[k][0], row[k][1], row[k][2]) for k in list(jobs)[5:]]
    await produce(kafka.bootstrap, rest)

    gw: RunningGateway = await start_gateway(
        make_settings({"kafka": kafka_config(kafka.bootstrap)})
    )
    for key, job in jobs.items():
        status, _ = await gw.post("/v1/waits", {"key": key, "resume_token": job.resume.token})
        assert status == 201

    (dead,) = await read_topic(kafka.bootstrap, DLQ, 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (bad_key.encode(), bad_row[1])
    assert headers["dlq.error.kind"] == b"bad_header"
    assert headers["dlq.error.detail"] == b"the name of header 1 is not UTF-8"
    assert headers["bad\\xff-name"] == b"v"  # escaped: a producer sends names as UTF-8
    assert (headers["dlq.original.partition"], headers["dlq.original.offset"]) == (b"0", b"2")
    deadline = time.monotonic() + 20
    good = [job for key, job in jobs.items() if key != bad_key]
    while not all(job.resume.count == 1 for job in good):
        assert time.monotonic() < deadline, "the good records were not all processed"
        await asyncio.sleep(0.05)
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < len(jobs):
        assert time.monotonic() < deadline, "the offsets did not move past the batch"
        await asyncio.sleep(0.1)
    assert jobs[bad_key].resume.count == 0
    assert not gw.gateway.kafka.failed.is_set()
    assert len(await read_topic(kafka.bootstrap, DLQ, 1)) == 1  # dead-lettered once


async def test_a_refused_record_after_a_commit_and_a_transaction_marker_is_read_past(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """aiokafka skips a marker without moving its position, so the position after the last
    good record points at the marker, not at the refused batch: read as the refused batch,
    the marker was skipped again and again, for ever. And the partition has a commit by then."""
    gw: RunningGateway = await start_gateway(
        make_settings({"kafka": kafka_config(kafka.bootstrap)})
    )
    jobs = {f"r-{n}": workato.create_job() for n in range(4)}
    for key, job in jobs.items():
        status, _ = await gw.post("/v1/waits", {"key": key, "resume_token": job.resume.token})
        assert status == 201
    row = {key: (key.encode(), event_value("acme", key, key), []) for key in jobs}
    deadline = time.monotonic() + 20
    await produce_batches(kafka.bootstrap, 0, [[row["r-0"]]])
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < 1:
        assert time.monotonic() < deadline, "the first record was not committed"
        await asyncio.sleep(0.05)
    bad_row = (b"bad", event_value("acme", "bad", "bad"), [(RawName("-n"), b"v")])
    batches = [MARKER, [bad_row, row["r-1"]], [row["r-2"], row["r-3"]]]
    await produce_batches(kafka.bootstrap, 0, batches)

    (dead,) = await read_topic(kafka.bootstrap, DLQ, 1)
    headers = dict(dead.headers)
    assert (headers["dlq.error.kind"], headers["dlq.original.offset"]) == (b"bad_header", b"2")
    while not all(job.resume.count == 1 for job in jobs.values()):
        assert time.monotonic() < deadline, "the good records were not all processed"
        await asyncio.sleep(0.05)
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < 6:
        assert time.monotonic() < deadline, "the offsets did not move past the batch"
        await asyncio.sleep(0.1)
    assert not gw.gateway.kafka.failed.is_set()


async def test_a_key_registered_again_within_one_batch_takes_its_own_event(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """Waits and events of one fetch, taken in the order they were produced: the batch
    registered all its waits first, so the key's second wait conflicted with the first (not
    yet resolved by its event) and went to the dead-letter topic, and its event came late."""
    first, second = workato.create_job(), workato.create_job()
    base = int(time.time() * 1000)
    records = [
        (WAITS, wait_value("acme", "k", first.resume.token)),
        (EVENTS, event_value("acme", "e1", "k")),
        (WAITS, wait_value("acme", "k", second.resume.token)),
        (EVENTS, event_value("acme", "e2", "k")),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for n, (topic, value) in enumerate(records):
            await producer.send_and_wait(topic, value, key=b"k", timestamp_ms=base + n)
    finally:
        await producer.stop()
    gw: RunningGateway = await start_gateway(
        make_settings({"kafka": kafka_config(kafka.bootstrap)})
    )
    deadline = time.monotonic() + 20
    while not (first.resume.count == 1 and second.resume.count == 1):
        assert time.monotonic() < deadline, "each job was not resumed by its own event"
        await asyncio.sleep(0.05)
    for job, event_id in ((first, "e1"), (second, "e2")):
        assert job.resume.data is not None
        assert job.resume.data["event_id"] == event_id
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS, WAITS]) < 4:
        assert time.monotonic() < deadline, "the offsets were not committed"
        await asyncio.sleep(0.1)
    registry = gw.gateway.metrics.registry
    labels = {"topic": WAITS, "result": "ingested"}
    assert registry.get_sample_value("gateway_kafka_records_total", labels) == 2
    labels["result"] = "dead_lettered"
    assert registry.get_sample_value("gateway_kafka_records_total", labels) is None

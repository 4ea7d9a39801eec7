"""The Kafka source's pure parts: record decoding into store records or poison (with the
exact bytes of ``data``), dead-letter headers, the backpressure policy, the outcome message,
the ``[kafka]`` settings, the event ``resume-gateway publish`` sends, and the consumer's
offset order when a batch fails (with fakes in place of the broker's clients)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from gateway.config.kafka import KafkaSettings
from gateway.config.loader import settings_from_dict
from gateway.config.settings import IngestSettings
from gateway.deliver.outcomes import OutcomePublisher, outcome_message
from gateway.devkafka import EventToPublish
from gateway.errors import ConfigError, StoreError
from gateway.ingest.kafka.consumer import KafkaIngest
from gateway.ingest.kafka.decode import KAFKA_SOURCE, Decoder
from gateway.ingest.kafka.dlq import FAILING_AFTER, DeadLetters, dead_letter_headers
from gateway.ingest.kafka.flow import Backpressure, Flow
from gateway.ingest.kafka.records import Poison
from gateway.ingest.service import Ingest
from gateway.kafka_connection import connection_options
from gateway.messages import OutcomeMessage
from gateway.metrics import Metrics
from gateway.security.tokens import TokenCipher
from gateway.store.base import Store
from gateway.store.records import NewEvent, NewWait, Outcome

NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Rec:
    topic: str
    value: bytes | None
    key: bytes | None = b"k"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def decoder(max_bytes: int = 10_000) -> Decoder:
    ingest = Ingest(
        cast(Store, None),  # preparing records touches no store
        TokenCipher([("k1", bytes(32))]),
        IngestSettings(),
        lambda: NOW,
        Metrics(),
        on_match=lambda _tenant: None,
        raw_mode_tenants=frozenset({"raw"}),
    )
    tenants = frozenset({"acme", "raw"})
    return Decoder(ingest, tenants, "resume.events", "resume.waits", max_bytes)


def event(**fields: Any) -> bytes:
    doc = {"tenant": "acme", "id": "e1", "key": "k1", "status": "succeeded", **fields}
    return json.dumps(doc).encode()


def test_an_event_keeps_the_exact_bytes_of_its_data() -> None:
    head = b'{"tenant":"acme","id":"e1","key":"k1","status":"failed",'
    value = head + b'"data": {"n": 1.10, "u": "\\u00fc"} }'
    record = decoder().decode(Rec("resume.events", value), NOW)
    assert isinstance(record, NewEvent)
    assert record.data == b'{"n": 1.10, "u": "\\u00fc"}'
    assert (record.tenant, record.source, record.event_id, record.status) == (
        "acme",
        KAFKA_SOURCE,
        "e1",
        "failed",
    )


def test_an_event_without_data_carries_null() -> None:
    record = decoder().decode(Rec("resume.events", event()), NOW)
    assert isinstance(record, NewEvent)
    assert record.data == b"null"


def test_a_registration_is_sealed_and_never_kept_in_clear() -> None:
    value = json.dumps({"tenant": "acme", "key": "k1", "resume_token": "secret-tok"}).encode()
    record = decoder().decode(Rec("resume.waits", value), NOW)
    assert isinstance(record, NewWait)
    assert (record.tenant, record.key) == ("acme", "k1")
    assert b"secret-tok" not in record.sealed.blob


@pytest.mark.parametrize(
    ("topic", "value", "kind"),
    [
        ("resume.events", None, "not_json"),
        ("resume.events", b"{nope", "not_json"),
        ("resume.events", b"\xff", "not_json"),
        ("resume.events", b"[1]", "invalid"),
        ("resume.events", b"42", "invalid"),
        ("resume.events", event(status="done"), "invalid"),
        ("resume.events", event(extra=1), "invalid"),
        ("resume.events", event(tenant="no such tenant!"), "invalid"),
        ("resume.events", event(tenant="ghost"), "unknown_tenant"),
        ("resume.events", event(tenant="raw", data=[1]), "invalid"),
        ("resume.events", event(data="x" * 10_000), "oversized"),
        ("resume.waits", json.dumps({"tenant": "acme", "key": "k"}).encode(), "invalid"),
        (
            "resume.waits",
            json.dumps({"tenant": "ghost", "key": "k", "resume_token": "t"}).encode(),
            "unknown_tenant",
        ),
        (  # only an event's data is kept raw (and not decoded): here it is a stray member
            "resume.waits",
            json.dumps({"tenant": "acme", "key": "k", "resume_token": "t", "data": 1}).encode(),
            "invalid",
        ),
    ],
)
def test_poison_is_classified(topic: str, value: bytes | None, kind: str) -> None:
    result = decoder().decode(Rec(topic, value), NOW)
    assert isinstance(result, Poison)
    assert result.kind == kind
    assert result.detail


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (b'{"id":"e","key":"k","status":"succeeded","data":{"score":NaN}}', "NaN"),
        ('\ufeff{"id":"e"}'.encode(), "expected '{'"),
        ('{"id":"e"}'.encode("utf-16"), "UTF-8"),
    ],
)
def test_an_object_that_is_not_json_is_not_json_with_the_parsers_reason(
    value: bytes, said: str
) -> None:
    """json.loads of the bytes takes all three: they were filed 'JSON but not an object'."""
    result = decoder().decode(Rec("resume.events", value), NOW)
    assert isinstance(result, Poison)
    assert result.kind == "not_json"
    assert said in result.detail


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "metadata",
    [
        '{"note": "\\ud800"}',  # a lone surrogate: the store's write raised, batch and all
        '{"\\udcff": 1}',
        nested(900),  # json.dumps for the store overflowed the stack at about 985 levels
        nested(129),  # one past the limit
    ],
)
def test_a_registration_whose_metadata_cannot_be_stored_is_invalid_not_a_crash(
    metadata: str,
) -> None:
    """Either ended the consumer at every restart, with the records behind it unread."""
    value = b'{"tenant": "acme", "key": "k", "resume_token": "t", "metadata": ' + metadata.encode()
    result = decoder().decode(Rec("resume.waits", value + b"}"), NOW)
    assert isinstance(result, Poison)
    assert (result.kind, result.detail.split(":")[0]) == ("invalid", "metadata")


def test_a_record_whose_preparation_fails_unexpectedly_is_dead_lettered() -> None:
    """A bug in preparing one record is that record's problem: raised out of the decoder, it
    ended the consumer, and every restart read the same record again."""

    class Failing:
        def prepare_wait(self, tenant: str, reg: Any, now: float) -> NewWait:
            raise RuntimeError("a bug")

        def prepare_event(self, tenant: str, source: str, event: Any, data: bytes) -> NewEvent:
            raise RuntimeError("a bug")

    failing = Decoder(Failing(), frozenset({"acme"}), "resume.events", "resume.waits", 10_000)
    value = json.dumps({"tenant": "acme", "key": "k", "resume_token": "t"}).encode()
    for record in (Rec("resume.waits", value), Rec("resume.events", event())):
        result = failing.decode(record, NOW)
        assert isinstance(result, Poison)
        assert (result.kind, result.detail) == (
            "invalid",
            "the record could not be prepared (RuntimeError)",
        )


def test_poison_details_never_echo_the_value() -> None:
    value = json.dumps({"tenant": "acme", "key": "", "resume_token": "tok-SECRET"}).encode()
    result = decoder().decode(Rec("resume.waits", value), NOW)
    assert isinstance(result, Poison)
    assert result.detail.startswith("key:")
    assert "SECRET" not in result.detail


def test_a_batch_sorts_records_and_commits_past_the_last_offset_per_partition() -> None:
    records = [
        Rec("resume.events", event(id="a"), partition=0, offset=5),
        Rec("resume.events", b"junk", partition=0, offset=6),
        Rec(
            "resume.waits",
            json.dumps({"tenant": "acme", "key": "k", "resume_token": "t"}).encode(),
            partition=1,
            offset=9,
        ),
    ]
    batch = decoder().batch(records, NOW)
    assert (len(batch.events), len(batch.waits), len(batch.poison), batch.size) == (1, 1, 1, 3)
    assert batch.offsets == {("resume.events", 0): 7, ("resume.waits", 1): 10}


def test_dead_letter_headers_keep_the_originals_and_say_why_and_where() -> None:
    record = Rec("resume.events", b"x", headers=[("trace", b"t1")])
    headers = dead_letter_headers(record, Poison("not_json", "bad"), "g1")
    assert headers[0] == ("trace", b"t1")
    assert dict(headers) == {
        "trace": b"t1",
        "dlq.error.kind": b"not_json",
        "dlq.error.detail": b"bad",
        "dlq.original.topic": b"resume.events",
        "dlq.original.partition": b"2",
        "dlq.original.offset": b"41",
        "dlq.original.timestamp_ms": b"1700000000000",
        "dlq.consumer.group": b"g1",
    }


def test_a_header_name_that_is_not_utf8_is_refused_and_dead_lettered_escaped() -> None:
    """Such a record reaches the decoder only through ``rawbatch``, its name's bytes held as
    lone surrogates; a producer could not send that name on."""
    name = b"bad\xff".decode("utf-8", "surrogateescape")
    headers = [("trace", b"t1"), ("\u00fc", b"2"), (name, b"v")]
    record = Rec("resume.events", event(), headers=headers)
    poison = decoder().decode(record, NOW)
    assert poison == Poison("bad_header", "the name of header 2 is not UTF-8")
    sent = dead_letter_headers(record, poison, "g1")
    assert sent[:3] == [("trace", b"t1"), ("\u00fc", b"2"), ("bad\\xff", b"v")]
    for sent_name, _ in sent:
        sent_name.encode()  # as the producer does
    assert isinstance(
        decoder().decode(Rec("resume.events", event(), headers=headers[:2]), NOW), NewEvent
    )


def test_backpressure_fetches_holds_pauses_and_resumes_at_half() -> None:
    flow = Backpressure(max_in_flight=4, pause_after_s=5.0)
    assert flow.decide(0, 0.0) is Flow.FETCH
    assert flow.decide(3, 1.0) is Flow.FETCH
    assert flow.decide(4, 1.0) is Flow.HOLD, "at capacity but moving: just wait"
    assert flow.hold_for_s(1.0) == 4.0
    assert flow.decide(4, 5.0) is Flow.PAUSE, "the oldest batch is too old: the store is behind"
    assert flow.paused
    assert flow.decide(3, 0.5) is Flow.PAUSE, "hysteresis: resume only at half"
    assert flow.decide(2, 0.5) is Flow.FETCH
    assert not flow.paused
    assert flow.decide(1, 6.0) is Flow.PAUSE, "one slow batch is enough"


def test_the_outcome_message_matches_its_schema_and_has_no_token() -> None:
    outcome = Outcome("acme", "k1", 7, "e1", "kafka", "delivered", None, 1, 204, NOW, NOW + 1.5)
    doc = json.loads(outcome_message(outcome))
    assert OutcomeMessage.model_validate(doc).duration_ms == 1500.0
    assert doc["received_at"].startswith("2027-01-15T")
    assert set(doc) == set(OutcomeMessage.model_fields)
    assert not {"token", "resume_token"} & set(doc)


def test_kafka_settings_are_off_without_bootstrap_and_validated() -> None:
    assert not KafkaSettings().enabled
    assert KafkaSettings(bootstrap_servers=["b:9092"]).topics == ["resume.events", "resume.waits"]
    with pytest.raises(ValueError, match="heartbeat"):
        KafkaSettings(session_timeout_s=1, heartbeat_interval_s=2)
    with pytest.raises(ValueError, match="must differ"):
        KafkaSettings(outcomes_topic="resume.events")
    with pytest.raises(ConfigError, match="sasl"):
        settings_from_dict(
            {"env": "dev", "kafka": {"sasl_mechanism": "PLAIN", "sasl_username": "u"}}, {}
        )


@pytest.mark.parametrize(
    ("kafka", "said"),
    [
        ({"security_protocol": "SASL_SSL"}, "SASL_SSL needs sasl_mechanism"),  # aiokafka raised
        (  # passed, and went out without any authentication
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
            "sasl_mechanism is set, but security_protocol PLAINTEXT ignores it",
        ),
        ({"ssl_cafile": "/ca.pem"}, "ssl_cafile is set, but security_protocol PLAINTEXT"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": "p",
                "ssl_certfile": "/c.pem",
            },
            "ssl_certfile is set, but security_protocol SASL_PLAINTEXT",
        ),
    ],
)
def test_security_settings_the_protocol_would_not_use_are_refused(
    kafka: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        settings_from_dict({"env": "dev", "kafka": {"bootstrap_servers": ["b:9092"], **kafka}}, {})


def test_the_published_event_splices_data_unchanged() -> None:
    value = EventToPublish("acme", "e1", "k1", "succeeded", b'{"n": 1.10}').value()
    assert value.endswith(b'"data": {"n": 1.10}}')
    assert json.loads(value) == {
        "tenant": "acme",
        "id": "e1",
        "key": "k1",
        "status": "succeeded",
        "data": {"n": 1.1},
    }
    assert isinstance(decoder().decode(Rec("resume.events", value), NOW), NewEvent)
    with pytest.raises(ConfigError):
        EventToPublish("acme", "e1", "k1", "succeeded", b"{oops").value()


def test_the_kafka_messages_and_the_outcome_are_published_as_schemas() -> None:
    folder = Path(__file__).resolve().parents[2] / "schemas"
    event = json.loads((folder / "kafka-completion-event.schema.json").read_text())
    wait = json.loads((folder / "kafka-wait-registration.schema.json").read_text())
    outcome = json.loads((folder / "outcome.schema.json").read_text())
    assert set(event["required"]) == {"tenant", "id", "key", "status"}
    assert {"tenant", "key", "resume_token"} <= set(wait["required"])
    assert "token" not in json.dumps(outcome).replace("resume token", "")
    assert outcome["properties"]["state"]["enum"] == [
        "delivered",
        "delivered_unconfirmed",
        "dead",
        "expired",
        "cancelled",
    ]


class FlakyProducer:
    """Refuses the first ``failures`` sends, then records every message it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            delivered.set_exception(KafkaTimeoutError())
        else:
            self.sent.append((topic, key, value))
            delivered.set_result(None)
        return delivered


def outcome_of(i: int) -> Outcome:
    return Outcome("acme", f"k{i}", i, f"e{i}", "kafka", "delivered", None, 1, 204, NOW, NOW + 1)


async def test_failed_outcome_publishes_are_retried_and_offering_never_waits() -> None:
    settings = KafkaSettings(
        bootstrap_servers=["unused:9092"], outcomes_topic="resume.outcomes", retry_backoff_s=0.01
    )
    producer = FlakyProducer(failures=3)
    publisher = OutcomePublisher(settings, Metrics(), producer)
    await publisher.start()
    for i in range(5):
        publisher.offer(outcome_of(i))  # synchronous: a lane never waits for the broker
    await asyncio.wait_for(publisher.stop(timeout_s=5), 10)
    # Every outcome arrives once; order across a retry is not kept (each has finished_at).
    assert sorted(key for _, key, _ in producer.sent) == [f"k{i}".encode() for i in range(5)]
    assert {topic for topic, _, _ in producer.sent} == {"resume.outcomes"}


async def test_a_full_outcome_queue_drops_the_oldest_and_counts_them() -> None:
    settings = KafkaSettings(
        bootstrap_servers=["unused:9092"], outcomes_topic="resume.outcomes", outcomes_max_queued=3
    )
    metrics = Metrics()
    producer = FlakyProducer(0)
    publisher = OutcomePublisher(settings, metrics, producer)
    for i in range(5):  # the broker is not there yet: they queue
        publisher.offer(outcome_of(i))
    queued = metrics.registry.get_sample_value("gateway_outcomes_queued")
    assert queued == 3  # seen before any is dropped for good
    await publisher.start()
    await asyncio.wait_for(publisher.stop(timeout_s=5), 10)
    assert [key for _, key, _ in producer.sent] == [b"k2", b"k3", b"k4"]
    dropped = metrics.registry.get_sample_value(
        "gateway_outcomes_published_total", {"result": "dropped"}
    )
    assert dropped == 2
    assert metrics.registry.get_sample_value("gateway_outcomes_queued") == 0


class SilentProducer(FlakyProducer):
    """Takes every message and never acknowledges one: a broker gone quiet."""

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


async def test_outcomes_written_off_at_the_stop_are_no_longer_shown_queued() -> None:
    publisher_metrics = Metrics()
    settings = KafkaSettings(bootstrap_servers=["unused:9092"], outcomes_topic="resume.outcomes")
    publisher = OutcomePublisher(settings, publisher_metrics, SilentProducer(0))
    await publisher.start()
    for i in range(3):
        publisher.offer(outcome_of(i))
    await asyncio.wait_for(publisher.stop(timeout_s=0.3), 5)
    value = publisher_metrics.registry.get_sample_value
    assert value("gateway_outcomes_published_total", {"result": "unconfirmed"}) == 3
    assert value("gateway_outcomes_queued") == 0  # counted once, not shown for ever


async def test_outcomes_cut_short_by_the_stop_are_counted_as_unconfirmed() -> None:
    """The chunk being sent when the stop's time ran out was neither logged nor counted."""
    settings = KafkaSettings(bootstrap_servers=["unused:9092"], outcomes_topic="resume.outcomes")
    metrics = Metrics()
    publisher = OutcomePublisher(settings, metrics, SilentProducer(0))
    await publisher.start()
    for i in range(3):
        publisher.offer(outcome_of(i))
    await asyncio.wait_for(publisher.stop(timeout_s=0.2), 10)

    def counted(result: str) -> float | None:
        labels = {"result": result}
        return metrics.registry.get_sample_value("gateway_outcomes_published_total", labels)

    assert (counted("unconfirmed"), counted("dropped"), counted("sent")) == (3, 0, None)


class FlushingForEver(SilentProducer):
    """Its stop waits to flush what it was given to a broker that is gone (aiokafka: 40 s)."""

    async def stop(self) -> None:
        await asyncio.sleep(3600)


async def test_the_outcomes_producer_is_closed_within_the_stops_time() -> None:
    settings = KafkaSettings(bootstrap_servers=["unused:9092"], outcomes_topic="resume.outcomes")
    publisher = OutcomePublisher(settings, Metrics(), FlushingForEver(0))
    await publisher.start()
    publisher.offer(outcome_of(1))
    started = time.monotonic()
    await asyncio.wait_for(publisher.stop(timeout_s=0.3), 10)
    assert time.monotonic() - started < 1.0


class FailingToClose:
    """A consumer whose close raises (aiokafka's coordination task died, say)."""

    async def stop(self) -> None:
        raise RuntimeError("the coordinator died")


async def test_a_consumer_that_fails_to_close_still_lets_the_producer_close() -> None:
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"])
    preparer = decoder()._preparer
    consumer = KafkaIngest(settings, preparer, frozenset({"acme"}), lambda: NOW, Metrics())
    producer = HangingProducer()
    consumer._consumer, consumer._producer = FailingToClose(), producer
    await asyncio.wait_for(consumer.stop(0.2), 5)
    assert producer.stopping


class KnowsTopics:
    """A consumer connected to a broker that has ``topics`` (Tansu creates any topic asked
    for, so a missing one is only seen against a broker that does not)."""

    def __init__(self, topics: set[str]) -> None:
        self._topics = topics

    async def topics(self) -> set[str]:
        return self._topics


async def test_readiness_names_the_topics_the_broker_does_not_have() -> None:
    """A typo in a topic's name left a gateway consuming nothing, and readiness said only
    ``topics_missing``, not which."""
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], waits_topic="resume.wiats")
    consumer = KafkaIngest(
        settings, decoder()._preparer, frozenset({"acme"}), lambda: NOW, Metrics()
    )
    consumer._consumer = KnowsTopics({"resume.events", "resume.waits", "resume.dlq"})
    assert await consumer.check() == "topics_missing: resume.wiats"
    consumer._consumer = KnowsTopics({"resume.events", "resume.wiats"})
    assert await consumer.check() == "up"


def test_connection_options_carry_sasl_and_tls_from_the_settings() -> None:
    plain = connection_options(KafkaSettings(bootstrap_servers=["b:9092"]), "consumer")
    assert plain == {
        "bootstrap_servers": ["b:9092"],
        "client_id": "resume-gateway-consumer",
        "security_protocol": "PLAINTEXT",
    }
    secure = settings_from_dict(
        {
            "env": "dev",
            "kafka": {
                "bootstrap_servers": ["b:9093"],
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "gw",
                "sasl_password": "env:KAFKA_PASSWORD",
            },
        },
        {"KAFKA_PASSWORD": "s3cret"},
    ).kafka
    options = connection_options(secure, "dlq")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "gw")
    assert options["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in secure.model_dump_json(), "masked when printed"


class SlowFirstIngest:
    """Prepares like ``Ingest``; its first batch fails last (after the others persisted)."""

    def __init__(self, preparer: Ingest) -> None:
        self._preparer = preparer
        self.calls = 0

    def prepare_wait(self, tenant: str, reg: Any, now: float) -> NewWait:
        return self._preparer.prepare_wait(tenant, reg, now)

    def prepare_event(self, tenant: str, source: str, ev: Any, data: bytes) -> NewEvent:
        return self._preparer.prepare_event(tenant, source, ev, data)

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Any = None
    ) -> Any:
        self.calls += 1
        first = self.calls == 1
        await asyncio.sleep(0.05 if first else 0.0)
        if first:
            raise StoreError("sqlite: disk I/O error")
        return [], []


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(offsets)


class NoDeadLetters:
    async def send_all(self, poison: list[Any]) -> None:
        assert not poison


async def test_no_batch_after_a_failed_one_commits_its_offsets() -> None:
    """Offsets are committed in fetch order: the batches behind a failed one are read again
    after a restart, so none of them may commit (each would commit past the failed one)."""
    ingest = SlowFirstIngest(cast(Ingest, decoder()._preparer))
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], max_batch_records=1)
    consumer = KafkaIngest(settings, ingest, frozenset({"acme"}), lambda: NOW, Metrics())
    fake = RecordingConsumer()
    consumer._consumer, consumer._dead_letters = fake, NoDeadLetters()  # what start() connects
    records = [Rec("resume.events", event(id=f"e{n}"), offset=n) for n in (10, 11, 12)]
    await consumer._start_batches(records)  # one batch each (max_batch_records=1)
    await asyncio.wait_for(consumer.failed.wait(), 2)
    await consumer._drain(2)
    assert isinstance(consumer.failure, StoreError)
    assert fake.commits == []
    assert ingest.calls == 3


async def test_a_batch_fetched_after_a_failed_one_had_ended_does_not_commit() -> None:
    """A fetch under way when a batch failed returns after that batch left the batches in
    flight: the new batch has no predecessor to wait for, and committing it would commit past
    the failed batch's records, which a restart must read again."""
    ingest = SlowFirstIngest(cast(Ingest, decoder()._preparer))
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], max_batch_records=1)
    consumer = KafkaIngest(settings, ingest, frozenset({"acme"}), lambda: NOW, Metrics())
    fake = RecordingConsumer()
    consumer._consumer, consumer._dead_letters = fake, NoDeadLetters()  # what start() connects
    await consumer._start_batches([Rec("resume.events", event(id="e10"), offset=10)])
    await asyncio.wait_for(consumer.failed.wait(), 2)
    await consumer._drain(2)
    assert consumer._in_flight == []  # the failed batch has left: nothing to chain behind
    await consumer._start_batches([Rec("resume.events", event(id="e11"), offset=11)])
    await consumer._drain(2)
    assert ingest.calls == 2  # persisted (a duplicate when read again), never committed
    assert fake.commits == []


class PersistedIngest(SlowFirstIngest):
    """Prepares like ``Ingest``; every batch persists at once."""

    async def ingest_batch(
        self, waits: list[NewWait], events: list[NewEvent], waits_at: Any = None
    ) -> Any:
        self.calls += 1
        return [], []


def watched_consumer(happened: list[str]) -> KafkaIngest:
    """A consumer whose batches persist at once, noting each batch it decodes."""
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], max_batch_records=1)
    consumer = KafkaIngest(
        settings,
        PersistedIngest(cast(Ingest, decoder()._preparer)),
        frozenset({"acme"}),
        lambda: NOW,
        Metrics(),
    )
    consumer._consumer, consumer._dead_letters = RecordingConsumer(), NoDeadLetters()
    batch_of = consumer._decoder.batch

    def decode(records: Any, now: float) -> Any:
        happened.append(f"decoded {records[0].offset}")
        return batch_of(records, now)

    consumer._decoder.batch = decode  # type: ignore[method-assign]
    return consumer


async def test_the_next_fetch_request_leaves_before_the_batches_are_decoded() -> None:
    """aiokafka sends its next fetch request from its own task, a few turns of the loop after
    ``getmany`` drained the buffer (here: three hops of callbacks, as in aiokafka 0.12). The
    batches wait for it, so the broker's round trip overlaps the decoding and the writing."""
    happened: list[str] = []
    consumer = watched_consumer(happened)
    loop = asyncio.get_running_loop()

    def hop(left: int) -> None:
        if left:
            loop.call_soon(hop, left - 1)
        else:
            happened.append("fetch request sent")

    hop(3)  # what the drain set off
    await consumer._start_batches([Rec("resume.events", event(id="e1"), offset=1)])
    await asyncio.wait_for(consumer._drain(2), 2)
    assert happened == ["fetch request sent", "decoded 1"]


async def test_fetched_batches_start_in_fetch_order_however_coarse_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Their store writes queue in the order they start: one key's events stay in order."""
    loop = asyncio.get_running_loop()
    fine = loop.time
    monkeypatch.setattr(loop, "time", lambda: round(fine(), 2))  # 10 ms ticks: equal deadlines
    happened: list[str] = []
    consumer = watched_consumer(happened)
    records = [Rec("resume.events", event(id=f"e{n}"), offset=n) for n in range(1, 9)]
    await consumer._start_batches(records)
    await asyncio.wait_for(consumer._drain(2), 2)
    assert happened == [f"decoded {n}" for n in range(1, 9)]


class RefusingThenTaking:
    """A dead-letter producer that refuses every send until ``take`` is set."""

    def __init__(self) -> None:
        self.take = asyncio.Event()
        self.refusals: asyncio.Queue[int] = asyncio.Queue()
        self.refused = 0

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.take.is_set():
            delivered.set_result(None)
            return delivered
        self.refused += 1
        self.refusals.put_nowait(self.refused)
        delivered.set_exception(KafkaTimeoutError())
        return delivered


async def test_dead_letters_say_they_are_failing_while_retried_and_stop_once_taken() -> None:
    producer, metrics = RefusingThenTaking(), Metrics()
    dead_letters = DeadLetters(producer, "resume.dlq", "g", 0.01, metrics)
    poison = [(Rec("resume.events", b"{not json"), Poison("not_json", "x"))]
    sending = asyncio.create_task(dead_letters.send_all(poison))
    for refusal in range(1, FAILING_AFTER):
        assert await asyncio.wait_for(producer.refusals.get(), 5) == refusal
        assert not dead_letters.failing  # one refusal, a leader moving say, is no failure yet
    while await asyncio.wait_for(producer.refusals.get(), 5) <= FAILING_AFTER:
        pass  # the round after the third refusal: that one has been counted
    assert metrics.registry.get_sample_value("gateway_kafka_dlq_failing") == 1
    producer.take.set()
    await asyncio.wait_for(sending, 5)
    assert not dead_letters.failing
    assert metrics.registry.get_sample_value("gateway_kafka_dlq_failing") == 0


class TakingOnlyTinyRecords:
    """A dead-letter producer whose topic refuses anything with a key, as when the key alone
    is over the broker's max.message.bytes."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, Any]] = []

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key is not None:
            delivered.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((value, key, headers))
            delivered.set_result(None)
        return delivered


async def test_a_dead_letter_too_large_without_its_value_goes_without_key_and_headers() -> None:
    """It was sent again without its value only, refused at every try: the batch's commit,
    and every later one, waited for good."""
    producer, metrics = TakingOnlyTinyRecords(), Metrics()
    dead_letters = DeadLetters(producer, "resume.dlq", "g", 0.01, metrics)
    record = Rec("resume.events", b"{not json", key=b"k" * 5000, headers=[("trace", b"t1")])
    await asyncio.wait_for(dead_letters.send_all([(record, Poison("not_json", "x"))]), 5)
    [(value, key, headers)] = producer.sent
    sent = dict(headers)
    assert (value, key, "trace" in sent) == (b"", None, False)
    assert (sent["dlq.error.kind"], sent["dlq.original.offset"]) == (b"not_json", b"41")
    assert (sent["dlq.key_omitted_bytes"], sent["dlq.headers_omitted"]) == (b"5000", b"1")
    assert sent["dlq.value_omitted_bytes"] == b"9"
    labels = {"topic": "resume.events", "result": "dead_lettered"}
    assert metrics.registry.get_sample_value("gateway_kafka_records_total", labels) == 1


class HangingProducer:
    """A producer whose stop waits for a broker that is gone (aiokafka: 40 s per request)."""

    def __init__(self) -> None:
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.sleep(3600)


async def test_the_stop_is_bounded_when_the_producer_cannot_finish() -> None:
    """A dead letter queued for a broker that was gone held the gateway's stop ~40 s, past a
    container's grace period: the store and deliveries closed late or never."""
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"])
    consumer = KafkaIngest(
        settings, decoder()._preparer, frozenset({"acme"}), lambda: NOW, Metrics()
    )
    producer = HangingProducer()
    consumer._producer = producer  # what start() connects; no consumer joined a group
    started = time.monotonic()
    await asyncio.wait_for(consumer.stop(0.2), 5)
    assert producer.stopping
    assert time.monotonic() - started < 1.0

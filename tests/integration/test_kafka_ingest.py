"""The Kafka source against a real broker (Tansu), the gateway in-process.

Waits and events published to ``resume.waits``/``resume.events`` resume each sandbox job
exactly once with the event's exact bytes; the same records published again are recognised as
duplicates; every finished delivery is published to ``resume.outcomes`` without its token; a
graceful stop commits everything it persisted; ``/readyz`` follows the broker; an unreachable
broker fails the start with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from gateway.app import Gateway
from gateway.errors import BrokerError
from gateway.sandbox.workato_jobs import Job
from gateway.sandbox.workato_state import WorkatoSandbox
from tests.conftest import RunningGateway, SettingsFactory
from tests.kafka_broker import (
    EVENTS,
    OUTCOMES,
    WAITS,
    Message,
    Tansu,
    committed,
    event_value,
    free_port,
    kafka_config,
    produce,
    read_topic,
    wait_value,
)

pytestmark = pytest.mark.timeout(60)
Start = Any
JOBS = 40


async def eventually(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s}s")


def all_resumed(jobs: list[Job]) -> bool:
    return all(job.resume.count >= 1 for job in jobs)


async def metric(gw: RunningGateway, line: str) -> float:
    async with gw.http.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


BUFFERED = 'gateway_events_total{outcome="buffered",source="kafka",tenant="acme"}'


def lone_events(count: int) -> list[Message]:
    """Events of keys that no wait names: each is buffered."""
    return [
        Message(EVENTS, f"k{i}".encode(), event_value("acme", f"e{i}", f"k{i}"))
        for i in range(count)
    ]


def data_of(i: int) -> bytes:
    """Bytes that a JSON round trip would change: the gateway must pass them on as they are."""
    return b'{"order": %d, "n": 1.0000000000000001, "note": "\xc3\xbcn\xc3\xafcode"}' % i


async def test_waits_and_events_over_kafka_resume_each_job_once_and_publish_outcomes(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    settings = make_settings({"kafka": kafka_config(kafka.bootstrap, outcomes_topic=OUTCOMES)})
    gw: RunningGateway = await start_gateway(settings)
    jobs = [workato.create_job() for _ in range(JOBS)]
    keys = [f"order-{i}" for i in range(JOBS)]
    # Half of the events are published before their wait: order must not matter.
    early = [
        Message(EVENTS, k.encode(), event_value("acme", f"e-{i}", k, data_of(i)))
        for i, k in enumerate(keys)
        if i % 2
    ]
    waits = [
        Message(WAITS, k.encode(), wait_value("acme", k, job.resume.token))
        for k, job in zip(keys, jobs, strict=True)
    ]
    late = [
        Message(EVENTS, k.encode(), event_value("acme", f"e-{i}", k, data_of(i)))
        for i, k in enumerate(keys)
        if not i % 2
    ]
    await produce(kafka.bootstrap, early)
    await produce(kafka.bootstrap, waits + late)
    await eventually(lambda: all_resumed(jobs))

    for i, job in enumerate(jobs):
        assert job.resume.body is not None
        assert b'"payload":' + data_of(i) in job.resume.body, "data must arrive byte-exact"
        sent = json.loads(job.resume.body)["data"]
        assert (sent["source"], sent["event_id"], sent["key"]) == ("kafka", f"e-{i}", keys[i])

    # Redelivery of every event (as after a crash before the commit): recognised, not resumed.
    await produce(kafka.bootstrap, early + late)
    duplicates = 'gateway_events_total{outcome="duplicate",source="kafka",tenant="acme"}'
    deadline = time.monotonic() + 20
    while await metric(gw, duplicates) < JOBS:
        assert time.monotonic() < deadline, "the redelivered events were not all seen"
        await asyncio.sleep(0.05)
    assert [job.resume.attempts for job in jobs] == [1] * JOBS, "no job may be resumed twice"

    outcomes = await read_topic(kafka.bootstrap, OUTCOMES, JOBS)
    tokens = [job.resume.token.encode() for job in jobs]
    assert not [t for t in tokens for r in outcomes if t in r.value], "no token in outcomes"
    by_key = {r.key.decode(): json.loads(r.value) for r in outcomes}
    assert set(by_key) == set(keys)
    first = by_key["order-0"]
    assert (first["state"], first["attempts"], first["last_status"]) == ("delivered", 1, 204)
    assert (first["tenant"], first["source"], first["event_id"]) == ("acme", "kafka", "e-0")
    assert first["duration_ms"] >= 0
    assert "resume_token" not in first


async def test_a_delivery_ended_by_cancelling_its_wait_is_published_as_cancelled(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """Every other final state reached resume.outcomes; a cancelled one was only counted, so
    a consumer of the topic kept it pending for ever."""
    settings = make_settings({"kafka": kafka_config(kafka.bootstrap, outcomes_topic=OUTCOMES)})
    gw: RunningGateway = await start_gateway(settings)
    gw.gateway.deliverer._lanes["acme"]._credential.paused_until = 2e9  # nothing is sent
    await gw.post("/v1/waits", {"key": "k", "resume_token": "tok-cancelled"})
    await gw.post("/v1/events", {"id": "e-1", "key": "k", "status": "succeeded"})
    assert (await gw.delete("/v1/waits/k"))[0] == 200
    (record,) = await read_topic(kafka.bootstrap, OUTCOMES, 1)
    assert b"tok-cancelled" not in record.value
    outcome = json.loads(record.value)
    assert (record.key, outcome["state"], outcome["reason"]) == (b"k", "cancelled", "cancelled")
    assert (outcome["event_id"], outcome["source"], outcome["attempts"]) == ("e-1", "api", 0)


async def test_a_graceful_stop_commits_what_it_persisted_and_a_restart_reads_nothing_twice(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    settings = make_settings({"kafka": kafka_config(kafka.bootstrap, max_batch_records=50)})
    gw: RunningGateway = await start_gateway(settings)
    count = 600
    await produce(kafka.bootstrap, lone_events(count))
    deadline = time.monotonic() + 20
    while await metric(gw, BUFFERED) < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await gw.gateway.stop()
    assert await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) == count

    again: RunningGateway = await start_gateway(settings)
    await asyncio.sleep(3)  # a join, and time to read anything left uncommitted
    assert await metric(again, BUFFERED) == 0
    assert await metric(again, BUFFERED.replace("buffered", "duplicate")) == 0


async def test_readiness_reports_kafka(
    kafka: Tansu, make_settings: SettingsFactory, start_gateway: Start
) -> None:
    gw: RunningGateway = await start_gateway(
        make_settings({"kafka": kafka_config(kafka.bootstrap)})
    )
    status, ready = await gw.get("/readyz")
    assert (status, ready["checks"]) == (200, {"store": "up", "kafka": "up"})
    kafka.kill()
    status, problem = await gw.get("/readyz")
    assert (status, problem["checks"]["kafka"]) == (503, "down")
    assert "kafka is down" in problem["detail"]


async def test_an_unreachable_broker_fails_the_start_and_closes_what_started(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings({"kafka": kafka_config(f"127.0.0.1:{free_port()}")})
    with pytest.raises(BrokerError, match="cannot connect to Kafka"):
        async with Gateway(settings):
            pass


async def test_batches_persisted_while_an_offset_commit_is_out_are_committed_in_one_request(
    kafka: Tansu,
    make_settings: SettingsFactory,
    start_gateway: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow broker answer to the offset commit must not become what the intake waits for:
    the batches persisted meanwhile hand their offsets on, and one request commits them."""
    requests: list[dict[Any, int]] = []
    real_commit = AIOKafkaConsumer.commit

    async def slow_commit(self: Any, offsets: Any = None) -> None:
        requests.append(dict(offsets or {}))
        await asyncio.sleep(0.2)
        await real_commit(self, offsets)

    monkeypatch.setattr(AIOKafkaConsumer, "commit", slow_commit)
    settings = make_settings({"kafka": kafka_config(kafka.bootstrap, max_batch_records=20)})
    gw: RunningGateway = await start_gateway(settings)
    count = 1000
    await produce(kafka.bootstrap, lone_events(count))
    deadline = time.monotonic() + 30
    while await committed(kafka.bootstrap, "resume-gateway", [EVENTS]) < count:
        assert time.monotonic() < deadline, "the offsets did not all get committed"
        await asyncio.sleep(0.2)
    assert await metric(gw, BUFFERED) == count
    assert 0 < len(requests) < count / 20 / 2  # far fewer requests than batches of 20
    # each request only moves offsets forward, partition by partition
    latest: dict[Any, int] = {}
    for offsets in requests:
        for tp, offset in offsets.items():
            assert offset >= latest.get(tp, 0)
            latest[tp] = offset

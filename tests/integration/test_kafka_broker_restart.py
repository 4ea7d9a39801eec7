"""A broker restart on durable storage (Tansu on S3, served by moto) loses nothing: the
gateway rides through the outage without a restart of its own, committed offsets survive (no
record is read twice after a quiet restart), and records acknowledged just before a crash of
the broker are all consumed once it is back. Outcomes published on either side are kept, and
the gateway still stops cleanly with the broker gone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.devkafka import ensure_topics
from gateway.sandbox.workato_jobs import Job
from gateway.sandbox.workato_state import WorkatoSandbox
from tests.conftest import RunningGateway, SettingsFactory
from tests.kafka_broker import (
    EVENTS,
    OUTCOMES,
    PARTITIONS,
    TOPICS,
    WAITS,
    Message,
    MotoS3,
    Tansu,
    committed,
    event_value,
    kafka_config,
    produce,
    read_topic,
    wait_value,
)

pytestmark = pytest.mark.timeout(90)
Start = Any
HALF = 20  # the sandbox keeps Workato's 60 resumes per minute


def records(jobs: list[Job], start: int) -> list[Message]:
    out = []
    for i, job in enumerate(jobs, start):
        key = f"order-{i}"
        out.append(Message(WAITS, key.encode(), wait_value("acme", key, job.resume.token)))
        out.append(Message(EVENTS, key.encode(), event_value("acme", f"e-{i}", key)))
    return out


async def until_async(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_broker_restarts_on_durable_storage_lose_nothing(
    tmp_path: Path,
    moto_s3: MotoS3,
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    broker = Tansu(tmp_path, storage="s3://tansu/", env=moto_s3.tansu_env())
    broker.start()
    try:
        await asyncio.wait_for(ensure_topics(broker.bootstrap, TOPICS, PARTITIONS), 15)
        config = kafka_config(broker.bootstrap, outcomes_topic=OUTCOMES)
        gw: RunningGateway = await start_gateway(make_settings({"kafka": config}))
        await ride_through_restarts(broker, gw, workato)
        # And the gateway still shuts down cleanly, and promptly, with the broker gone.
        broker.stop()
        started = time.monotonic()
        await asyncio.wait_for(gw.gateway.stop(), 20)
        assert time.monotonic() - started < 10
    finally:
        broker.stop()


async def ride_through_restarts(broker: Tansu, gw: RunningGateway, workato: WorkatoSandbox) -> None:
    jobs = [workato.create_job() for _ in range(2 * HALF)]
    first, second = jobs[:HALF], jobs[HALF:]

    async def all_committed(n: int) -> bool:
        return await committed(broker.bootstrap, "resume-gateway", [WAITS, EVENTS]) >= n

    # 1. A quiet restart: everything consumed and committed, then SIGKILL and start again.
    await produce(broker.bootstrap, records(first, 0))
    await until_async(lambda: all_committed(2 * HALF), 20, "first half not committed")
    broker.kill()
    broker.start()
    # read on from the committed offsets: a marker behind the first half comes through, and
    # nothing of the first half came twice
    registry = gw.gateway.metrics.registry

    def seen(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"tenant": "acme", **labels}) or 0.0

    buffered = seen("gateway_events_total", source="kafka", outcome="buffered")
    marker = event_value("acme", "marker", "no-wait-for-this")
    await produce(broker.bootstrap, [Message(EVENTS, b"marker", marker)])

    async def marker_read() -> bool:
        return seen("gateway_events_total", source="kafka", outcome="buffered") > buffered

    await until_async(marker_read, 20, "the marker was not read after the quiet restart")
    assert seen("gateway_events_total", source="kafka", outcome="duplicate") == 0
    assert seen("gateway_waits_total", outcome="repeat") == 0
    # 2. A crash right after records were acknowledged, while the gateway reads them.
    await produce(broker.bootstrap, records(second, HALF))
    broker.kill()
    await asyncio.sleep(1.0)
    broker.start()

    deadline = time.monotonic() + 40
    while not all(job.resume.count for job in jobs):
        assert time.monotonic() < deadline, "records were lost across the broker restarts"
        await asyncio.sleep(0.1)
    assert [job.resume.attempts for job in jobs] == [1] * len(jobs)  # none a second time
    await until_async(lambda: all_committed(4 * HALF + 1), 20, "offsets not committed")
    status, ready = await gw.get("/readyz")
    assert (status, ready["checks"]["kafka"]) == (200, "up")

    outcomes = await read_topic(broker.bootstrap, OUTCOMES, len(jobs), timeout_s=30)
    keys = {r.key.decode() for r in outcomes}
    assert keys == {f"order-{i}" for i in range(len(jobs))}
    assert {json.loads(r.value)["state"] for r in outcomes} == {"delivered"}

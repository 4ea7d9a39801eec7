"""The Kafka source across crashes, as operators run it: gateway CLIs in subprocesses sharing
one SQLite file, a real broker, the Workato sandbox counting resumes.

* SIGKILL mid-stream: the committed offsets never run ahead of what the store holds, and the
  restarted gateway re-reads exactly the persisted-but-uncommitted records as duplicates;
  every job is resumed once.
* Two gateways in one group split the partitions; when one is SIGKILLed the other takes its
  partitions over; every job is resumed once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.workato_jobs import Job
from gateway.sandbox.workato_state import WorkatoSandbox, WorkatoSandboxSettings
from tests.conftest import WORKATO_TOKEN
from tests.e2e.conftest import Process, free_port
from tests.kafka_broker import (
    EVENTS,
    WAITS,
    Message,
    Tansu,
    committed,
    event_value,
    produce,
    wait_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
GROUP = "resume-gateway"


@pytest.fixture
def workato() -> WorkatoSandbox:
    """A sandbox without Workato's 60/min limit: these tests are about intake, not pacing."""
    limits = WorkatoSandboxSettings(api_tokens=[WORKATO_TOKEN], rate_limit_per_minute=10**6)
    return WorkatoSandbox(limits)


class Cluster:
    """Gateway processes of one deployment: same database, token key and Kafka group."""

    def __init__(self, tmp: Path, bootstrap: str, sandbox_url: str, processes: list[Process]):
        self.tmp = tmp
        self.db = tmp / "gateway.db"
        self._bootstrap = bootstrap
        self._sandbox_url = sandbox_url
        self._key = base64.b64encode(os.urandom(32)).decode()
        self._processes = processes
        self._started = 0

    def config(self, port: int) -> Path:
        path = self.tmp / f"gateway-{port}.toml"
        path.write_text(f"""
[server]
port = {port}

[store]
url = "sqlite:///{self.db}"

[blobs]
url = "file:///{self.tmp / "blobs"}"

[delivery]
poll_interval_s = 0.05
sweep_interval_s = 0.5
request_timeout_s = 2.0
lease_s = 3.0
backoff_base_s = 0.1
backoff_cap_s = 0.5

[security]
token_keys = [{{ id = "k1", key = "{self._key}" }}]

[logging]
format = "json"
level = "info"

[kafka]
bootstrap_servers = ["{self._bootstrap}"]
session_timeout_s = 2.0
heartbeat_interval_s = 0.3
fetch_wait_s = 0.1
max_batch_records = 50

[[tenants]]
name = "acme"
base_url = "{self._sandbox_url}"
api_token = "{WORKATO_TOKEN}"
rate_limit_per_minute = 1000000
""")
        return path

    async def start(self) -> Gateway:
        self._started += 1
        port = free_port()
        log = self.tmp / f"gateway-{self._started}.log"
        process = Process(["run", "--config", str(self.config(port))], log)
        self._processes.append(process)
        gateway = Gateway(process, f"http://127.0.0.1:{port}")
        await gateway.until_ready()
        return gateway


class Gateway:
    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = url

    async def until_ready(self, timeout_s: float = 20.0) -> None:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                assert self.process.proc.poll() is None, self.process.log_path.read_text()[-2000:]
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.url} not ready within {timeout_s}s")

    async def metric(self, line: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        rows = [r for r in text.splitlines() if r.startswith(line + " ")]
        return float(rows[0].split()[-1]) if rows else 0.0

    def log_lines(self) -> int:
        return self.process.log_path.read_bytes().count(b"\n")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        lines = self.process.log_path.read_text().splitlines()
        docs = [json.loads(line) for line in lines if line.startswith("{")]
        return [doc for doc in docs if doc.get("event") == event]


def metric_line(outcome: str) -> str:
    return f'gateway_events_total{{outcome="{outcome}",source="kafka",tenant="acme"}}'


def records(jobs: list[Job], start: int = 0) -> list[Message]:
    """A registration and an event per job, interleaved, keyed by correlation key."""
    out = []
    for i, job in enumerate(jobs, start):
        key = f"order-{i}"
        out.append(Message(WAITS, key.encode(), wait_value("acme", key, job.resume.token)))
        out.append(
            Message(EVENTS, key.encode(), event_value("acme", f"e-{i}", key, b'{"i": %d}' % i))
        )
    return out


async def produce_slowly(bootstrap: str, messages: list[Message], chunks: int) -> None:
    """A stream rather than a burst, so that a kill lands in the middle of it."""
    size = -(-len(messages) // chunks)
    for at in range(0, len(messages), size):
        await produce(bootstrap, messages[at : at + size])
        await asyncio.sleep(0.05)


async def until(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def stored(db: Path) -> tuple[int, int]:
    """(waits, kafka events) in the database file, read after the writer died."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        waits = conn.execute("SELECT COUNT(*) FROM waits").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events WHERE source = 'kafka'").fetchone()[0]
    return int(waits), int(events)


def assert_resumed_once(jobs: list[Job]) -> None:
    """Every token named by exactly one request: ``count`` alone never passes 1 (a second
    request is refused, and counted in ``rejected``)."""
    counts = [job.resume.count for job in jobs]
    assert min(counts) == 1, f"{counts.count(0)} jobs were never resumed"
    attempts = [job.resume.attempts for job in jobs]
    assert max(attempts) == 1, f"{sum(a > 1 for a in attempts)} jobs were resumed twice"


async def test_sigkill_mid_stream_then_restart_loses_nothing_and_resumes_nothing_twice(
    tmp_path: Path,
    kafka: Tansu,
    workato: WorkatoSandbox,
    workato_url: str,
    processes: list[Process],
) -> None:
    cluster = Cluster(tmp_path, kafka.bootstrap, workato_url, processes)
    jobs = [workato.create_job() for _ in range(2000)]
    # A backlog, so that the kill finds the consumer busy with batches in flight.
    await produce(kafka.bootstrap, records(jobs))
    first = await cluster.start()
    await until(lambda: first.log_lines() >= 1000, 30, "nothing was consumed")
    first.process.kill()
    killed_committed = {t: await committed(kafka.bootstrap, GROUP, [t]) for t in (WAITS, EVENTS)}
    waits, events = stored(cluster.db)
    assert killed_committed[EVENTS] < len(jobs), "the kill must land mid-stream"
    # Invariant 1: an offset is committed only after its record is in the store.
    assert killed_committed[WAITS] <= waits
    assert killed_committed[EVENTS] <= events

    second = await cluster.start()
    await until(lambda: all(j.resume.count for j in jobs), 60, "not every job was resumed")
    assert_resumed_once(jobs)
    # Exactly the persisted-but-uncommitted records came back, recognised as such.
    redelivered = {
        'gateway_waits_total{outcome="repeat",tenant="acme"}': waits - killed_committed[WAITS],
        metric_line("duplicate"): events - killed_committed[EVENTS],
    }
    assert sum(redelivered.values()) > 0, "the kill should catch a batch before its commit"
    deadline = time.monotonic() + 10
    while [await second.metric(m) for m in redelivered] != list(redelivered.values()):
        assert time.monotonic() < deadline, redelivered
        await asyncio.sleep(0.1)
    assert second.process.terminate() == 0, "SIGTERM is a clean shutdown"
    assert await committed(kafka.bootstrap, GROUP, [WAITS, EVENTS]) == 2 * len(jobs)
    assert stored(cluster.db) == (len(jobs), len(jobs))


async def test_two_gateways_split_the_partitions_and_one_takes_over_when_the_other_dies(
    tmp_path: Path,
    kafka: Tansu,
    workato: WorkatoSandbox,
    workato_url: str,
    processes: list[Process],
) -> None:
    cluster = Cluster(tmp_path, kafka.bootstrap, workato_url, processes)
    first, second = await cluster.start(), await cluster.start()

    def assigned(gw: Gateway) -> set[str]:
        latest = gw.log_events("kafka.partitions_assigned")
        return set(latest[-1]["partitions"]) if latest else set()

    await until(
        lambda: (
            len(assigned(first)) == len(assigned(second)) == 4
            and not assigned(first) & assigned(second)
        ),
        20,
        "the two gateways did not split the 8 partitions",
    )
    jobs = [workato.create_job() for _ in range(1200)]
    half = len(jobs) // 2
    await produce(kafka.bootstrap, records(jobs[:half]))
    await until(lambda: all(j.resume.count for j in jobs[:half]), 30, "first half not resumed")
    for gw in (first, second):
        accepted = [e for e in gw.log_events("event.accepted") if e["source"] == "kafka"]
        assert accepted, "each gateway consumed its share"

    first.process.kill()
    stream = asyncio.create_task(produce_slowly(kafka.bootstrap, records(jobs[half:], half), 10))
    await until(lambda: len(assigned(second)) == 8, 20, "the survivor did not take over")
    await stream
    await until(lambda: all(j.resume.count for j in jobs), 60, "not every job was resumed")
    assert_resumed_once(jobs)
    assert second.process.terminate() == 0
    assert await committed(kafka.bootstrap, GROUP, [WAITS, EVENTS]) == 2 * len(jobs)

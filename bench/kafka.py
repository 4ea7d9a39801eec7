"""Scenario 3, Kafka intake: events consumed → persisted → correlated per second.

100,000 ~1 KB completion events wait in ``resume.events`` (4 partitions) on a local Tansu
broker; half of them match a wait registered beforehand through ``resume.waits``. The gateway
(SQLite ``synchronous = full``, one store transaction per fetched batch, offsets committed
after it) consumes the backlog; the baseline is a raw aiokafka consumer (``kafka_baseline.py``)
reading the same topic in its own group, ``json.loads`` per record and a commit per fetch. The
baseline runs before and after the gateway, as in scenario 1.

Both sides are timed the same way, from outside: the bench polls the group's committed offsets
(which the gateway advances only after the store commit), from the first commit to the last,
so the group join (about a second on Tansu) is not counted for either.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.console import note
from bench.cpu import CpuMeter, CpuSample
from bench.httpload import Pool, encode_request
from bench.kafka_config import (
    HEARTBEAT_INTERVAL_S,
    MAX_BATCH_RECORDS,
    PARTITIONS,
    SESSION_TIMEOUT_S,
)
from bench.messages import EVENT_DATA
from bench.procs import HOST, Server, ServerFailed, Supervisor, free_port, wait_ready
from bench.stack import PRODUCTION_RATE_PER_MINUTE, gateway_toml, start_sandbox
from gateway.devkafka import ensure_topics

EVENTS, WAITS, DLQ = "resume.events", "resume.waits", "resume.dlq"
GATEWAY_GROUP = "resume-gateway"
TENANT = "bench"  # the tenant of bench.stack.gateway_toml
POLL_S = 0.02
PRODUCE_CHUNK = 10_000
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class KafkaPlan:
    events: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Consumed:
    """A consumer's run through the backlog, timed from its first commit to its last."""

    records: int
    seconds: float
    cpu_percent: dict[str, float]

    @property
    def per_s(self) -> float:
        return self.records / self.seconds


class Progress:
    """A consumer group's committed offsets on one topic (asked by a member that never joins:
    Tansu garbles the admin API's answer to the same question)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        self._partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    async def __aenter__(self) -> Progress:
        await self._probe.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._probe.stop()

    async def committed(self) -> int:
        offsets = await asyncio.gather(*(self._probe.committed(p) for p in self._partitions))
        return sum(o for o in offsets if o is not None and o > 0)

    async def timed(self, total: int, meter: CpuMeter, timeout_s: float, proc: Server) -> Consumed:
        """Poll until ``total`` records are committed; time the span from the first commit."""
        deadline = time.monotonic() + timeout_s
        first: tuple[int, CpuSample] | None = None
        while True:
            done = await self.committed()
            if first is None and done > 0:
                first = (done, meter.sample())
            if done >= total and first is not None:
                last = meter.sample()
                seconds = last.wall_s - first[1].wall_s
                return Consumed(total - first[0], seconds, meter.percent(first[1], last))
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise ServerFailed(f"{proc.name}: {done} of {total} committed\n{proc.log_tail()}")
            await asyncio.sleep(POLL_S)


async def start_broker(procs: Supervisor) -> Server:
    port = free_port()
    server = procs.start("broker", "bench.broker", ["--port", str(port)], port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return server
    raise ServerFailed(f"the broker did not listen:\n{server.log_tail()}")


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> float:
    """Send (key, value) pairs; records per second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    started = time.perf_counter()
    try:
        for at in range(0, len(values), PRODUCE_CHUNK):
            chunk = values[at : at + PRODUCE_CHUNK]
            sent = [await producer.send(topic, value, key=key) for key, value in chunk]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(values) / (time.perf_counter() - started)


def waits(count: int) -> list[tuple[bytes, bytes]]:
    body = b'{"tenant":"%s","key":"m-%d","resume_token":"bench-token-%d"}'
    return [(b"m-%d" % i, body % (TENANT.encode(), i, i)) for i in range(count)]


def events(count: int) -> list[tuple[bytes, bytes]]:
    """Even events take the next registered key (they match); odd ones a key of their own."""
    body = b'{"tenant":"%s","id":"k-%d","key":"%s","status":"succeeded","data":%s}'
    out = []
    for i in range(count):
        key = b"m-%d" % (i // 2) if i % 2 == 0 else b"b-%d" % i
        out.append((key, body % (TENANT.encode(), i, key, EVENT_DATA)))
    return out


def kafka_toml(bootstrap: str) -> str:
    return f"""
[kafka]
bootstrap_servers = ["{bootstrap}"]
session_timeout_s = {SESSION_TIMEOUT_S}
heartbeat_interval_s = {HEARTBEAT_INTERVAL_S}
fetch_wait_s = 0.1
max_batch_records = {MAX_BATCH_RECORDS}
"""


class KafkaGateway:
    """The gateway configured for the scenario; started twice on the same database."""

    def __init__(self, procs: Supervisor, workdir: Path, sandbox_url: str, bootstrap: str):
        self.port = free_port()
        self._procs = procs
        self._config = workdir / "gateway-kafka.toml"
        toml = gateway_toml(
            self.port, workdir / "gateway-kafka.db", sandbox_url, PRODUCTION_RATE_PER_MINUTE
        )
        self._config.write_text(toml + kafka_toml(bootstrap))

    async def start(self) -> Server:
        server = self._procs.start(
            "gateway", "gateway", ["run", "--config", str(self._config)], self.port
        )
        await wait_ready(server, "/readyz")
        return server

    async def outcomes(self) -> dict[str, float]:
        """Kafka events by outcome, from ``/metrics``."""
        pool = Pool(HOST, self.port)
        try:
            reply = await pool.request(encode_request("GET", f"{HOST}:{self.port}", "/metrics"))
        finally:
            pool.close()
        counts: dict[str, float] = {}
        for line in reply.body.decode().splitlines():
            if line.startswith("gateway_events_total{") and 'source="kafka"' in line:
                outcome = line.split('outcome="')[1].split('"')[0]
                counts[outcome] = counts.get(outcome, 0.0) + float(line.split()[-1])
        return counts


def bootstrap_of(broker: Server) -> str:
    return f"{HOST}:{broker.port}"


async def baseline_run(procs: Supervisor, broker: Server, name: str, plan: KafkaPlan) -> Consumed:
    """The raw consumer through the whole backlog, in a group of its own."""
    group = f"raw-{name}"
    args = ["--bootstrap", bootstrap_of(broker), "--topic", EVENTS, "--group", group]
    args += ["--count", str(plan.events), "--max-records", str(MAX_BATCH_RECORDS)]
    server = procs.start(f"kafka-baseline-{name}", "bench.kafka_baseline", args, 0)
    meter = CpuMeter({"consumer": server.pid, "broker": broker.pid})
    async with Progress(bootstrap_of(broker), group, EVENTS) as progress:
        result = await progress.timed(plan.events, meter, plan.timeout_s, server)
    procs.stop(server)
    return result


@dataclass(frozen=True, slots=True)
class GatewayKafka:
    result: Consumed
    outcomes: dict[str, float]
    waits_per_s: float
    produce_per_s: float


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the set-up left: a gateway whose waits are registered, events in the topic."""

    gateway: KafkaGateway
    waits_per_s: float
    produce_per_s: float


async def set_up(procs: Supervisor, broker: Server, workdir: Path, plan: KafkaPlan) -> Backlog:
    """Waits registered through Kafka (untimed), then the events' backlog produced."""
    sandbox = await start_sandbox(procs)
    bootstrap = bootstrap_of(broker)
    gateway = KafkaGateway(procs, workdir, sandbox.server.url, bootstrap)
    matched = plan.events // 2
    note(f"kafka: registering {matched:,} waits through {WAITS}")
    await produce(bootstrap, WAITS, waits(matched))
    server = await gateway.start()
    meter = CpuMeter({"gateway": server.pid})
    async with Progress(bootstrap, GATEWAY_GROUP, WAITS) as progress:
        registered = await progress.timed(matched, meter, plan.timeout_s, server)
    procs.stop(server)  # SIGTERM: commits, leaves the group
    note(f"kafka: producing {plan.events:,} events into {EVENTS}")
    produce_per_s = await produce(bootstrap, EVENTS, events(plan.events))
    return Backlog(gateway, registered.per_s, produce_per_s)


async def gateway_run(
    procs: Supervisor, broker: Server, plan: KafkaPlan, backlog: Backlog
) -> GatewayKafka:
    server = await backlog.gateway.start()
    meter = CpuMeter({"gateway": server.pid, "broker": broker.pid})
    async with Progress(bootstrap_of(broker), GATEWAY_GROUP, EVENTS) as progress:
        result = await progress.timed(plan.events, meter, plan.timeout_s, server)
    outcomes = await backlog.gateway.outcomes()
    procs.stop(server)
    return GatewayKafka(result, outcomes, backlog.waits_per_s, backlog.produce_per_s)


async def run_kafka(plan: KafkaPlan, workdir: Path) -> dict[str, float]:
    """Baseline, gateway, baseline again, all on one broker; the figures of scenario 3."""
    with Supervisor(workdir) as procs:
        broker = await start_broker(procs)
        await ensure_topics(bootstrap_of(broker), [EVENTS, WAITS, DLQ], PARTITIONS)
        backlog = await set_up(procs, broker, workdir, plan)
        note("kafka: raw aiokafka consumer (before)")
        before = await baseline_run(procs, broker, "before", plan)
        note("kafka: gateway through the backlog")
        gateway = await gateway_run(procs, broker, plan, backlog)
        note("kafka: raw aiokafka consumer (after)")
        after = await baseline_run(procs, broker, "after", plan)
    return kafka_figures(before, gateway, after)


def kafka_figures(before: Consumed, gateway: GatewayKafka, after: Consumed) -> dict[str, float]:
    result = gateway.result
    baseline = (before.per_s + after.per_s) / 2
    matched = gateway.outcomes.get("matched", 0.0)
    counted = sum(gateway.outcomes.values())
    return {
        "kafka_events_per_s": result.per_s,
        "kafka_baseline_events_per_s": baseline,
        "kafka_ratio": result.per_s / baseline,
        "kafka_baseline_before_events_per_s": before.per_s,
        "kafka_baseline_after_events_per_s": after.per_s,
        "kafka_baseline_spread": abs(before.per_s - after.per_s) / baseline,
        "kafka_window_s": result.seconds,
        "kafka_events_counted": counted,
        "kafka_matched_fraction": matched / max(1.0, counted),
        "kafka_gateway_cpu_us_per_event": _us_per_event(result, "gateway"),
        "kafka_baseline_cpu_us_per_event": (
            _us_per_event(before, "consumer") + _us_per_event(after, "consumer")
        )
        / 2,
        "kafka_wait_registrations_per_s": gateway.waits_per_s,
        "kafka_produce_events_per_s": gateway.produce_per_s,
        **{f"kafka_cpu_{name}_pct": pct for name, pct in result.cpu_percent.items()},
        **{
            f"kafka_baseline_cpu_{name}_pct": (pct + after.cpu_percent[name]) / 2
            for name, pct in before.cpu_percent.items()
        },
    }


def _us_per_event(run: Consumed, process: str) -> float:
    return run.cpu_percent[process] * 1e4 / run.per_s

"""Scenario 3, Kafka intake: events consumed → persisted → correlated per second.

100,000 ~1 KB completion events wait in each of four window topics (``resume.events.0`` …
``.3``, 4 partitions each) on a local Tansu broker; half of them match a wait registered
beforehand through ``resume.waits``. The gateway (SQLite ``synchronous = full``, one store
transaction per fetched batch, offsets committed after it) consumes one window topic at a time,
restarted on the same database with that topic configured; the baseline is a raw aiokafka
consumer (``kafka_baseline.py``, ``json.loads`` per record and a commit per fetch), in a group
of its own for each window: the first reads topic 0, and each one after a gateway window reads
the topic that window read. As in scenario 1, each gateway window is compared with the mean of
the two raw windows around it, and ``kafka_ratio`` is the median of those paired ratios: one
raw run before the gateway and one after, a minute apart, differed by up to 30 %.

Both sides are timed the same way, from outside: the bench polls the group's committed offsets
(which the gateway advances only after the store commit) and times the steady middle of each
window (``Progress.timed``), so neither the group join (about a second on Tansu) nor the
filling and draining of the gateway's pipeline is counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.console import note
from bench.cpu import CpuMeter, CpuSample, weighted_percent
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
TIMED_FROM, TIMED_TO = 0.2, 0.8
PRODUCE_CHUNK = 10_000
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class KafkaPlan:
    per_window: int
    """Events in each window topic."""
    timeout_s: float
    windows: int = 4
    """Gateway windows, each on a window topic of its own, between raw-consumer windows."""

    @property
    def events(self) -> int:
        return self.per_window * self.windows


def window_topic(window: int) -> str:
    return f"{EVENTS}.{window}"


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

    async def timed(
        self, total: int, meter: CpuMeter, timeout_s: float, proc: Server, *, steady: bool = True
    ) -> Consumed:
        """Poll until ``total`` records are committed. ``steady``: time the middle of the run,
        from the first poll past ``TIMED_FROM`` of ``total`` to a later one past ``TIMED_TO``,
        and fail if the polls caught less than half of that span. The gateway decodes up to 16
        batches ahead of its commits: timed from its first commit, the decoding done before it
        went uncounted, and the shorter the run the more that flattered it; in the middle, as
        many records are in flight at both ends. Otherwise (a context figure): from the first
        commit seen to the last."""
        low, high = (TIMED_FROM, TIMED_TO) if steady else (0.0, 1.0)
        deadline = time.monotonic() + timeout_s
        start: tuple[int, CpuSample] | None = None
        end: tuple[int, CpuSample] | None = None
        while True:
            done = await self.committed()
            if start is None:
                if done > 0 and done >= total * low:
                    start = (done, meter.sample())
            elif end is None and done >= total * high:
                end = (done, meter.sample())
            if done >= total and start is not None and end is not None:
                records = end[0] - start[0]
                if steady and records < total * (high - low) / 2:
                    raise ServerFailed(f"{proc.name}: committed too fast to time ({records})")
                seconds = end[1].wall_s - start[1].wall_s
                return Consumed(records, seconds, meter.percent(start[1], end[1]))
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
    """Send (key, value) pairs; the seconds it took."""
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
    return time.perf_counter() - started


def waits(count: int) -> list[tuple[bytes, bytes]]:
    body = b'{"tenant":"%s","key":"m-%d","resume_token":"bench-token-%d"}'
    return [(b"m-%d" % i, body % (TENANT.encode(), i, i)) for i in range(count)]


def events(start: int, count: int) -> list[tuple[bytes, bytes]]:
    """Events ``start`` to ``start + count``: even ones take the next registered key (they
    match); odd ones a key of their own."""
    body = b'{"tenant":"%s","id":"k-%d","key":"%s","status":"succeeded","data":%s}'
    out = []
    for i in range(start, start + count):
        key = b"m-%d" % (i // 2) if i % 2 == 0 else b"b-%d" % i
        out.append((key, body % (TENANT.encode(), i, key, EVENT_DATA)))
    return out


def kafka_toml(bootstrap: str, events_topic: str) -> str:
    return f"""
[kafka]
bootstrap_servers = ["{bootstrap}"]
events_topic = "{events_topic}"
session_timeout_s = {SESSION_TIMEOUT_S}
heartbeat_interval_s = {HEARTBEAT_INTERVAL_S}
fetch_wait_s = 0.1
max_batch_records = {MAX_BATCH_RECORDS}
"""


class KafkaGateway:
    """The gateway configured for the scenario; started for the set-up, then once per window,
    always on the same database."""

    def __init__(self, procs: Supervisor, workdir: Path, sandbox_url: str, bootstrap: str):
        self.port = free_port()
        self._procs = procs
        self._workdir = workdir
        self._bootstrap = bootstrap
        self._toml = gateway_toml(
            self.port, workdir / "gateway-kafka.db", sandbox_url, PRODUCTION_RATE_PER_MINUTE
        )

    async def start(self, events_topic: str) -> Server:
        config = self._workdir / f"gateway-kafka-{events_topic}.toml"
        config.write_text(self._toml + kafka_toml(self._bootstrap, events_topic))
        server = self._procs.start(
            "gateway", "gateway", ["run", "--config", str(config)], self.port
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


async def baseline_run(
    procs: Supervisor, broker: Server, name: str, topic: str, plan: KafkaPlan
) -> Consumed:
    """The raw consumer through a window topic, in a group of its own."""
    group = f"raw-{name}"
    args = ["--bootstrap", bootstrap_of(broker), "--topic", topic, "--group", group]
    args += ["--count", str(plan.per_window), "--max-records", str(MAX_BATCH_RECORDS)]
    server = procs.start(f"kafka-baseline-{name}", "bench.kafka_baseline", args, 0)
    meter = CpuMeter({"consumer": server.pid, "broker": broker.pid})
    async with Progress(bootstrap_of(broker), group, topic) as progress:
        result = await progress.timed(plan.per_window, meter, plan.timeout_s, server)
    procs.stop(server)
    return result


@dataclass(frozen=True, slots=True)
class GatewayKafka:
    result: Consumed
    outcomes: dict[str, float]


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the set-up left: a gateway whose waits are registered, events in the window
    topics."""

    gateway: KafkaGateway
    waits_per_s: float
    produce_per_s: float


async def set_up(procs: Supervisor, broker: Server, workdir: Path, plan: KafkaPlan) -> Backlog:
    """Waits registered through Kafka (untimed), then the events produced, a window's share
    into each window topic."""
    sandbox = await start_sandbox(procs)
    bootstrap = bootstrap_of(broker)
    gateway = KafkaGateway(procs, workdir, sandbox.server.url, bootstrap)
    matched = plan.events // 2
    note(f"kafka: registering {matched:,} waits through {WAITS}")
    await produce(bootstrap, WAITS, waits(matched))
    server = await gateway.start(EVENTS)  # an events topic that stays empty
    meter = CpuMeter({"gateway": server.pid})
    async with Progress(bootstrap, GATEWAY_GROUP, WAITS) as progress:
        registered = await progress.timed(matched, meter, plan.timeout_s, server, steady=False)
    procs.stop(server)  # SIGTERM: commits, leaves the group
    note(f"kafka: producing {plan.events:,} events into {plan.windows} window topics")
    per, producing_s = plan.per_window, 0.0
    for window in range(plan.windows):
        producing_s += await produce(bootstrap, window_topic(window), events(window * per, per))
    produce_per_s = plan.events / producing_s
    return Backlog(gateway, registered.per_s, produce_per_s)


async def gateway_run(
    procs: Supervisor, broker: Server, plan: KafkaPlan, backlog: Backlog, window: int
) -> GatewayKafka:
    """The gateway through one window topic; its outcomes are this process's only."""
    topic = window_topic(window)
    server = await backlog.gateway.start(topic)
    meter = CpuMeter({"gateway": server.pid, "broker": broker.pid})
    async with Progress(bootstrap_of(broker), GATEWAY_GROUP, topic) as progress:
        result = await progress.timed(plan.per_window, meter, plan.timeout_s, server)
    outcomes = await backlog.gateway.outcomes()
    procs.stop(server)
    return GatewayKafka(result, outcomes)


async def run_kafka(plan: KafkaPlan, workdir: Path) -> dict[str, float]:
    """Raw consumer and gateway windows, alternating, all on one broker; the figures of
    scenario 3."""
    with Supervisor(workdir) as procs:
        broker = await start_broker(procs)
        topics = [EVENTS, WAITS, DLQ] + [window_topic(w) for w in range(plan.windows)]
        await ensure_topics(bootstrap_of(broker), topics, PARTITIONS)
        backlog = await set_up(procs, broker, workdir, plan)
        note(f"kafka: {plan.windows} gateway windows between raw aiokafka consumer windows")
        raws = [await baseline_run(procs, broker, "0", window_topic(0), plan)]
        gateways: list[GatewayKafka] = []
        for window in range(plan.windows):
            gateways.append(await gateway_run(procs, broker, plan, backlog, window))
            name, topic = str(window + 1), window_topic(window)
            raws.append(await baseline_run(procs, broker, name, topic, plan))
    return kafka_figures(raws, gateways, backlog)


def kafka_figures(
    raws: list[Consumed], gateways: list[GatewayKafka], backlog: Backlog
) -> dict[str, float]:
    """``raws`` has one window more than ``gateways``: gateway window n is compared with the
    mean of raw windows n and n + 1."""
    results = [gateway.result for gateway in gateways]
    ratios = [
        result.per_s / ((raws[n].per_s + raws[n + 1].per_s) / 2) for n, result in enumerate(results)
    ]
    gateway, baseline = _joined(results), _joined(raws)
    raw_rates = [raw.per_s for raw in raws]
    outcomes = sum((Counter(run.outcomes) for run in gateways), Counter[str]())
    counted = sum(outcomes.values())
    return {
        "kafka_ratio": statistics.median(ratios),
        "kafka_ratio_min": min(ratios),
        "kafka_ratio_max": max(ratios),
        "kafka_windows": len(ratios),
        "kafka_events_per_s": gateway.per_s,
        "kafka_baseline_events_per_s": baseline.per_s,
        "kafka_baseline_spread": (max(raw_rates) - min(raw_rates)) / statistics.mean(raw_rates),
        "kafka_window_s": gateway.seconds / len(results),
        "kafka_events_counted": counted,
        "kafka_matched_fraction": outcomes.get("matched", 0.0) / max(1.0, counted),
        "kafka_gateway_cpu_us_per_event": _us_per_event(gateway, "gateway"),
        "kafka_baseline_cpu_us_per_event": _us_per_event(baseline, "consumer"),
        "kafka_wait_registrations_per_s": backlog.waits_per_s,
        "kafka_produce_events_per_s": backlog.produce_per_s,
        **{f"kafka_cpu_{name}_pct": pct for name, pct in gateway.cpu_percent.items()},
        **{f"kafka_baseline_cpu_{name}_pct": pct for name, pct in baseline.cpu_percent.items()},
    }


def _joined(runs: list[Consumed]) -> Consumed:
    """Several windows as one: records and seconds summed, CPU weighted by each one's length."""
    return Consumed(
        sum(run.records for run in runs),
        sum(run.seconds for run in runs),
        weighted_percent([(run.cpu_percent, run.seconds) for run in runs]),
    )


def _us_per_event(run: Consumed, process: str) -> float:
    return run.cpu_percent[process] * 1e4 / run.per_s

"""Scenario 5 (opt-in, ``--only instructions``): CPU instructions per ingested event.

The throughput ratios swing by a quarter from run to run on this shared machine (the baseline's
own two runs often differ by 20 %), too much to tell a 5 % change from noise. Instructions do
not swing: the gateway and the bare aiohttp handler run under Valgrind's callgrind, counting
only while the same events are posted to them (``callgrind_control -i on|off``), so a rerun
agrees to about 0.3 %. The cost ratio (the gateway's instructions per event ÷ the baseline's
per request) is about the inverse of ``ingest_ratio``, whose target 0.5 is a cost ratio of 2,
but leaves out what instructions miss: kernel time (the gateway's fsyncs), cache misses,
thread hand-offs. One quirk: ``rep stosb`` counts once per byte, so SQLite's page zeroing
weighs more than it costs.

A third count needs no server or broker: ``kafka_work.py`` decodes Kafka records and ingests
them in batches of 1,000, the gateway's own work once aiokafka has fetched them.

Under callgrind a server runs about 60 times slower, so the load generator keeps all 64
requests in flight and the gateway's group commits are larger than in scenario 1: its store
costs less per event here than there. Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.console import note
from bench.httpload import Pool, Reply
from bench.ingest import EventMix
from bench.load import fan_out
from bench.messages import Api, outcome
from bench.procs import REPO_ROOT, Supervisor, free_port, wait_ready
from bench.stack import (
    PRODUCTION_RATE_PER_MINUTE,
    api_of,
    register_waits,
    start_gateway,
    start_sandbox,
)
from bench.stats import ratio

CONCURRENCY = 64
WARMUP_EVENTS = 300
STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class InstructionsPlan:
    events: int
    kafka_events: int


class Callgrind:
    """One server under callgrind, counting only between ``start()`` and ``stop()``."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.out = workdir / f"{name}.callgrind"
        self.wrapper = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
        ]

    def start(self, pid: int) -> None:
        self._control(pid, "on")

    def stop(self, pid: int) -> None:
        self._control(pid, "off")

    @staticmethod
    def _control(pid: int, state: str) -> None:
        subprocess.run(
            ["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True
        )

    def total(self) -> int:
        """The instructions counted (the file is written when the server exits)."""
        for line in reversed(self.out.read_text().splitlines()):
            if line.startswith("totals:"):  # the file's last line; "summary:" heads it, as 0
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {self.out}")


def require_valgrind() -> None:
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"the instructions scenario needs {', '.join(missing)}: apt-get install valgrind"
        )


async def post_all(api: Api, requests: list[bytes]) -> list[Reply]:
    pool = Pool(api.host, api.port)
    try:
        return await fan_out(pool, requests, CONCURRENCY)
    finally:
        pool.close()


def _accepted(replies: list[Reply], wanted: set[str]) -> None:
    refused = [outcome(r) for r in replies if outcome(r) not in wanted]
    if refused:
        raise RuntimeError(f"{len(refused)} events were not accepted, e.g. {refused[0]}")


async def baseline_instructions(plan: InstructionsPlan, workdir: Path) -> float:
    """Instructions per request of the bare handler."""
    counter = Callgrind(workdir, "baseline")
    with Supervisor(workdir) as procs:
        port = free_port()
        args = ["--port", str(port)]
        server = procs.start("baseline", "bench.baseline_server", args, port, counter.wrapper)
        await wait_ready(server, "/healthz", STARTUP_TIMEOUT_S)
        api = api_of(server)
        await post_all(api, [api.event(f"w-{i}", f"w-{i}") for i in range(WARMUP_EVENTS)])
        requests = [api.event(f"e-{i}", f"k-{i}") for i in range(plan.events)]
        counter.start(server.pid)
        _accepted(await post_all(api, requests), {"accepted"})
        counter.stop(server.pid)
    return counter.total() / plan.events


async def gateway_instructions(plan: InstructionsPlan, workdir: Path) -> float:
    """Instructions per event of the gateway, half of the events matching a wait."""
    counter = Callgrind(workdir, "gateway")
    with Supervisor(workdir) as procs:
        sandbox = await start_sandbox(procs)
        server = await start_gateway(
            procs,
            workdir,
            sandbox,
            PRODUCTION_RATE_PER_MINUTE,
            wrapper=counter.wrapper,
            ready_timeout_s=STARTUP_TIMEOUT_S,
        )
        api = api_of(server)
        matched = plan.events // 2
        keys = [f"m-{n}" for n in range(matched)]
        await register_waits(api, keys, await sandbox.create_jobs(matched))
        await post_all(api, [api.event(f"w-{i}", f"w-{i}") for i in range(WARMUP_EVENTS)])
        mix = EventMix(api, "e", keys)
        requests = [mix.request() for _ in range(plan.events)]
        counter.start(server.pid)
        _accepted(await post_all(api, requests), {"matched", "buffered"})
        counter.stop(server.pid)
        sandbox.close()
    return counter.total() / plan.events


async def kafka_work_instructions(plan: InstructionsPlan, workdir: Path) -> float:
    """Instructions per event of the gateway's own work on Kafka batches (``kafka_work``)."""
    counter = Callgrind(workdir, "kafka-work")
    args = ["--db", str(workdir / "kafka-work.db"), "--events", str(plan.kafka_events)]
    with (workdir / "kafka-work.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *counter.wrapper,
            sys.executable,
            "-m",
            "bench.kafka_work",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
        )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        await _expect(proc.stdout, "ready")
        counter.start(proc.pid)
        proc.stdin.write(b"go\n")
        await _expect(proc.stdout, "done")
        counter.stop(proc.pid)
        proc.stdin.write(b"exit\n")
        await asyncio.wait_for(proc.wait(), STARTUP_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.kafka_work exited with {proc.returncode}")
    return counter.total() / plan.kafka_events


async def _expect(stream: asyncio.StreamReader, word: str) -> None:
    line = await asyncio.wait_for(stream.readline(), STARTUP_TIMEOUT_S)
    if line.strip() != word.encode():
        raise RuntimeError(f"bench.kafka_work said {line!r}, not {word!r}")


async def run_instructions(plan: InstructionsPlan, workdir: Path) -> dict[str, float]:
    require_valgrind()
    note(f"instructions: bare aiohttp under callgrind, {plan.events} events")
    baseline = await baseline_instructions(plan, workdir)
    note(f"instructions: gateway under callgrind, {plan.events} events")
    gateway = await gateway_instructions(plan, workdir)
    note(f"instructions: the gateway's work on {plan.kafka_events} Kafka records, no broker")
    kafka = await kafka_work_instructions(plan, workdir)
    return {
        "instructions_per_event": gateway,
        "instructions_baseline_per_request": baseline,
        "instructions_cost_ratio": ratio(gateway, baseline),
        "instructions_kafka_work_per_event": kafka,
    }

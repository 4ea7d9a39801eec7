"""Load shapes: closed loop (fixed concurrency, for throughput), open loop (fixed rate, for
latency) and fan-out (set-up work such as creating jobs and registering waits).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.cpu import CpuMeter, CpuSample
from bench.httpload import Pool, Reply, connect

STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """``concurrency`` requests always in flight; counted after ``warmup_s`` for ``duration_s``."""

    host: str
    port: int
    concurrency: int
    warmup_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Throughput:
    """What a closed-loop run measured inside its window."""

    outcomes: Counter[str]
    total: Counter[str]
    """Outcomes of the whole run, warm-up and wind-down included."""
    window_s: float
    cpu_percent: dict[str, float]
    reconnects: int

    def per_s(self, outcome: str) -> float:
        return self.outcomes[outcome] / self.window_s


@dataclass(slots=True)
class _LoopState:
    running: bool = True
    issued: int = 0
    reconnects: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def next_index(self) -> int:
        self.issued += 1
        return self.issued - 1


async def closed_loop(
    spec: ClosedLoop,
    make_request: Callable[[int], bytes],
    classify: Callable[[Reply], str],
    meter: CpuMeter,
) -> Throughput:
    """Drive the server with ``make_request(i)`` for i = 0, 1, ...; count ``classify`` results."""
    state = _LoopState()
    workers = [
        asyncio.create_task(_worker(spec, make_request, classify, state), name=f"load-{n}")
        for n in range(spec.concurrency)
    ]
    try:
        first, before = await _window_edge(spec.warmup_s, meter, state, workers)
        last, after = await _window_edge(spec.duration_s, meter, state, workers)
    finally:
        state.running = False
        await _stop(workers)
    window_s = last.wall_s - first.wall_s
    cpu = meter.percent(first, last)
    return Throughput(after - before, state.outcomes, window_s, cpu, state.reconnects)


async def _window_edge(
    sleep_s: float, meter: CpuMeter, state: _LoopState, workers: list[asyncio.Task[None]]
) -> tuple[CpuSample, Counter[str]]:
    done, _ = await asyncio.wait(workers, timeout=sleep_s)
    for task in done:
        task.result()  # a worker that died early must fail the run, not shrink the load
    return meter.sample(), state.outcomes.copy()


async def _worker(
    spec: ClosedLoop,
    make_request: Callable[[int], bytes],
    classify: Callable[[Reply], str],
    state: _LoopState,
) -> None:
    conn = await connect(spec.host, spec.port)
    try:
        while state.running:
            try:
                reply = await conn.send(make_request(state.next_index()))
            except ConnectionError:
                state.reconnects += 1
                conn = await connect(spec.host, spec.port)
                continue
            state.outcomes[classify(reply)] += 1
    finally:
        conn.close()


async def _stop(workers: list[asyncio.Task[None]]) -> None:
    _, pending = await asyncio.wait(workers, timeout=STOP_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Timed:
    """A reply with the wall-clock time its request was written."""

    sent_at: float
    reply: Reply


async def open_loop(pool: Pool, requests: Sequence[bytes], rate_per_s: float) -> list[Timed]:
    """Send ``requests`` at a steady rate, whatever the server's answer time; keep order."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Timed]] = []
    for i, request in enumerate(requests):
        delay = start + i / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_timed(pool, request)))
    return list(await asyncio.gather(*tasks))


async def _timed(pool: Pool, request: bytes) -> Timed:
    sent_at = time.time()
    return Timed(sent_at, await pool.request(request))


async def fan_out(pool: Pool, requests: Sequence[bytes], concurrency: int) -> list[Reply]:
    """Send every request with at most ``concurrency`` in flight; replies in request order."""
    replies: list[Reply | None] = [None] * len(requests)
    indexes = iter(range(len(requests)))

    async def worker() -> None:
        for i in indexes:
            replies[i] = await pool.request(requests[i])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    return [reply for reply in replies if reply is not None]

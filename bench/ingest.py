"""Scenario 1, ingest throughput: events accepted per second by ``POST /v1/events``.

The gateway is driven with the same closed-loop load as a bare aiohttp handler
(``bench.baseline_server``); the baseline runs before and after the gateway and their mean is
the reference, so a drift of the shared machine during the run shows up as a spread between
the two instead of silently biasing the ratio.

About half of the gateway's events match a wait registered beforehand (correlation and the
outbox row are written in the same commit); the others are buffered. The number of waits to
register is sized from a short buffered-only probe; should the gateway outrun the estimate, the
matched fraction drops below one half and is reported as measured.

The gateway runs twice. The headline run uses Workato's real limit (60 resumes per minute), as
production would: matched events queue in the outbox. The ``ingest_unlimited_*`` run lifts the
limit, so thousands of resume requests per second compete with ingest for the same core — a
stress no tenant can produce, reported for what it shows about the delivery path.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

from bench.console import note
from bench.cpu import CpuMeter
from bench.load import ClosedLoop, Throughput, closed_loop
from bench.messages import ACCEPTED, Api, outcome
from bench.procs import HOST, Supervisor
from bench.stack import (
    HIGH_RATE_PER_MINUTE,
    PRODUCTION_RATE_PER_MINUTE,
    Sandbox,
    api_of,
    register_waits,
    start_baseline,
    start_gateway,
    start_sandbox,
)

MATCH_POOL_MARGIN = 1.25
PROBE_WARMUP_S = 0.5
DRAIN_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class IngestPlan:
    concurrency: int
    warmup_s: float
    duration_s: float
    probe_s: float
    drain_timeout_s: float


class EventMix:
    """Even-numbered events take the next registered key while any are left, so they match;
    the others get a fresh key, so they are buffered."""

    def __init__(self, api: Api, run: str, matched_keys: list[str]) -> None:
        self._api = api
        self._run = run
        self._keys = matched_keys
        self._next = 0

    def request(self, i: int) -> bytes:
        if i % 2 == 0 and self._next < len(self._keys):
            key = self._keys[self._next]
            self._next += 1
        else:
            key = f"{self._run}-b{i}"
        return self._api.event(f"{self._run}-{i}", key)


def accepted_per_s(result: Throughput) -> float:
    return sum(result.per_s(name) for name in ACCEPTED)


def _spec(port: int, plan: IngestPlan) -> ClosedLoop:
    return ClosedLoop(HOST, port, plan.concurrency, plan.warmup_s, plan.duration_s)


async def baseline_run(plan: IngestPlan, workdir: Path) -> Throughput:
    """The bare handler under the same load."""
    with Supervisor(workdir) as procs:
        server = await start_baseline(procs)
        events = EventMix(api_of(server), "base", [])
        meter = CpuMeter({"server": server.pid})
        return await closed_loop(_spec(server.port, plan), events.request, outcome, meter)


@dataclass(frozen=True, slots=True)
class GatewayIngest:
    result: Throughput
    probe: Throughput
    waits_registered: int
    registration_s: float
    drain: Drain | None


@dataclass(frozen=True, slots=True)
class Drain:
    """Deliveries still owed when the load stopped, and how fast they went out afterwards."""

    backlog: int
    delivered: int
    seconds: float


async def drain_deliveries(sandbox: Sandbox, matched: int, timeout_s: float) -> Drain:
    """Watch the sandbox until every matched event was resumed (or the timeout)."""
    started = time.perf_counter()
    first = last = (await sandbox.stats())["resumed_jobs"]
    deadline = started + timeout_s
    while last < matched and time.perf_counter() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
        last = (await sandbox.stats())["resumed_jobs"]
    return Drain(matched - first, last - first, time.perf_counter() - started)


async def gateway_run(plan: IngestPlan, workdir: Path, rate_per_minute: int) -> GatewayIngest:
    """Probe, register the waits to match, then the measured run (and, unlimited, the drain)."""
    with Supervisor(workdir) as procs:
        sandbox = await start_sandbox(procs)
        gateway = await start_gateway(procs, workdir, sandbox, rate_per_minute)
        api = api_of(gateway)
        meter = CpuMeter({"gateway": gateway.pid, "sandbox": sandbox.pid})
        probe_spec = ClosedLoop(HOST, gateway.port, plan.concurrency, PROBE_WARMUP_S, plan.probe_s)
        probe = await closed_loop(probe_spec, EventMix(api, "probe", []).request, outcome, meter)
        count = match_pool_size(accepted_per_s(probe), plan)
        note(f"ingest: registering {count} waits to match")
        jobs = await sandbox.create_jobs(count)
        keys = [f"m-{n}" for n in range(count)]
        started = time.perf_counter()
        await register_waits(api, keys, jobs)
        registration_s = time.perf_counter() - started
        events = EventMix(api, "run", keys)
        note(f"ingest: measured run ({plan.warmup_s:g} s warm-up, {plan.duration_s:g} s)")
        result = await closed_loop(_spec(gateway.port, plan), events.request, outcome, meter)
        drain = None
        if rate_per_minute == HIGH_RATE_PER_MINUTE:
            note("ingest: waiting for the delivery backlog to drain")
            drain = await drain_deliveries(sandbox, result.total["matched"], plan.drain_timeout_s)
        sandbox.close()
    return GatewayIngest(result, probe, count, registration_s, drain)


def match_pool_size(probe_per_s: float, plan: IngestPlan) -> int:
    """Enough waits for half of the events of the run, with a margin."""
    events = probe_per_s * (plan.warmup_s + plan.duration_s)
    return math.ceil(events / 2 * MATCH_POOL_MARGIN)


async def run_ingest(plan: IngestPlan, workdir: Path) -> dict[str, float]:
    """Baseline, gateway, baseline again; the figures of scenario 1."""
    note("ingest: bare aiohttp baseline (before)")
    before = await baseline_run(plan, workdir)
    note(f"ingest: gateway, {PRODUCTION_RATE_PER_MINUTE} resumes/min")
    gateway = await gateway_run(plan, workdir, PRODUCTION_RATE_PER_MINUTE)
    note("ingest: gateway, rate limit lifted")
    unlimited = await gateway_run(plan, workdir, HIGH_RATE_PER_MINUTE)
    note("ingest: bare aiohttp baseline (after)")
    after = await baseline_run(plan, workdir)
    figures = ingest_figures(before, gateway, after)
    figures |= unlimited_figures(unlimited, figures["ingest_baseline_events_per_s"])
    return figures


def ingest_figures(
    before: Throughput, gateway: GatewayIngest, after: Throughput
) -> dict[str, float]:
    result = gateway.result
    rate = accepted_per_s(result)
    first, last = accepted_per_s(before), accepted_per_s(after)
    baseline = (first + last) / 2
    matched, buffered = result.outcomes["matched"], result.outcomes["buffered"]
    rejected = sum(n for name, n in result.outcomes.items() if name not in ACCEPTED)
    return {
        "ingest_events_per_s": rate,
        "ingest_baseline_events_per_s": baseline,
        "ingest_ratio": rate / baseline,
        "ingest_baseline_before_events_per_s": first,
        "ingest_baseline_after_events_per_s": last,
        "ingest_baseline_spread": abs(first - last) / baseline,
        **cpu_cost_figures(before, result, after),
        "ingest_matched_fraction": matched / max(1, matched + buffered),
        "ingest_rejected_responses": rejected,
        "ingest_probe_buffered_only_events_per_s": accepted_per_s(gateway.probe),
        "ingest_waits_registered": gateway.waits_registered,
        "ingest_wait_registrations_per_s": gateway.waits_registered / gateway.registration_s,
        **{f"ingest_cpu_{name}_pct": pct for name, pct in result.cpu_percent.items()},
        **{
            f"ingest_baseline_cpu_{name}_pct": (pct + after.cpu_percent[name]) / 2
            for name, pct in before.cpu_percent.items()
        },
    }


def unlimited_figures(gateway: GatewayIngest, baseline: float) -> dict[str, float]:
    """The run without a rate limit: ingest while resumes go out as fast as they can."""
    rate = accepted_per_s(gateway.result)
    figures = {
        "ingest_unlimited_events_per_s": rate,
        "ingest_unlimited_ratio": rate / baseline,
        "ingest_unlimited_cpu_us_per_event": cpu_us_per_event(gateway.result, "gateway"),
    }
    if gateway.drain is not None:
        drain = gateway.drain
        figures |= {
            "ingest_unlimited_delivery_backlog_at_end": drain.backlog,
            "ingest_unlimited_delivery_drain_per_s": drain.delivered / drain.seconds,
            "ingest_unlimited_delivery_undrained": drain.backlog - drain.delivered,
        }
    return figures


def cpu_us_per_event(result: Throughput, process: str) -> float:
    """CPU microseconds the server process spent per accepted event.

    Less sensitive than events/s to what else the shared machine does at the time, since it
    does not count the time the server waited for a core.
    """
    return result.cpu_percent[process] * 1e4 / accepted_per_s(result)


def cpu_cost_figures(
    before: Throughput, gateway: Throughput, after: Throughput
) -> dict[str, float]:
    base = (cpu_us_per_event(before, "server") + cpu_us_per_event(after, "server")) / 2
    cost = cpu_us_per_event(gateway, "gateway")
    return {
        "ingest_gateway_cpu_us_per_event": cost,
        "ingest_baseline_cpu_us_per_event": base,
        "ingest_cpu_cost_ratio": cost / base,
    }

"""Scenario 1, ingest throughput: events accepted per second by ``POST /v1/events``.

The gateway is driven with the same closed-loop load as a bare aiohttp handler
(``bench.baseline_server``). Both servers run side by side and the load alternates between
them in short windows, a baseline window before and after each gateway window; each gateway
window is compared with the mean of the two around it, and the headline ratio is the median of
those paired ratios. The machine is shared: its speed drifts within a minute by a quarter or
more, and one long window each, a minute apart, measured the drift as much as the gateway.

About half of the gateway's events match a wait registered beforehand (correlation and the
outbox row are written in the same commit); the others are buffered. The number of waits to
register is sized from a short buffered-only probe; should the gateway outrun the estimate, the
matched fraction drops below one half and is reported as measured.

The gateway runs twice. The headline run uses Workato's real limit (60 resumes per minute), as
production would: matched events queue in the outbox. The ``ingest_unlimited_*`` run lifts the
limit, so thousands of resume requests per second compete with ingest for the same core — a
stress no tenant can produce, reported for what it shows about the delivery path. There, each
gateway window's backlog of resumes drains before the next baseline window, which it would
otherwise slow down.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.console import note
from bench.cpu import CpuMeter, weighted_percent
from bench.load import ClosedLoop, Throughput, closed_loop
from bench.messages import ACCEPTED, Api, outcome
from bench.procs import HOST, Server, Supervisor
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
    rounds: int
    """Gateway windows of the headline run, each between two baseline windows."""
    unlimited_rounds: int
    warmup_s: float
    duration_s: float
    """Of each window."""
    probe_s: float
    drain_timeout_s: float


class EventMix:
    """Even-numbered events take the next registered key while any are left, so they match;
    the others get a fresh key, so they are buffered. Events are numbered by the mix, not by
    the load that asks for them, so that each window of a run sends new ones."""

    def __init__(self, api: Api, run: str, matched_keys: list[str]) -> None:
        self._api = api
        self._run = run
        self._keys = matched_keys
        self._next = 0
        self._issued = 0

    def request(self, _index: int = 0) -> bytes:
        i, self._issued = self._issued, self._issued + 1
        if i % 2 == 0 and self._next < len(self._keys):
            key = self._keys[self._next]
            self._next += 1
        else:
            key = f"{self._run}-b{i}"
        return self._api.event(f"{self._run}-{i}", key)


def accepted_per_s(result: Throughput) -> float:
    return sum(result.per_s(name) for name in ACCEPTED)


@dataclass(frozen=True, slots=True)
class Paired:
    """Windows in the order they ran: baseline, gateway, baseline, ..., baseline."""

    baseline: list[Throughput]
    gateway: list[Throughput]
    probe: Throughput
    waits_registered: int
    registration_s: float
    drain: Drain | None

    def ratios(self) -> list[float]:
        """Each gateway window's rate over the mean rate of the baseline windows around it."""
        rates = [accepted_per_s(window) for window in self.baseline]
        return [
            accepted_per_s(window) / ((before + after) / 2)
            for window, before, after in zip(self.gateway, rates, rates[1:], strict=False)
        ]


@dataclass(frozen=True, slots=True)
class Drain:
    """Deliveries still owed when the load stopped, and how fast they went out afterwards
    (for a run: all its windows' backlogs, and the seconds spent draining them)."""

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


async def paired_run(
    plan: IngestPlan, workdir: Path, baseline: Server, rate_per_minute: int, rounds: int
) -> Paired:
    """Probe, register the waits to match, then alternate baseline and gateway windows (and,
    unlimited, drain the deliveries)."""
    with Supervisor(workdir) as procs:
        sandbox = await start_sandbox(procs)
        gateway = await start_gateway(procs, workdir, sandbox, rate_per_minute)
        api = api_of(gateway)
        meter = CpuMeter({"gateway": gateway.pid, "sandbox": sandbox.pid})
        probe_spec = ClosedLoop(HOST, gateway.port, plan.concurrency, PROBE_WARMUP_S, plan.probe_s)
        probe = await closed_loop(probe_spec, EventMix(api, "probe", []).request, outcome, meter)
        count = match_pool_size(accepted_per_s(probe), plan, rounds)
        note(f"ingest: registering {count} waits to match")
        jobs = await sandbox.create_jobs(count)
        keys = [f"m-{n}" for n in range(count)]
        started = time.perf_counter()
        await register_waits(api, keys, jobs)
        registration_s = time.perf_counter() - started
        events = EventMix(api, "run", keys)
        base_events = EventMix(api_of(baseline), "base", [])
        base_meter = CpuMeter({"server": baseline.pid})
        window = f"{plan.warmup_s:g} s warm-up, {plan.duration_s:g} s"
        note(f"ingest: {rounds} gateway windows between {rounds + 1} baseline windows ({window})")
        base_windows: list[Throughput] = []
        gateway_windows: list[Throughput] = []
        drains: list[Drain] = []
        for _ in range(rounds):
            base_windows.append(await _window(plan, baseline, base_events, base_meter))
            gateway_windows.append(await _window(plan, gateway, events, meter))
            if rate_per_minute == HIGH_RATE_PER_MINUTE:
                # resumes going out as fast as they can would take the baseline's CPU
                matched = sum(window.total["matched"] for window in gateway_windows)
                drains.append(await drain_deliveries(sandbox, matched, plan.drain_timeout_s))
        base_windows.append(await _window(plan, baseline, base_events, base_meter))
        sandbox.close()
    drain = None
    if drains:  # what a drain left is in the next one's backlog too: count it once
        delivered = sum(d.delivered for d in drains)
        left = drains[-1].backlog - drains[-1].delivered
        drain = Drain(delivered + left, delivered, sum(d.seconds for d in drains))
    return Paired(base_windows, gateway_windows, probe, count, registration_s, drain)


async def _window(
    plan: IngestPlan, server: Server, events: EventMix, meter: CpuMeter
) -> Throughput:
    spec = ClosedLoop(HOST, server.port, plan.concurrency, plan.warmup_s, plan.duration_s)
    return await closed_loop(spec, events.request, outcome, meter)


def match_pool_size(probe_per_s: float, plan: IngestPlan, rounds: int) -> int:
    """Enough waits for half of the events of the gateway's windows, with a margin."""
    events = probe_per_s * (plan.warmup_s + plan.duration_s) * rounds
    return math.ceil(events / 2 * MATCH_POOL_MARGIN)


async def run_ingest(plan: IngestPlan, workdir: Path) -> dict[str, float]:
    """The headline run, then the run with the limit lifted; the figures of scenario 1."""
    with Supervisor(workdir) as procs:
        baseline = await start_baseline(procs)
        note(f"ingest: gateway, {PRODUCTION_RATE_PER_MINUTE} resumes/min, against bare aiohttp")
        gateway = await paired_run(plan, workdir, baseline, PRODUCTION_RATE_PER_MINUTE, plan.rounds)
        note("ingest: gateway, rate limit lifted, against bare aiohttp")
        unlimited = await paired_run(
            plan, workdir, baseline, HIGH_RATE_PER_MINUTE, plan.unlimited_rounds
        )
    return ingest_figures(gateway) | unlimited_figures(unlimited)


def combined(windows: list[Throughput]) -> Throughput:
    """Several windows as one: their counts summed, CPU weighted by each window's length."""
    return Throughput(
        sum((window.outcomes for window in windows), Counter()),
        sum((window.total for window in windows), Counter()),
        sum(window.window_s for window in windows),
        weighted_percent([(window.cpu_percent, window.window_s) for window in windows]),
        sum(window.reconnects for window in windows),
    )


def ingest_figures(run: Paired) -> dict[str, float]:
    ratios = run.ratios()
    base_rates = [accepted_per_s(window) for window in run.baseline]
    gateway, baseline = combined(run.gateway), combined(run.baseline)
    matched, buffered = gateway.outcomes["matched"], gateway.outcomes["buffered"]
    rejected = sum(n for name, n in gateway.outcomes.items() if name not in ACCEPTED)
    return {
        "ingest_events_per_s": accepted_per_s(gateway),
        "ingest_baseline_events_per_s": accepted_per_s(baseline),
        "ingest_ratio": statistics.median(ratios),
        "ingest_ratio_min": min(ratios),
        "ingest_ratio_max": max(ratios),
        "ingest_ratio_of_totals": accepted_per_s(gateway) / accepted_per_s(baseline),
        "ingest_windows": len(ratios),
        "ingest_baseline_spread": (max(base_rates) - min(base_rates)) / statistics.mean(base_rates),
        **cpu_cost_figures(baseline, gateway),
        "ingest_matched_fraction": matched / max(1, matched + buffered),
        "ingest_rejected_responses": rejected,
        "ingest_probe_buffered_only_events_per_s": accepted_per_s(run.probe),
        "ingest_waits_registered": run.waits_registered,
        "ingest_wait_registrations_per_s": run.waits_registered / run.registration_s,
        **{f"ingest_cpu_{name}_pct": pct for name, pct in gateway.cpu_percent.items()},
        **{f"ingest_baseline_cpu_{name}_pct": pct for name, pct in baseline.cpu_percent.items()},
    }


def unlimited_figures(run: Paired) -> dict[str, float]:
    """The run without a rate limit: ingest while resumes go out as fast as they can."""
    gateway = combined(run.gateway)
    figures = {
        "ingest_unlimited_events_per_s": accepted_per_s(gateway),
        "ingest_unlimited_baseline_events_per_s": accepted_per_s(combined(run.baseline)),
        "ingest_unlimited_ratio": statistics.median(run.ratios()),
        "ingest_unlimited_cpu_us_per_event": cpu_us_per_event(gateway, "gateway"),
    }
    if run.drain is not None:
        drain = run.drain
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


def cpu_cost_figures(baseline: Throughput, gateway: Throughput) -> dict[str, float]:
    base = cpu_us_per_event(baseline, "server")
    cost = cpu_us_per_event(gateway, "gateway")
    return {
        "ingest_gateway_cpu_us_per_event": cost,
        "ingest_baseline_cpu_us_per_event": base,
        "ingest_cpu_cost_ratio": cost / base,
    }

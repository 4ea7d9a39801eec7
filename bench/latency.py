"""Scenario 2, latency from "event accepted" to "resume received by Workato".

For each event: ``resumed_at`` as recorded by the sandbox minus the time the 202 reached the
load generator (both wall clock, same machine). Rate limits are set high on both sides so the
figure is the pipeline's own delay (for the gateway: the commit that answers the event, the
lane's claim transaction, the HTTP call). The baseline is ``bench.forwarder``, which forwards
from memory at once, measured the same way against a fresh sandbox. Events are sent at a steady
moderate rate (open loop) so that queueing under saturation does not blur the figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.console import note
from bench.httpload import Pool
from bench.load import Timed, open_loop
from bench.messages import outcome
from bench.procs import HOST, Server, Supervisor
from bench.stack import (
    Job,
    Sandbox,
    api_of,
    register_waits,
    start_forwarder,
    start_gateway,
    start_sandbox,
)
from bench.stats import percentile, ratio

RESUME_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.1

Starter = Callable[[Supervisor, Sandbox], Awaitable[Server]]


@dataclass(frozen=True, slots=True)
class LatencyPlan:
    waits: int
    rate_per_s: float


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds, per event: to the resume (``resume_ms``) and to the 202 (``ack_ms``)."""

    resume_ms: list[float]
    ack_ms: list[float]
    unmatched: int
    unresumed: int


async def measure(plan: LatencyPlan, workdir: Path, start: Starter) -> Latency:
    """Fresh sandbox and server; register waits, send one matching event per wait, collect."""
    with Supervisor(workdir) as procs:
        sandbox = await start_sandbox(procs)
        server = await start(procs, sandbox)
        api = api_of(server)
        jobs = await sandbox.create_jobs(plan.waits)
        keys = [f"lat-{n}" for n in range(plan.waits)]
        await register_waits(api, keys, jobs)
        pool = Pool(HOST, server.port)
        events = [api.event(f"lat-e{n}", key) for n, key in enumerate(keys)]
        timed = await open_loop(pool, events, plan.rate_per_s)
        pool.close()
        resumed_at = await wait_for_resumes(sandbox, jobs)
        sandbox.close()
    return _latency(jobs, timed, resumed_at)


async def wait_for_resumes(sandbox: Sandbox, jobs: list[Job]) -> dict[str, float]:
    """``job_id -> resumed_at`` once every job is resumed, or what there is at the timeout."""
    wanted = {job.job_id for job in jobs}
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while True:
        states = await sandbox.jobs()
        resumed = {s["job_id"]: s["resumed_at"] for s in states if s["resume_count"] > 0}
        if wanted <= resumed.keys() or time.monotonic() > deadline:
            return resumed
        await asyncio.sleep(POLL_INTERVAL_S)


def _latency(jobs: list[Job], timed: list[Timed], resumed_at: dict[str, float]) -> Latency:
    resume_ms: list[float] = []
    unmatched = unresumed = 0
    for job, sample in zip(jobs, timed, strict=True):
        if outcome(sample.reply) != "matched":
            unmatched += 1
        elif job.job_id not in resumed_at:
            unresumed += 1
        else:
            resume_ms.append((resumed_at[job.job_id] - sample.reply.arrived_at) * 1000)
    ack_ms = [(s.reply.arrived_at - s.sent_at) * 1000 for s in timed]
    return Latency(resume_ms, ack_ms, unmatched, unresumed)


async def run_latency(plan: LatencyPlan, workdir: Path) -> dict[str, float]:
    """Forwarder first, then the gateway; the figures of scenario 2."""
    note(f"latency: forwarder, {plan.waits} events at {plan.rate_per_s:g}/s")
    forwarder = await measure(plan, workdir, start_forwarder)
    note(f"latency: gateway, {plan.waits} events at {plan.rate_per_s:g}/s")

    async def gateway(procs: Supervisor, sandbox: Sandbox) -> Server:
        return await start_gateway(procs, workdir, sandbox)

    return latency_figures(await measure(plan, workdir, gateway), forwarder)


def latency_figures(gateway: Latency, forwarder: Latency) -> dict[str, float]:
    figures: dict[str, float] = {}
    for prefix, run in (("latency", gateway), ("latency_forwarder", forwarder)):
        figures.update(_summary(prefix, run))
    for pct in ("p50", "p99"):
        gw, fw = figures[f"latency_{pct}_ms"], figures[f"latency_forwarder_{pct}_ms"]
        figures[f"latency_{pct}_ratio"] = ratio(gw, fw)
        figures[f"latency_{pct}_excess_ms"] = gw - fw
    return figures


def _summary(prefix: str, run: Latency) -> dict[str, float]:
    if not run.resume_ms:
        raise RuntimeError(f"{prefix}: no event was resumed ({run.unresumed} unresumed)")
    return {
        f"{prefix}_p50_ms": percentile(run.resume_ms, 50),
        f"{prefix}_p99_ms": percentile(run.resume_ms, 99),
        f"{prefix}_max_ms": max(run.resume_ms),
        f"{prefix}_ack_p50_ms": percentile(run.ack_ms, 50),
        f"{prefix}_ack_p99_ms": percentile(run.ack_ms, 99),
        f"{prefix}_events": len(run.resume_ms),
        f"{prefix}_unmatched": run.unmatched,
        f"{prefix}_unresumed": run.unresumed,
    }

"""``python -m bench``: run the scenarios, print the table, write the JSON file.

The full run takes about three minutes; ``--quick`` is a ~45 s smoke run with shorter
windows, fewer waits and fewer Kafka events (its figures are noisier, not different in kind).
``--only NAME`` (repeatable) runs some of the scenarios: ``ingest``, ``latency``, ``kafka``,
``payloads``, and the opt-in ``instructions`` (Valgrind; instructions per event, noise-free).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.ingest import IngestPlan, run_ingest
from bench.instructions import InstructionsPlan, run_instructions
from bench.kafka import KafkaPlan, run_kafka
from bench.latency import LatencyPlan, run_latency
from bench.messages import EVENT_BYTES
from bench.payloads import PayloadPlan, run_payloads
from bench.report import Figures, table, write_json

DEFAULT_OUTPUT = "bench-results.json"
CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class Plan:
    ingest: IngestPlan
    latency: LatencyPlan
    kafka: KafkaPlan
    payloads: PayloadPlan
    instructions: InstructionsPlan


PAYLOADS = PayloadPlan(200_000_000, 45_000_000)  # short: the same in a quick run
FULL = Plan(
    IngestPlan(CONCURRENCY, 7, 3, 1.0, 2.5, 2.0, 20.0),
    LatencyPlan(300, 100.0),
    KafkaPlan(100_000, 120.0),
    PAYLOADS,
    InstructionsPlan(3_000, 4_000),
)
QUICK = Plan(
    IngestPlan(CONCURRENCY, 3, 1, 0.5, 1.5, 1.0, 5.0),
    LatencyPlan(100, 100.0),
    KafkaPlan(20_000, 60.0, windows=2),
    PAYLOADS,
    InstructionsPlan(1_000, 2_000),
)
SCENARIOS = ("ingest", "latency", "kafka", "payloads")
OPT_IN = ("instructions",)
"""Run only when named: it needs Valgrind and takes about two minutes."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS + OPT_IN,
        help="run only this scenario (repeatable)",
    )
    return parser


async def run(plan: Plan, workdir: Path, only: Sequence[str] = SCENARIOS) -> dict[str, float]:
    _cancel_on_sigterm()
    figures: dict[str, float] = {}
    if "ingest" in only:
        figures.update(await run_ingest(plan.ingest, workdir))
    if "latency" in only:
        figures.update(await run_latency(plan.latency, workdir))
    if "kafka" in only:
        figures.update(await run_kafka(plan.kafka, workdir))
    if "payloads" in only:
        figures.update(await run_payloads(plan.payloads, workdir))
    if "instructions" in only:
        figures.update(await run_instructions(plan.instructions, workdir))
    return figures


def _cancel_on_sigterm() -> None:
    """SIGTERM (a CI timeout, say) cancels the run like Ctrl-C does, so that every server
    is stopped on the way out instead of being left behind."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def metadata(plan: Plan, quick: bool, started: float) -> dict[str, float | int | str | bool]:
    return {
        "meta_quick": quick,
        "meta_duration_s": time.monotonic() - started,
        "meta_cpu_count": os.cpu_count() or 0,
        "meta_python_version": platform.python_version(),
        "meta_platform": platform.platform(),
        "meta_loadavg_1m_at_end": os.getloadavg()[0],
        "meta_ingest_concurrency": plan.ingest.concurrency,
        "meta_ingest_window_s": plan.ingest.duration_s,
        "meta_ingest_rounds": plan.ingest.rounds,
        "meta_event_bytes_approx": EVENT_BYTES,
        "meta_latency_events": plan.latency.waits,
        "meta_latency_rate_per_s": plan.latency.rate_per_s,
        "meta_kafka_events": plan.kafka.events,
        "meta_kafka_windows": plan.kafka.windows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="resume-gateway-bench-") as tmp:
        try:
            measured = asyncio.run(run(plan, Path(tmp), args.only or SCENARIOS))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted; every server was stopped", file=sys.stderr)
            return 130
    figures: Figures = {**measured, **metadata(plan, args.quick, started)}
    print(table(figures))
    write_json(figures, Path(args.output))
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0

"""The printed table and ``bench-results.json`` (a flat ``{figure: value}`` object).

The table shows each headline figure with its same-run baseline, the ratio and the target;
every other figure (CPU use, matched fraction, set-up rates, run metadata) is listed below it
and all of them, baselines included, go to the JSON file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

Figures = Mapping[str, float | int | str | bool]


@dataclass(frozen=True, slots=True)
class Row:
    """A headline figure: where its value, baseline and ratio are, and what it should be."""

    label: str
    value: str
    baseline: str
    ratio: str
    target: str


HEADLINES = (
    Row(
        "ingest events/s at 60/min (vs bare aiohttp)",
        "ingest_events_per_s",
        "ingest_baseline_events_per_s",
        "ingest_ratio",
        ">= 0.5",
    ),
    Row(
        "ingest, rate limit lifted",
        "ingest_unlimited_events_per_s",
        "ingest_unlimited_baseline_events_per_s",
        "ingest_unlimited_ratio",
        "-",
    ),
    Row(
        "kafka events/s consumed+persisted+correlated (vs raw aiokafka)",
        "kafka_events_per_s",
        "kafka_baseline_events_per_s",
        "kafka_ratio",
        ">= 0.5",
    ),
    Row(
        "latency p50 ms (vs forwarder)",
        "latency_p50_ms",
        "latency_forwarder_p50_ms",
        "latency_p50_ratio",
        "-",
    ),
    Row(
        "latency p99 ms (vs forwarder)",
        "latency_p99_ms",
        "latency_forwarder_p99_ms",
        "latency_p99_ratio",
        "-",
    ),
    Row(
        "ingest instructions per event (vs bare aiohttp; opt-in, Valgrind)",
        "instructions_per_event",
        "instructions_baseline_per_request",
        "instructions_cost_ratio",
        "-",
    ),
    Row(
        "gateway peak RSS growth MB, 200 MB event as claim check (vs payload MB)",
        "payload_claim_check_rss_growth_mb",
        "payload_claim_check_payload_mb",
        "payload_claim_check_growth_ratio",
        "<= 32 MB",
    ),
    Row(
        "gateway peak RSS growth MB, 45 MB payload inline (vs payload MB)",
        "payload_inline_rss_growth_mb",
        "payload_inline_payload_mb",
        "payload_inline_growth_ratio",
        "<= 2.5",
    ),
)
HEADER = ("figure", "value", "baseline", "ratio", "target")
RATIO_NOTE = (
    "(ratio = value / baseline, except ingest's and Kafka's: the median of each gateway window"
    " over the baseline windows around it; higher is better for ingest and Kafka, lower for"
    " latency, instructions, memory)"
)


def _fmt(value: float | int | str | bool | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(figures: Figures) -> str:
    """Headline rows first, then every remaining figure as ``name  value``."""
    rows = [HEADER]
    rows += [
        (
            row.label,
            _fmt(figures.get(row.value)),
            _fmt(figures.get(row.baseline)),
            _fmt(figures.get(row.ratio)),
            row.target,
        )
        for row in HEADLINES
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(RATIO_NOTE)
    shown = {name for row in HEADLINES for name in (row.value, row.baseline, row.ratio)}
    rest = [name for name in figures if name not in shown]
    width = max((len(name) for name in rest), default=0)
    lines += ["", *(f"{name.ljust(width)}  {_fmt(figures[name])}" for name in rest)]
    return "\n".join(lines)


def write_json(figures: Figures, path: Path) -> None:
    """Write the figures; NaN (a zero baseline) becomes null to keep the file strict JSON."""
    clean = {
        name: None if isinstance(value, float) and math.isnan(value) else value
        for name, value in figures.items()
    }
    path.write_text(json.dumps(clean, indent=2) + "\n")

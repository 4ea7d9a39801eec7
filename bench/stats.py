"""Small statistics helpers (nearest-rank percentiles: no interpolation between samples)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``values`` (which must not be empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``, NaN when the baseline is zero (printed, never divided by)."""
    return value / baseline if baseline else math.nan

"""Exact sliding-window rate limit, as the upstream enforces it.

Only admitted requests occupy the window; a rejected request does not push the next free slot
further away. The clock is the caller's, so tests can drive time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Admission:
    """Outcome of one :meth:`SlidingWindow.admit` call."""

    admitted: bool
    retry_after_s: int = 0


@dataclass
class SlidingWindow:
    """At most ``limit`` admissions in any ``window_s`` interval (both given per call)."""

    _stamps: deque[float] = field(default_factory=deque)

    def admit(self, now: float, limit: int, window_s: float) -> Admission:
        """Admit and record ``now`` if a slot is free, else say how long until one frees."""
        while self._stamps and self._stamps[0] <= now - window_s:
            self._stamps.popleft()
        if len(self._stamps) < limit:
            self._stamps.append(now)
            return Admission(admitted=True)
        # The slot that frees first belongs to the (len - limit)th oldest stamp; usually the oldest.
        frees_at = self._stamps[len(self._stamps) - limit] + window_s
        return Admission(admitted=False, retry_after_s=max(1, math.ceil(frees_at - now)))

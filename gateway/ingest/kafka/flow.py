"""Backpressure for the consumer: when to fetch, hold, or pause the partitions. Pure.

Fetched batches are persisted in order while the next ones are fetched (the store group-commits
them). At ``max_in_flight`` batches the consumer *holds*: it stops fetching for a moment and
aiokafka's prefetch buffer, bounded per partition, fills no further. If the oldest batch is
still not committed after ``pause_after_s`` the store has fallen behind, and the consumer
*pauses* its partitions: aiokafka drops what it prefetched for them and fetches nothing, while
the consumer keeps polling so that it stays in the group. It resumes once the backlog is down
to half of ``max_in_flight`` and no batch is older than ``pause_after_s``.
"""

from __future__ import annotations

import enum


class Flow(enum.Enum):
    FETCH = "fetch"
    HOLD = "hold"
    PAUSE = "pause"


class Backpressure:
    """Decides from the batches in flight; remembers whether it paused (hysteresis)."""

    def __init__(self, max_in_flight: int, pause_after_s: float) -> None:
        self._max = max_in_flight
        self._resume_at = max_in_flight // 2
        self._pause_after_s = pause_after_s
        self.paused = False

    def decide(self, in_flight: int, oldest_age_s: float) -> Flow:
        """``oldest_age_s``: how long the oldest uncommitted batch has been in flight (0 if
        none)."""
        slow = oldest_age_s >= self._pause_after_s
        if self.paused:
            self.paused = slow or in_flight > self._resume_at
        else:
            self.paused = slow
        if self.paused:
            return Flow.PAUSE
        return Flow.HOLD if in_flight >= self._max else Flow.FETCH

    def hold_for_s(self, oldest_age_s: float) -> float:
        """How long a hold may last before the store counts as behind."""
        return max(0.0, self._pause_after_s - oldest_age_s)

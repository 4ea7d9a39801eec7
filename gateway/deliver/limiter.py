"""The exact sliding-window rate limit (invariant 5).

Not a token bucket: a bucket can let ``limit`` requests through at the end of one window and
``limit`` more at the start of the next. Keeping every send time of the last window means no
interval of ``window_s`` seconds ever holds more than ``limit`` sends.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable


class SlidingWindow:
    """At most ``limit`` sends in any ``window_s`` seconds; the caller supplies the time."""

    def __init__(self, limit: int, window_s: float, history: Iterable[float] = ()) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque(sorted(history))

    def available(self, now: float) -> int:
        """How many sends may start at ``now``."""
        self._forget(now)
        return max(0, self.limit - len(self._sent))

    def next_free_at(self, now: float) -> float:
        """The earliest time at which one more send is allowed."""
        self._forget(now)
        if len(self._sent) < self.limit:
            return now
        return self._sent[len(self._sent) - self.limit] + self.window_s

    def record(self, now: float, count: int = 1) -> None:
        if count > self.available(now):
            raise ValueError("recording more sends than the window allows")
        self._sent.extend([now] * count)

    def restamp(self, recorded: float, now: float) -> None:
        """A send recorded at ``recorded`` (when its slot was taken) has ended at ``now``: it
        reached the server somewhere in between, so its slot is held from ``now``. Taken at
        the claim, a slot freed a window after it, while a request that left late (a slow
        preparation, a slow connect) could still be counted by the server."""
        if recorded in self._sent:  # not forgotten yet
            self._sent.remove(recorded)
        bisect.insort(self._sent, now)

    def _forget(self, now: float) -> None:
        horizon = now - self.window_s
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()

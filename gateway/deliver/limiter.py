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
    """At most ``limit`` sends in any ``window_s`` seconds; the caller supplies the time.

    A send is held from when its slot is taken (``reserve``) until it ends (``complete``,
    or ``release`` if it never left), and then for a window from its end: the server counted
    it somewhere in between. Held from the claim alone, a slot freed a window after it, while
    a request that left late (a slow preparation, a slow connect) was still being counted.
    """

    def __init__(self, limit: int, window_s: float, history: Iterable[float] = ()) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque(sorted(history))
        self._in_flight = 0

    def available(self, now: float) -> int:
        """How many sends may start at ``now``."""
        self._forget(now)
        return max(0, self.limit - len(self._sent) - self._in_flight)

    def next_free_at(self, now: float) -> float:
        """The earliest time at which one more send may be allowed (a send in flight frees
        its slot a window after it ends, at the earliest a window from now)."""
        self._forget(now)
        expiring = len(self._sent) + self._in_flight - self.limit  # index of the one to wait for
        if expiring < 0:
            return now
        if expiring < len(self._sent):
            return self._sent[expiring] + self.window_s
        return now + self.window_s

    def reserve(self, now: float, count: int = 1) -> None:
        """Take ``count`` slots for sends about to start."""
        if count > self.available(now):
            raise ValueError("reserving more sends than the window allows")
        self._in_flight += count

    def complete(self, now: float) -> None:
        """A reserved send ended at ``now``: its slot is held a window from now."""
        self._in_flight -= 1
        if self._sent and now < self._sent[-1]:  # the clock stepped back
            bisect.insort(self._sent, now)
        else:
            self._sent.append(now)

    def release(self) -> None:
        """A reserved send never left: its slot is free again."""
        self._in_flight -= 1

    def record(self, now: float, count: int = 1) -> None:
        """Sends that started and ended at ``now``."""
        self.reserve(now, count)
        for _ in range(count):
            self.complete(now)

    def _forget(self, now: float) -> None:
        horizon = now - self.window_s
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()

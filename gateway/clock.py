"""Time as a dependency, so policies and tests never read the wall clock themselves."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Seconds since the Unix epoch, as a float."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The wall clock; persisted timestamps must survive restarts, so not monotonic."""
    return time.time()


def isoformat(ts: float | None) -> str | None:
    """An epoch timestamp as RFC 3339 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeClock:
    """A clock that only moves when told to; for tests of pure policies."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Budget:
    """A span of time shared by steps that run one after another, each given what is left of
    it, but never less than ``least`` (a step cut to nothing could not even hand back what it
    holds)."""

    def __init__(self, seconds: float, least: float = 0.0) -> None:
        self._deadline = time.monotonic() + seconds
        self._least = least

    def left(self) -> float:
        return max(self._least, self._deadline - time.monotonic())

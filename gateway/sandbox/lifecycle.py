"""A scripted job lifecycle: queued, then running, then terminal, on the caller's clock.

The Alteryx and Pixxel emulators have no workers: a job's state is a pure function of the time
elapsed since it was created, so tests move a fake clock instead of waiting, and a poller sees the
job advance between two polls exactly as it would upstream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_SCRIPTED_S = 366 * 86400.0
"""The longest duration a script or setting may give (a year): ``inf`` broke the arithmetic."""


class Phase(enum.Enum):
    """Where a scripted job is; each emulator spells these in its own vocabulary."""

    QUEUED = "queued"
    RUNNING = "running"
    TERMINAL = "terminal"


@dataclass(frozen=True)
class Lifecycle:
    """Queued for ``queued_s`` from ``created_at``, then running for ``running_s``, then done."""

    created_at: float
    queued_s: float
    running_s: float

    @property
    def running_at(self) -> float:
        """When the job leaves the queue."""
        return self.created_at + self.queued_s

    @property
    def finished_at(self) -> float:
        """When the job reaches its terminal state."""
        return self.running_at + self.running_s

    def phase(self, now: float) -> Phase:
        """The phase at ``now``; each boundary belongs to the later phase."""
        if now < self.running_at:
            return Phase.QUEUED
        if now < self.finished_at:
            return Phase.RUNNING
        return Phase.TERMINAL

    def running_elapsed_s(self, now: float) -> float:
        """Seconds spent running at ``now`` (0 while queued, ``running_s`` once done)."""
        return min(max(now - self.running_at, 0.0), self.running_s)

    def running_fraction(self, now: float) -> float:
        """Share of the running time elapsed at ``now``, in ``[0, 1]``."""
        if self.running_s == 0.0:
            return 1.0 if now >= self.running_at else 0.0
        return self.running_elapsed_s(now) / self.running_s

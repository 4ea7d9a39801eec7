"""Timestamps in the form the emulated APIs print them.

Workato and Alteryx both show UTC with milliseconds and a ``Z`` (``2024-09-19T10:02:54.589Z``);
Pixxel's seed only says "string", so its emulator uses the same form.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(at: float | None) -> str | None:
    """UTC with milliseconds, e.g. ``2015-01-02T01:02:03.000Z``; None stays None."""
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

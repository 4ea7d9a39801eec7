"""Progress lines on stderr, so a two-minute run says what it is doing (stdout is the table)."""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def note(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)

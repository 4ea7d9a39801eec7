"""Sleeping that an event cuts short, and that a cancellation always ends.

On Python 3.11, ``asyncio.wait_for(event.wait(), timeout)`` loses a cancellation that arrives
in the same turn of the loop as the event is set: it returns as if woken. A loop that sleeps
this way between rounds of work (a delivery lane, the Kafka intake) then runs on after its
owner cancelled it, and the owner's ``stop`` waits for it forever; a ``stop`` that waits so for
a queue to empty (the outcomes publisher's) misses its own cancellation. ``asyncio.timeout``
keeps the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_or_wake(wake: asyncio.Event, seconds: float) -> None:
    """Return once ``wake`` is set or ``seconds`` have passed, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await wake.wait()

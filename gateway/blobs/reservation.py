"""Where blob writers and collectors meet when they do not share a process: the blob's row.

A writer records the blob's row (``keep_blob``) before it stores the bytes; a collector marks
the row, deletes the bytes, then deletes the row (``blobs/collector.py``). ``keep_blob`` never
lifts a mark, so a writer that finds one waits for the row to go and then stores the blob
afresh: bytes a writer stored are never deleted under it, whichever process collects. (The
pins of ``blobs/pins.py`` do the same between the tasks of one process, without polling.)
"""

from __future__ import annotations

import asyncio
import time

from gateway.blobs.base import BlobMeta
from gateway.clock import Clock
from gateway.errors import BlobCollected
from gateway.store.base import Store

POLL_S = 0.05
PATIENCE_S = 10.0
"""A deletion takes milliseconds; one its collector left half done waits for the next round."""


async def reserve(
    store: Store, blob: BlobMeta, keep_until: float, clock: Clock, patience_s: float = PATIENCE_S
) -> None:
    """Record ``blob`` as kept until ``keep_until``, waiting out a deletion under way;
    BlobCollected if it is still under way after ``patience_s`` (the caller retries later)."""
    deadline = time.monotonic() + patience_s
    while not await store.keep_blob(blob, keep_until, clock()):
        if time.monotonic() >= deadline:
            raise BlobCollected()
        await asyncio.sleep(POLL_S)

"""Where blob writers and collectors meet, in one process or several: the blob's row.

A writer records the blob's row (``keep_blob``, keep-until in the future) before it stores the
bytes, and a collector only marks a row whose keep-until has passed, then deletes the bytes,
then the row (``collector.py``). ``keep_blob`` does not lift a fresh mark, so a writer that
finds one waits for the row to go and then stores the blob afresh: no bytes are deleted under
a writer. (A mark left long ago by a collector that died is lifted: see ``keep_blob``.)
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
    store: Store,
    blob: BlobMeta,
    keep_until: float,
    clock: Clock,
    patience_s: float | None = None,
) -> None:
    """Record ``blob`` as kept until ``keep_until``, waiting out a deletion under way;
    BlobCollected if it is still under way after ``patience_s`` (default ``PATIENCE_S``): the
    caller retries later."""
    deadline = time.monotonic() + (PATIENCE_S if patience_s is None else patience_s)
    while not await store.keep_blob(blob, keep_until, clock()):
        if time.monotonic() >= deadline:
            raise BlobCollected()
        await asyncio.sleep(POLL_S)

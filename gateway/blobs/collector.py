"""Garbage collection of blobs: once every URL handed out has expired and no buffered event or
unfinished delivery needs the bytes, the row is marked, the bytes go, then the row. Writers
record the row before the bytes and wait for a marked row to go (``reservation.py``), so no
bytes are deleted under a writer, in this process or another."""

from __future__ import annotations

import asyncio

import structlog

from gateway.blobs.base import BlobStore
from gateway.clock import Clock
from gateway.errors import described
from gateway.metrics import Metrics
from gateway.store.base import Store

log = structlog.get_logger(__name__)

BATCH = 100


class BlobCollector:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        clock: Clock,
        metrics: Metrics,
        interval_s: float,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._interval_s = interval_s

    async def run(self) -> None:
        """Collect every interval until cancelled. A failed round (the blob store or the
        database briefly unavailable) is logged and retried: nothing is lost by waiting."""
        while True:
            try:
                await self.collect()
            except Exception as exc:
                log.warning("blobs.collect_failed", error=type(exc).__name__, detail=described(exc))
            await asyncio.sleep(self._interval_s)

    async def collect(self) -> int:
        """Delete what is collectable now, a batch at a time until a batch comes back short;
        the number of blobs deleted. One batch a round kept at most 100 blobs an interval
        (6,000 an hour), below what a busy intake leaves, and the store grew without end."""
        deleted = 0
        while True:
            batch, gone = await self._collect_batch()
            deleted += gone
            if len(batch) < BATCH or gone == 0:  # short, or every one spared or lifted
                return deleted

    async def _collect_batch(self) -> tuple[list[str], int]:
        """One batch; the ids it read and how many it deleted. A blob whose bytes cannot be
        deleted is spared until the next round: one that never can (a permission, an object
        lock) held up every blob after it, round after round."""
        now = self._clock()
        deleted = 0
        batch = await self._store.collectable_blobs(now, BATCH)
        for sha256 in batch:
            # marked, bytes, row: whichever step fails, the next round finishes the job
            if not await self._store.condemn_blob(sha256, now):
                continue
            try:
                await self._blobs.delete(sha256)
            except Exception as exc:  # the store's own failure ends the round, as before
                log.warning(
                    "blobs.delete_failed",
                    blob=sha256,
                    error=type(exc).__name__,
                    detail=described(exc),
                )
                await self._store.spare_blob(sha256, now)
                continue
            if await self._store.forget_blob(sha256):  # not if a writer lifted the mark meanwhile
                deleted += 1
        if deleted:
            self._metrics.blobs_collected.inc(deleted)
            log.info("blobs.collected", count=deleted)
        return batch, deleted

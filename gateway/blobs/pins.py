"""Pins keep the collector from deleting a blob that is about to be referenced.

An intake (or a delivery issuing a claim check) stores a blob and then commits a row that
needs it; the collector deletes a blob's row and then its bytes. Without coordination the two
can interleave so that a committed row names deleted bytes. A pinned blob is never collected,
and pinning waits for a deletion already under way, so the blob is then stored afresh. Between
processes the blob's row does the same, by polling (``reservation.py``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Pins:
    """In-process coordination between blob writers and the collector (one per gateway)."""

    def __init__(self) -> None:
        self._pinned: Counter[str] = Counter()
        self._deleting: dict[str, asyncio.Event] = {}

    @asynccontextmanager
    async def pinned(self, sha256: str) -> AsyncIterator[None]:
        """Hold ``sha256`` for the duration: store the bytes and commit the row inside."""
        while (deletion := self._deleting.get(sha256)) is not None:
            await deletion.wait()
        self._pinned[sha256] += 1
        try:
            yield
        finally:
            self._pinned[sha256] -= 1
            if self._pinned[sha256] == 0:
                del self._pinned[sha256]

    def begin_delete(self, sha256: str) -> bool:
        """Claim ``sha256`` for deletion; False while it is pinned or already being deleted."""
        if self._pinned[sha256] or sha256 in self._deleting:
            return False
        self._deleting[sha256] = asyncio.Event()
        return True

    def end_delete(self, sha256: str) -> None:
        deletion = self._deleting.pop(sha256, None)
        if deletion is not None:
            deletion.set()

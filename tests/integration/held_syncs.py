"""Holding the SQLite log's syncs, to see what waits for them."""

from __future__ import annotations

import os
import threading

import pytest

from gateway.store import wal as wal_module


class HeldSyncs:
    """Patches the log's ``fdatasync``: once ``hold()`` is called, each sync waits for
    ``release()`` (5 s at most, then it fails)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._holding = threading.Event()
        self._released = threading.Event()
        real_fdatasync = os.fdatasync

        def held_fdatasync(fd: int) -> None:
            if self._holding.is_set():
                assert self._released.wait(5)
            real_fdatasync(fd)

        monkeypatch.setattr(wal_module.os, "fdatasync", held_fdatasync)

    def hold(self) -> None:
        self._holding.set()

    def release(self) -> None:
        self._released.set()

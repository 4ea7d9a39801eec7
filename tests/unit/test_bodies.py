"""``Bodies``: what a request that goes away leaves behind."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.settings import IngestSettings
from gateway.ingest.bodies import Bodies
from gateway.ingest.spool import Body
from gateway.messages import CompletionEvent


class _Ingest:
    """The one question ``accept_data`` asks the intake before it copies."""

    def require_object(self, tenant: str, leading: bytes) -> None:
        return None


class _HeldBody(Body):
    """A spooled body's stand-in whose copy stops after its first chunk until released."""

    __slots__ = ("copied", "done", "read_chunks", "release")

    def __init__(self, data: bytes) -> None:
        super().__init__(len(data), None, memory=data)
        self.copied, self.release = threading.Event(), threading.Event()
        self.done = threading.Event()
        self.read_chunks = 0

    def chunks(
        self, start: int = 0, end: int | None = None, chunk_size: int = 1 << 18
    ) -> Iterator[bytes]:
        if end is not None and end - start <= 1:  # the raw-mode check reads one byte
            yield from super().chunks(start, end, chunk_size)
            return
        try:
            for chunk in super().chunks(start, end, 4):
                self.read_chunks += 1
                yield chunk
                self.copied.set()
                self.release.wait(5)
        finally:  # the copy stopped reading: done, or dropped the generator
            self.done.set()


async def test_a_cancelled_request_stops_its_copy_and_leaves_no_file(tmp_path: Path) -> None:
    """The copy runs in a thread, which a cancellation does not stop: the request's way out
    tells it to stop, and it read the rest of the body before."""
    spool = tmp_path / "spool"
    settings = IngestSettings(spool_dir=str(spool))
    bodies = Bodies(_Ingest(), Any, settings)  # type: ignore[arg-type]  # no blob is reached
    body = _HeldBody(b'{"data": [1, 2, 3, 4, 5, 6, 7, 8, 9]}')
    event = CompletionEvent(id="e1", key="k1", status="succeeded")
    span = (9, body.size - 1)
    accepting = asyncio.create_task(bodies.accept_data("t", "api", event, body, span))
    await asyncio.to_thread(body.copied.wait, 5)
    accepting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await accepting
    body.release.set()
    assert await asyncio.to_thread(body.done.wait, 5)
    assert body.read_chunks == 2  # of 8: it finds out at its next chunk
    assert list(spool.iterdir()) == []


def test_a_leftover_removed_meanwhile_by_another_process_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the spool ended an upload between the listing and the stat:
    the FileNotFoundError raised out of the gateway's start."""
    spool = tmp_path / "spool"
    spool.mkdir()
    old, gone = spool / "old", spool / "gone"
    for path in (old, gone):
        path.write_bytes(b"x")
        os.utime(path, (0, 0))
    real_stat = Path.stat
    looked: list[str] = []

    def vanishing(path: Path, **kwargs: Any) -> os.stat_result:
        looked.append(path.name)
        if path.name == "gone" and looked.count("gone") > 1:  # there when listed, not after
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", vanishing)
    bodies = Bodies(_Ingest(), Any, IngestSettings(spool_dir=str(spool)))  # type: ignore[arg-type]
    assert bodies.remove_leftovers(time.time()) == 1
    assert not old.exists()

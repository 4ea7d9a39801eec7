"""Request bodies of any size, kept in memory only while they are small (invariant 8).

A body is hashed and measured as it arrives. Once it outgrows the spool threshold it goes to a
private file, so memory holds at most the threshold plus one chunk however large the body is.
Readers take a spooled body back in chunks or small spans, never whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

CHUNK_BYTES = 1 << 18
WRITE_PIECE_BYTES = 1 << 18  # one write on the event loop lands in the page cache quickly


class Body:
    """A request body, in memory (small) or in a spool file (large), with its size and sha256.

    An in-memory body hashes itself only when asked: the digest names a blob, and most small
    bodies are JSON events that never become one.
    """

    __slots__ = ("_sha256", "memory", "path", "size")

    def __init__(
        self,
        size: int,
        sha256: str | None,
        *,
        memory: bytes | None = None,
        path: Path | None = None,
    ) -> None:
        if (memory is None) == (path is None):
            raise ValueError("a body is either in memory or in a file")
        if sha256 is None and path is not None:
            raise ValueError("a spooled body's digest is taken while it is written")
        self.size = size
        self._sha256 = sha256
        self.memory = memory
        self.path = path

    @classmethod
    def of(cls, data: bytes) -> Body:
        """A body held in memory."""
        return cls(len(data), None, memory=data)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            assert self.memory is not None
            self._sha256 = hashlib.sha256(self.memory).hexdigest()
        return self._sha256

    def chunks(
        self, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_BYTES
    ) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in pieces of at most ``chunk_size`` (blocking reads)."""
        end = self.size if end is None else min(end, self.size)
        start = max(0, start)
        if self.memory is not None:
            return (
                self.memory[i : min(i + chunk_size, end)] for i in range(start, end, chunk_size)
            )
        return self._file_chunks(start, end, chunk_size)

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)`` of a small span."""
        return b"".join(self.chunks(start, end, max(1, end - start)))

    def discard(self) -> None:
        """Remove the spool file, if any; safe to call twice."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Body:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()

    def _file_chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        assert self.path is not None
        with self.path.open("rb", buffering=0) as file:
            file.seek(start)
            while start < end:
                data = file.read(min(chunk_size, end - start))
                if not data:
                    raise OSError(f"{self.path} ends at byte {start}, not {self.size}")
                start += len(data)
                yield data


async def receive(
    chunks: AsyncIterable[bytes],
    declared_length: int | None,
    *,
    spool_threshold: int,
    cap: int,
    spool_dir: Path,
    too_large: Callable[[], Exception],
) -> Body:
    """The body ``chunks`` make, refused with ``too_large()`` as soon as it is known to exceed
    ``cap``: by ``declared_length`` before anything is read, or while reading. A body over
    ``spool_threshold`` is spooled to ``spool_dir``; on any failure the file is removed."""
    if declared_length is not None and declared_length > cap:
        raise too_large()
    intake = _Intake(spool_threshold, spool_dir)
    try:
        if declared_length is not None and declared_length > spool_threshold:
            intake.spool()
        async for chunk in chunks:
            if intake.size + len(chunk) > cap:
                raise too_large()
            await intake.add(chunk)
        return intake.body()
    except BaseException:  # too large, disconnected or cancelled: no file is left behind
        intake.abort()
        raise


class _Intake:
    """A body being received: hashed and measured, held until it outgrows the threshold."""

    def __init__(self, threshold: int, spool_dir: Path) -> None:
        self.size = 0
        self._threshold = threshold
        self._spool_dir = spool_dir
        self._hash = hashlib.sha256()
        self._held: list[bytes] = []
        self._file: BinaryIO | None = None
        self._path: Path | None = None

    def spool(self) -> None:
        """Move to a new private file; what is held so far goes first."""
        self._spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path = self._spool_dir / f"{secrets.token_hex(16)}.spool"
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = open(fd, "wb")  # noqa: SIM115  # closed by body() or abort()
        for held in self._held:
            self._file.write(held)
        self._held = []

    async def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hash.update(chunk)
        if self._file is None and self.size > self._threshold:
            self.spool()
        if self._file is None:
            self._held.append(chunk)
            return
        view = memoryview(chunk)
        for i in range(0, len(view), WRITE_PIECE_BYTES):
            if i:
                await asyncio.sleep(0)  # a huge chunk does not hold the loop for long
            self._file.write(view[i : i + WRITE_PIECE_BYTES])

    def body(self) -> Body:
        digest = self._hash.hexdigest()
        if self._file is None:
            return Body(self.size, digest, memory=b"".join(self._held))
        self._file.close()
        assert self._path is not None
        return Body(self.size, digest, path=self._path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

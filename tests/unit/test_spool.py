"""spool.receive: small bodies stay in memory, large ones go to a private file, and a body
that fails half-way leaves no file behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.ingest.spool import Body, receive

THRESHOLD = 10
CAP = 100


class Refused(Exception):
    """The body is over the cap."""


async def stream(
    *parts: bytes, after: Callable[[int], None] = lambda i: None
) -> AsyncIterator[bytes]:
    for index, part in enumerate(parts):
        yield part
        after(index)


async def take(
    chunks: AsyncIterator[bytes], spool_dir: Path, declared: int | None = None, cap: int = CAP
) -> Body:
    async with asyncio.timeout(5):
        return await receive(
            chunks,
            declared,
            spool_threshold=THRESHOLD,
            cap=cap,
            spool_dir=spool_dir,
            too_large=Refused,
        )


def spooled(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*")) if spool_dir.exists() else []


async def test_a_small_body_stays_in_memory(tmp_path: Path) -> None:
    body = await take(stream(b"abc", b"defghij"), tmp_path / "spool")
    assert (body.memory, body.path, body.size) == (b"abcdefghij", None, 10)
    assert body.sha256 == hashlib.sha256(b"abcdefghij").hexdigest()
    assert spooled(tmp_path / "spool") == []


async def test_crossing_the_threshold_spools_all_of_it_to_a_private_file(tmp_path: Path) -> None:
    body = await take(stream(b"abcd", b"efgh", b"ijkl"), tmp_path / "spool")
    assert body.memory is None
    assert body.path is not None
    assert body.path.read_bytes() == b"abcdefghijkl"
    assert (body.size, body.sha256) == (12, hashlib.sha256(b"abcdefghijkl").hexdigest())
    assert stat.S_IMODE(body.path.stat().st_mode) == 0o600
    assert body.path.suffix == ".spool"


async def test_a_declared_length_over_the_threshold_spools_from_the_first_byte(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    files_seen: list[int] = []
    chunks = stream(b"a", b"b", after=lambda i: files_seen.append(len(spooled(spool_dir))))
    body = await take(chunks, spool_dir, declared=THRESHOLD + 1)
    assert files_seen == [1, 1]
    assert body.path is not None
    assert body.path.read_bytes() == b"ab"


async def test_a_declared_length_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    started: list[int] = []
    chunks = stream(b"x", after=started.append)
    with pytest.raises(Refused):
        await take(chunks, tmp_path / "spool", declared=CAP + 1)
    assert started == []
    assert not (tmp_path / "spool").exists()


async def test_a_body_at_the_cap_is_taken(tmp_path: Path) -> None:
    body = await take(stream(b"x" * 60, b"y" * 40), tmp_path / "spool")
    assert body.size == CAP


async def test_going_over_the_cap_while_streaming_removes_the_file(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    with pytest.raises(Refused):
        await take(stream(b"x" * 60, b"y" * 41), spool_dir)
    assert spooled(spool_dir) == []


async def test_a_client_that_goes_away_leaves_no_file(tmp_path: Path) -> None:
    async def disconnecting() -> AsyncIterator[bytes]:
        yield b"x" * 50
        raise ConnectionResetError("peer went away")

    spool_dir = tmp_path / "spool"
    with pytest.raises(ConnectionResetError):
        await take(disconnecting(), spool_dir)
    assert spooled(spool_dir) == []


async def test_cancellation_removes_the_file(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    stalled = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield b"x" * 50
        stalled.set()
        await asyncio.Event().wait()  # the client sends nothing more
        yield b""

    task = asyncio.create_task(take(stalling(), spool_dir))
    async with asyncio.timeout(5):
        await stalled.wait()
    assert len(spooled(spool_dir)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert spooled(spool_dir) == []


async def test_a_spooled_body_reads_back_in_chunks_and_spans(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    body = await take(stream(*parts), tmp_path / "spool", cap=len(data))
    assert (body.size, body.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(body.chunks(chunk_size=7777)) == data
    assert all(len(c) <= 7777 for c in body.chunks(chunk_size=7777))
    assert b"".join(body.chunks(1000, 250_000, 4096)) == data[1000:250_000]
    assert body.read(299_990, 300_000) == data[-10:]


def test_a_memory_body_reads_back_the_same_way() -> None:
    body = Body.of(b"0123456789")
    assert list(body.chunks(2, 9, 3)) == [b"234", b"567", b"8"]
    assert body.read(3, 5) == b"34"
    assert body.sha256 == hashlib.sha256(b"0123456789").hexdigest()


async def test_discard_is_idempotent_and_ends_a_with_block(tmp_path: Path) -> None:
    body = await take(stream(b"x" * 50), tmp_path / "spool")
    assert body.path is not None
    with body:
        assert body.path.exists()
    assert not body.path.exists()
    body.discard()
    Body.of(b"small").discard()

"""Blobs as files under one directory: ``root/ab/abcdef…`` plus ``root/ab/abcdef….type``.

Every write lands in ``root/.tmp`` first and is renamed into place, the content type before
the data, so a reader sees a whole blob with its type or no blob at all. Data is fsynced before
the rename: a blob handed out in a URL survives a crash. File I/O runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

from gateway.blobs.base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    BlobError,
    BlobMeta,
    BlobMissing,
    byte_range,
    checked_id,
    meta_of,
)

STALE_TEMP_S = 3600.0
"""Temp files older than this at start were left by a crash."""
_COPY_BUFFER_BYTES = 1024 * 1024


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def close(self) -> None:
        """Nothing is held open between calls."""

    async def put_file(self, path: Path, meta: BlobMeta) -> None:
        checked_id(meta.sha256)
        if await self.stat(meta.sha256) == meta:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return
        try:
            await asyncio.to_thread(self._install, path, meta)
        except OSError as exc:
            raise BlobError(f"cannot store blob {meta.sha256}: {exc.strerror}") from exc

    async def put_bytes(self, data: bytes, content_type: str) -> BlobMeta:
        meta = meta_of(data, content_type)
        temp = self._temp_path()
        try:
            await asyncio.to_thread(_write_private, temp, data)
            await self.put_file(temp, meta)
        except OSError as exc:
            raise BlobError(f"cannot store blob {meta.sha256}: {exc.strerror}") from exc
        finally:  # consumed when stored; a failure must not leave it behind
            await asyncio.to_thread(temp.unlink, missing_ok=True)
        return meta

    async def stat(self, sha256: str) -> BlobMeta | None:
        return await asyncio.to_thread(self._stat, checked_id(sha256))

    async def read(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        path = self._data_path(checked_id(sha256))
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobMissing() from None
        # An open file stays readable after a concurrent delete (POSIX), so a download that
        # started is never cut short by the collector.
        with file:
            pos, stop = byte_range(start, end, os.fstat(file.fileno()).st_size)
            await asyncio.to_thread(file.seek, pos)
            while pos < stop:
                chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, stop - pos))
                if not chunk:
                    raise BlobError(f"blob {sha256} is shorter than its size")
                pos += len(chunk)
                yield chunk

    async def delete(self, sha256: str) -> None:
        data = self._data_path(checked_id(sha256))
        await asyncio.to_thread(data.unlink, missing_ok=True)
        await asyncio.to_thread(_type_path(data).unlink, missing_ok=True)

    async def presigned_url(self, meta: BlobMeta, expires_in_s: float) -> str | None:
        return None

    def _data_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _temp_path(self) -> Path:
        return self._tmp / uuid.uuid4().hex

    def _prepare(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TEMP_S
        for temp in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another replica got there first
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()

    def _stat(self, sha256: str) -> BlobMeta | None:
        data = self._data_path(sha256)
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            return None
        try:
            content_type = _type_path(data).read_text(encoding="utf-8")
        except FileNotFoundError:  # deleted between the two reads
            content_type = DEFAULT_CONTENT_TYPE
        return BlobMeta(sha256, size, content_type)

    def _install(self, source: Path, meta: BlobMeta) -> None:
        final = self._data_path(meta.sha256)
        final.parent.mkdir(exist_ok=True)
        type_temp = self._temp_path()
        try:
            type_temp.write_text(meta.content_type, encoding="utf-8")
            os.replace(type_temp, _type_path(final))
        finally:
            type_temp.unlink(missing_ok=True)
        _fsync(source)
        try:
            os.replace(source, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_in(source, final)
        _fsync(final.parent, directory=True)

    def _copy_in(self, source: Path, final: Path) -> None:
        """The other filesystem's file, streamed into a temp file here, then renamed."""
        temp = self._temp_path()
        try:
            with source.open("rb") as src, temp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_BUFFER_BYTES)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temp, final)
        finally:  # a failed copy (a full disk) leaves no partial file, up to 1 GiB, behind
            temp.unlink(missing_ok=True)
        source.unlink()


def _type_path(data: Path) -> Path:
    return data.with_name(data.name + ".type")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only, as a spooled body is: a payload (a job's result) written with the umask
    was readable by every user of the machine."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)

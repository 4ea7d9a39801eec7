"""The blob store interface, shared by the file and S3 implementations.

Blobs are content-addressed: the id is the lowercase hex SHA-256 of the bytes, so storing the
same payload twice is harmless and an id is also an integrity check. Ids are validated strictly
before they reach a path or an object key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import GatewayError

MAX_PRESIGN_S = 7 * 24 * 3600
"""S3 SigV4 refuses presigned URLs that live longer."""
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_BYTES = 256 * 1024
"""The most bytes one read yields: bounded memory per download."""
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobError(GatewayError):
    """The blob store failed; the client error is chained."""


class BlobMissing(BlobError):
    """The blob does not exist: never stored, or collected."""


class BlobForbidden(BlobError):
    """The store would not say whether the blob exists: S3 answers 403 for a missing key to a
    credential without ``s3:ListBucket``, as for a key it may not read."""


@dataclass(frozen=True, slots=True)
class BlobMeta:
    sha256: str
    """Lowercase hex; also the blob's id."""
    size: int
    content_type: str


def is_blob_id(value: str) -> bool:
    return bool(_SHA256.fullmatch(value))


def is_media_type(value: str) -> bool:
    """``type/subtype`` in RFC 6838's restricted names, lower case: the only content types a
    blob is stored and served with (nothing that could break a header)."""
    return bool(_MEDIA_TYPE.fullmatch(value))


def checked_id(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits; else ValueError (never a path)."""
    if not is_blob_id(sha256):
        raise ValueError("a blob id is 64 lowercase hex digits")
    return sha256


def meta_of(data: bytes, content_type: str) -> BlobMeta:
    return BlobMeta(hashlib.sha256(data).hexdigest(), len(data), content_type)


def byte_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """``[start, end)`` clamped to ``size``; empty when ``start`` is past the end."""
    if start < 0 or (end is not None and end < start):
        raise ValueError("a byte range needs 0 <= start <= end")
    stop = size if end is None else min(end, size)
    return min(start, stop), stop


class BlobStore(Protocol):
    async def start(self) -> None:
        """Create directories or open the client session."""

    async def close(self) -> None:
        """Release the client session; idempotent."""

    async def put_file(self, path: Path, meta: BlobMeta) -> None:
        """Store the file's bytes under ``meta.sha256`` (the caller hashed and measured them).

        The file is consumed: moved when possible, else copied and deleted. Storing an existing
        blob again is harmless, and a reader never sees a partial blob. Memory does not grow
        with the file's size."""

    async def put_bytes(self, data: bytes, content_type: str) -> BlobMeta:
        """Hash and store ``data``."""

    async def stat(self, sha256: str) -> BlobMeta | None:
        """The blob's metadata, or None when it does not exist."""

    def read(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``[start, end)`` in chunks of at most :data:`CHUNK_BYTES`; raises
        :class:`BlobMissing` when iterated if the blob does not exist."""

    async def delete(self, sha256: str) -> None:
        """Remove the blob; idempotent."""

    async def presigned_url(self, meta: BlobMeta, expires_in_s: float) -> str | None:
        """A URL the store itself serves, or None when it cannot presign (files)."""

"""Blobs as objects in an S3-compatible bucket, keyed ``{prefix}/{sha256}``.

An object appears whole or not at all (PutObject and CompleteMultipartUpload are atomic), so
no temp names are needed. Large files go up in parts read one at a time: memory stays at one
part whatever the payload's size. Client errors are wrapped in :class:`BlobError` here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from gateway.blobs.base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    MAX_PRESIGN_S,
    BlobError,
    BlobForbidden,
    BlobMeta,
    BlobMissing,
    checked_id,
    meta_of,
)
from gateway.config.blobs import BlobSettings

log = structlog.get_logger(__name__)

PART_BYTES = 8 * 1024 * 1024
"""Multipart part size (S3's minimum is 5 MiB); also the largest single PutObject."""
"""SigV4 presigned URLs live at most 7 days."""
_CLIENT_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError)
_MISSING = {"404", "NoSuchKey", "NotFound"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden"}


class S3BlobStore:
    def __init__(self, settings: BlobSettings, part_bytes: int = PART_BYTES) -> None:
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._prefix = settings.s3_prefix
        self._part_bytes = part_bytes
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None

    async def start(self) -> None:
        stack = AsyncExitStack()
        client = get_session().create_client("s3", **self._client_args())
        self._s3 = await stack.enter_async_context(client)
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def put_file(self, path: Path, meta: BlobMeta) -> None:
        key = self._key(meta.sha256)
        if await self._stored(meta) != meta:
            try:
                await self._upload(path, key, meta)
            except _CLIENT_ERRORS as exc:
                raise BlobError(f"cannot store blob {meta.sha256}") from exc
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def put_bytes(self, data: bytes, content_type: str) -> BlobMeta:
        meta = meta_of(data, content_type)
        key = self._key(meta.sha256)
        try:
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )
        except _CLIENT_ERRORS as exc:
            raise BlobError(f"cannot store blob {meta.sha256}") from exc
        return meta

    async def _stored(self, meta: BlobMeta) -> BlobMeta | None:
        """What the bucket holds under the blob's key, or None if nothing or forbidden to say:
        without ``s3:ListBucket`` a missing key answers 403, not 404, and the upload decides."""
        try:
            return await self.stat(meta.sha256)
        except BlobForbidden:
            return None

    async def stat(self, sha256: str) -> BlobMeta | None:
        key = self._key(sha256)
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            if _code(exc) in _FORBIDDEN:
                raise BlobForbidden(f"cannot stat blob {sha256}: forbidden") from exc
            raise BlobError(f"cannot stat blob {sha256}") from exc
        except _CLIENT_ERRORS as exc:
            raise BlobError(f"cannot stat blob {sha256}") from exc
        return BlobMeta(
            sha256, int(head["ContentLength"]), head.get("ContentType") or DEFAULT_CONTENT_TYPE
        )

    async def read(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        key = self._key(sha256)
        if start < 0 or (end is not None and end < start):
            raise ValueError("a byte range needs 0 <= start <= end")
        if end == start:  # S3 has no empty range; only say whether the blob exists
            if await self.stat(sha256) is None:
                raise BlobMissing()
            return
        body = await self._get(sha256, key, start, end)
        if body is None:
            return
        async with body:
            try:
                async for chunk in body.iter_chunks(CHUNK_BYTES):
                    yield chunk
            except _CLIENT_ERRORS as exc:
                raise BlobError(f"cannot read blob {sha256}") from exc

    async def delete(self, sha256: str) -> None:
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=self._key(sha256))
        except _CLIENT_ERRORS as exc:
            raise BlobError(f"cannot delete blob {sha256}") from exc

    async def presigned_url(self, meta: BlobMeta, expires_in_s: float) -> str | None:
        expires = max(1, min(math.ceil(expires_in_s), MAX_PRESIGN_S))
        params = {
            "Bucket": self._bucket,
            "Key": self._key(meta.sha256),
            # served as the event declared it, whichever type the object was stored with, and
            # as a download: a sender's text/html is not a page on the bucket's origin
            "ResponseContentType": meta.content_type,
            "ResponseContentDisposition": "attachment",
        }
        try:
            url: str = await self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )
        except _CLIENT_ERRORS as exc:  # no credentials to sign with, say
            raise BlobError(f"cannot presign a URL of blob {meta.sha256}") from exc
        return url

    @property
    def _client(self) -> Any:
        if self._s3 is None:
            raise RuntimeError("S3BlobStore is not started")
        return self._s3

    def _client_args(self) -> dict[str, Any]:
        s = self._settings
        config = AioConfig(
            s3={"addressing_style": "path"} if s.s3_endpoint_url else {},
            signature_version="s3v4",  # botocore presigns with legacy SigV2 unless told
            # S3-compatible servers differ in their support of the newer default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        args: dict[str, Any] = {
            "region_name": s.s3_region,
            "endpoint_url": s.s3_endpoint_url,
            "config": config,
        }
        if s.s3_access_key_id is not None and s.s3_secret_access_key is not None:
            args["aws_access_key_id"] = s.s3_access_key_id.get_secret_value()
            args["aws_secret_access_key"] = s.s3_secret_access_key.get_secret_value()
        return args

    def _key(self, sha256: str) -> str:
        checked_id(sha256)
        return f"{self._prefix}/{sha256}" if self._prefix else sha256

    async def _get(self, sha256: str, key: str, start: int, end: int | None) -> Any:
        """The object's body from ``start``; None when ``start`` is past its end."""
        args = {"Bucket": self._bucket, "Key": key}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await self._client.get_object(**args)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise BlobMissing() from None
            if _code(exc) == "InvalidRange":
                return None
            if _code(exc) in _FORBIDDEN:
                raise BlobForbidden(f"cannot read blob {sha256}: forbidden") from exc
            raise BlobError(f"cannot read blob {sha256}") from exc
        except _CLIENT_ERRORS as exc:
            raise BlobError(f"cannot read blob {sha256}") from exc
        return answer["Body"]

    async def _upload(self, path: Path, key: str, meta: BlobMeta) -> None:
        file = await asyncio.to_thread(path.open, "rb")
        with file:
            if meta.size <= self._part_bytes:
                data = await asyncio.to_thread(file.read, self._part_bytes)
                await self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=data, ContentType=meta.content_type
                )
            else:
                await self._upload_parts(file, key, meta.content_type)

    async def _upload_parts(self, file: IO[bytes], key: str, content_type: str) -> None:
        target = {"Bucket": self._bucket, "Key": key}
        upload = await self._client.create_multipart_upload(**target, ContentType=content_type)
        upload_id = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while data := await asyncio.to_thread(file.read, self._part_bytes):
                number = len(parts) + 1
                answer = await self._client.upload_part(
                    **target, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await self._abort(target, upload_id)
            raise

    async def _abort(self, target: dict[str, str], upload_id: str) -> None:
        """Best effort: a bucket lifecycle rule for incomplete uploads is the backstop."""
        try:
            await self._client.abort_multipart_upload(**target, UploadId=upload_id)
        except _CLIENT_ERRORS:
            log.warning("blobs.s3.abort_failed", key=target["Key"])


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))

"""The blob store contract, run against both stores: files in a directory and a real S3 server
(``moto_server``). Nothing is mocked but ``os.replace`` and a copy, that must fail across
filesystems."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.blobs.base import (
    CHUNK_BYTES,
    BlobError,
    BlobForbidden,
    BlobMeta,
    BlobMissing,
    BlobStore,
)
from gateway.blobs.factory import blob_store
from gateway.blobs.files import FileBlobStore
from gateway.blobs.s3 import PART_BYTES, S3BlobStore
from gateway.blobs.signing import UrlSigner
from gateway.config.blobs import BlobSettings
from gateway.http.blobs import BlobDownloads
from gateway.http.problems import answered
from gateway.sandbox.server import SandboxServer
from tests.kafka_broker import MotoS3

BUCKET = "claim-checks"
PREFIX = "gw/blobs"
TIMEOUT_S = 60.0
BIG_BYTES = 20 * 1024 * 1024
TRAVERSALS = ["../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 33, "ab" * 31 + "/x", ""]


async def make_bucket(moto: MotoS3) -> None:
    async with aiohttp.ClientSession() as http, http.put(f"{moto.url}/{BUCKET}") as answer:
        assert answer.status == 200


def s3_settings(moto: MotoS3, **extra: object) -> BlobSettings:
    return BlobSettings.model_validate(
        {
            "url": f"s3://{BUCKET}/{PREFIX}/",
            "s3_endpoint_url": moto.url,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            **extra,
        }
    )


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    blobs: BlobStore
    if request.param == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        await make_bucket(moto)
        blobs = S3BlobStore(s3_settings(moto))
    else:
        blobs = FileBlobStore(tmp_path / "blobs")
    await asyncio.wait_for(blobs.start(), TIMEOUT_S)
    try:
        yield blobs
    finally:
        await blobs.close()
        await blobs.close()  # idempotent


async def read_all(
    store: BlobStore, sha256: str, start: int = 0, end: int | None = None
) -> tuple[bytes, list[int]]:
    """The bytes read and the size of every chunk."""
    chunks: list[bytes] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for chunk in store.read(sha256, start, end):
            chunks.append(chunk)
    return b"".join(chunks), [len(c) for c in chunks]


def spool(path: Path, data: bytes, content_type: str = "application/json") -> BlobMeta:
    path.write_bytes(data)
    return BlobMeta(hashlib.sha256(data).hexdigest(), len(data), content_type)


async def test_put_bytes_stat_read(store: BlobStore) -> None:
    data = b'{"rows": [1, 2, 3]}'
    meta = await store.put_bytes(data, "application/json")
    assert meta == BlobMeta(hashlib.sha256(data).hexdigest(), len(data), "application/json")
    assert await store.stat(meta.sha256) == meta
    assert (await read_all(store, meta.sha256))[0] == data


async def test_ranges(store: BlobStore) -> None:
    data = bytes(range(256)) * 4
    sha = (await store.put_bytes(data, "application/octet-stream")).sha256
    for start, end in [(0, 10), (10, None), (1000, 1024), (5, 5000), (1023, 1024), (7, 7)]:
        assert (await read_all(store, sha, start, end))[0] == data[start:end], (start, end)
    assert (await read_all(store, sha, 1024))[0] == b""
    assert (await read_all(store, sha, 5000, 6000))[0] == b""
    with pytest.raises(ValueError, match="byte range"):
        await read_all(store, sha, 10, 5)


async def test_missing_blob(store: BlobStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert await store.stat(sha) is None
    with pytest.raises(BlobMissing):
        await read_all(store, sha)
    with pytest.raises(BlobMissing):
        await read_all(store, sha, 3, 3)
    await store.delete(sha)


async def test_delete_is_idempotent(store: BlobStore) -> None:
    meta = await store.put_bytes(b"to be collected", "text/plain")
    await store.delete(meta.sha256)
    await store.delete(meta.sha256)
    assert await store.stat(meta.sha256) is None
    with pytest.raises(BlobMissing):
        await read_all(store, meta.sha256)


async def test_storing_again_is_harmless(store: BlobStore, tmp_path: Path) -> None:
    data = b"same bytes, same id"
    first = await store.put_bytes(data, "text/plain")
    assert await store.put_bytes(data, "text/plain") == first
    meta = spool(tmp_path / "again", data, "text/plain")
    await store.put_file(tmp_path / "again", meta)
    assert not (tmp_path / "again").exists()
    assert await store.stat(first.sha256) == first
    assert (await read_all(store, first.sha256))[0] == data


async def test_content_type_is_kept(store: BlobStore, tmp_path: Path) -> None:
    meta = spool(tmp_path / "body", b"<x/>", "application/xml; charset=utf-8")
    await store.put_file(tmp_path / "body", meta)
    assert await store.stat(meta.sha256) == meta


async def test_empty_blob(store: BlobStore, tmp_path: Path) -> None:
    meta = await store.put_bytes(b"", "application/json")
    assert meta.size == 0
    assert await store.stat(meta.sha256) == meta
    assert await read_all(store, meta.sha256) == (b"", [])
    assert spool(tmp_path / "empty", b"", "application/json") == meta
    await store.put_file(tmp_path / "empty", meta)
    assert not (tmp_path / "empty").exists()


async def test_a_big_file_is_streamed_and_consumed(store: BlobStore, tmp_path: Path) -> None:
    assert BIG_BYTES > 2 * PART_BYTES  # S3 takes the multipart path
    source = tmp_path / "spooled"
    meta = spool(source, os.urandom(BIG_BYTES), "application/json")
    await asyncio.wait_for(store.put_file(source, meta), TIMEOUT_S)
    assert not source.exists()
    assert await store.stat(meta.sha256) == meta
    data, sizes = await read_all(store, meta.sha256)
    assert hashlib.sha256(data).hexdigest() == meta.sha256
    assert max(sizes) <= CHUNK_BYTES
    tail, _ = await read_all(store, meta.sha256, PART_BYTES - 3, PART_BYTES + 3)
    assert tail == data[PART_BYTES - 3 : PART_BYTES + 3]


async def test_put_file_of_a_missing_file_fails(store: BlobStore, tmp_path: Path) -> None:
    meta = BlobMeta(hashlib.sha256(b"gone").hexdigest(), 4, "text/plain")
    with pytest.raises(BlobError):
        await store.put_file(tmp_path / "gone", meta)
    assert await store.stat(meta.sha256) is None


async def test_presigned_url(store: BlobStore) -> None:
    data = b'{"presigned": true}'
    meta = await store.put_bytes(data, "application/json")
    url = await store.presigned_url(meta, expires_in_s=30 * 24 * 3600)  # capped at 7 days
    if isinstance(store, FileBlobStore):
        assert url is None
        return
    assert url is not None
    assert "X-Amz-Expires=604800" in url
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["Content-Disposition"] == "attachment"  # a download, not a page
        assert await answer.read() == data
    # the same bytes as another event's payload: served with the type that event declared
    as_text = await store.presigned_url(BlobMeta(meta.sha256, meta.size, "text/plain"), 60)
    assert as_text is not None
    async with aiohttp.ClientSession() as http, http.get(as_text) as answer:
        assert answer.status == 200, as_text
        assert answer.headers["Content-Type"] == "text/plain", as_text


@pytest.mark.parametrize("head_status", [403, 503])
async def test_s3_stores_a_blob_where_a_missing_key_answers_403_and_only_there(
    moto_s3: MotoS3, tmp_path: Path, head_status: int
) -> None:
    """Without s3:ListBucket, S3 answers a HEAD of a missing key with 403: the check for a copy
    stored already raised, and no blob could be stored. Any other failure of the check is the
    store's failure, as before. Staged by a proxy in front of moto."""
    await make_bucket(moto_s3)

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=head_status)
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method,
                f"{moto_s3.url}{request.path_qs}",
                headers=request.headers,
                data=await request.read(),
            ) as answer,
        ):
            kept = {k: v for k, v in answer.headers.items() if k.lower() != "transfer-encoding"}
            return web.Response(status=answer.status, body=await answer.read(), headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", forward)
    async with SandboxServer(app) as proxy:
        settings = s3_settings(moto_s3, s3_endpoint_url=proxy.url)
        store = S3BlobStore(settings)
        await store.start()
        try:
            meta = spool(tmp_path / "spooled", b'{"stored": "anyway"}')
            if head_status != 403:
                with pytest.raises(BlobError, match="cannot stat"):
                    await store.put_file(tmp_path / "spooled", meta)
                return
            await store.put_file(tmp_path / "spooled", meta)
            assert (await read_all(store, meta.sha256))[0] == b'{"stored": "anyway"}'
            with pytest.raises(BlobForbidden):
                await store.stat("0" * 64)
            await served_as_gone(store, "0" * 64)
        finally:
            await store.close()


async def served_as_gone(store: BlobStore, sha256: str) -> None:
    """A signed download of a blob the bucket will not say exists is a 404, as for any
    collected blob: it answered 500."""
    signing_key = bytes(32)
    app = web.Application()
    downloads = BlobDownloads(store, UrlSigner([("k1", signing_key)], "http://-"), time.time)
    app.add_routes(answered(downloads.routes()))
    async with SandboxServer(app) as server, aiohttp.ClientSession() as http:
        url = UrlSigner([("k1", signing_key)], server.url).url(sha256, time.time() + 60)
        async with http.get(url) as answer:
            assert answer.status == 404, await answer.text()


async def test_s3_presigning_without_credentials_is_a_blob_error(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """botocore's NoCredentialsError escaped the claim check, and the delivery task died."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):  # no credentials anywhere botocore looks
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = s3_settings(moto_s3, s3_access_key_id=None, s3_secret_access_key=None)
    store = S3BlobStore(settings)
    await store.start()
    try:
        with pytest.raises(BlobError, match="cannot presign"):
            await store.presigned_url(BlobMeta("ab" * 32, 1, "text/plain"), 60)
    finally:
        await store.close()


@pytest.mark.parametrize("bad_id", TRAVERSALS)
async def test_ids_that_are_not_sha256_are_refused(store: BlobStore, bad_id: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await store.stat(bad_id)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await read_all(store, bad_id)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await store.delete(bad_id)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await store.put_file(Path("x"), BlobMeta(bad_id, 1, "text/plain"))


async def test_file_store_layout(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    await store.start()
    meta = await store.put_bytes(b"laid out", "text/plain")
    data = tmp_path / "blobs" / meta.sha256[:2] / meta.sha256
    assert data.read_bytes() == b"laid out"
    assert data.with_name(meta.sha256 + ".type").read_text() == "text/plain"
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []


def on_another_filesystem(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``source`` cannot be renamed into the store (for the calling test only)."""
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


async def test_file_store_copies_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "elsewhere"
    on_another_filesystem(source, monkeypatch)
    store = FileBlobStore(tmp_path / "blobs")
    await store.start()
    meta = spool(source, b"x" * (3 * CHUNK_BYTES + 1))
    await store.put_file(source, meta)
    assert not source.exists()
    assert (await read_all(store, meta.sha256))[0] == b"x" * (3 * CHUNK_BYTES + 1)
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []


async def test_a_failed_copy_across_filesystems_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that failed half-way (a full disk) left its temp file, up to 1 GiB, until the
    next start, and then only if it was an hour old."""
    source = tmp_path / "elsewhere"

    def copy_until_full(src: Any, dst: Any, length: int = 0) -> None:
        dst.write(src.read(CHUNK_BYTES))
        raise OSError(errno.ENOSPC, "No space left on device")

    store = FileBlobStore(tmp_path / "blobs")
    await store.start()
    on_another_filesystem(source, monkeypatch)
    monkeypatch.setattr(shutil, "copyfileobj", copy_until_full)
    meta = spool(source, b"x" * (3 * CHUNK_BYTES))
    with pytest.raises(BlobError):
        await store.put_file(source, meta)
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []
    assert source.exists()  # the spooled body is kept, for the caller to retry or clean up


def test_factory_and_settings(tmp_path: Path) -> None:
    relative = blob_store(BlobSettings(url="file:///data/blobs"), tmp_path)
    assert isinstance(relative, FileBlobStore)
    assert relative.root == tmp_path / "data" / "blobs"
    absolute = blob_store(BlobSettings(url=f"file:///{tmp_path}/abs"), Path("/elsewhere"))
    assert isinstance(absolute, FileBlobStore)
    assert absolute.root == tmp_path / "abs"
    s3 = BlobSettings(url="s3://bucket-1/a/b/", presign=True)
    assert isinstance(blob_store(s3), S3BlobStore)
    assert (s3.kind, s3.s3_bucket, s3.s3_prefix) == ("s3", "bucket-1", "a/b")
    assert BlobSettings(url="s3://bucket-1").s3_prefix == ""
    for bad in ("/var/blobs", "file://host/x", "s3://", "s3://B_ad", "https://x"):
        with pytest.raises(ValidationError, match="file:///relative/path"):
            BlobSettings(url=bad)
    with pytest.raises(ValidationError, match="presign needs an s3"):
        BlobSettings(presign=True)
    with pytest.raises(ValidationError, match="both"):
        BlobSettings.model_validate({"url": "s3://bucket-1", "s3_access_key_id": "k"})

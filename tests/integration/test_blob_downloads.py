"""``GET /v1/blobs/{id}`` over real HTTP: signed access, streaming, ranges, conditional requests,
and refusals that reveal nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import structlog
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.blobs.base import BlobForbidden, BlobMeta
from gateway.blobs.files import FileBlobStore
from gateway.blobs.signing import UrlSigner
from gateway.clock import FakeClock
from gateway.http.blobs import BlobDownloads
from gateway.http.problems import answered
from gateway.sandbox.server import SandboxServer

KEY = bytes(range(32))
DATA = bytes(range(256)) * 4000  # 1,024,000 bytes: several 256 KiB chunks
SIZE = len(DATA)
TTL_S = 3600.0
PROBLEM = "application/problem+json"


@dataclass
class Downloads:
    signer: UrlSigner
    clock: FakeClock
    blobs: FileBlobStore
    meta: BlobMeta
    http: aiohttp.ClientSession

    def signed(self, sha256: str | None = None, ttl_s: float = TTL_S) -> str:
        return self.signer.url(sha256 or self.meta.sha256, self.clock() + ttl_s)

    async def fetch(
        self, url: str, method: str = "GET", **headers: str
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        async with self.http.request(method, url, headers=headers) as answer:
            return answer.status, answer.headers, await answer.read()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Downloads]:
    clock = FakeClock()
    blobs = FileBlobStore(tmp_path / "blobs")
    await blobs.start()
    meta = await blobs.put_bytes(DATA, "application/json")
    app = web.Application()
    # Verification does not depend on the base URL, so the app's signer can be built before
    # the port is known and the test's signer after.
    app.add_routes(
        answered(BlobDownloads(blobs, UrlSigner([("k1", KEY)], "http://-"), clock).routes())
    )
    async with SandboxServer(app) as server:
        signer = UrlSigner([("k1", KEY)], server.url)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
            yield Downloads(signer, clock, blobs, meta, http)


def refusal(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    assert headers["Content-Type"].split(";")[0] == PROBLEM
    document: dict[str, Any] = json.loads(body)
    assert document["status"] == status
    assert set(document) == {"type", "title", "status", "detail"}
    return document


async def test_whole_blob_with_headers(served: Downloads) -> None:
    status, headers, body = await served.fetch(served.signed())
    assert status == 200
    assert body == DATA
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(SIZE)
    assert headers["ETag"] == f'"{served.meta.sha256}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == f"private, max-age={int(TTL_S)}"


async def test_served_as_the_signed_type_and_only_a_media_type(served: Downloads) -> None:
    expires_at = served.clock() + TTL_S
    typed = served.signer.url(served.meta.sha256, expires_at, "text/csv")
    status, headers, body = await served.fetch(typed)
    assert (status, body, headers["Content-Type"]) == (200, DATA, "text/csv")
    injected = served.signer.url(served.meta.sha256, expires_at, "text/csv\r\nSet-Cookie: a=b")
    status, headers, _ = await served.fetch(injected)  # signed, but not a media type
    assert status == 403
    assert "Set-Cookie" not in headers


async def test_cache_lifetime_follows_the_url(served: Downloads) -> None:
    url = served.signed()
    served.clock.advance(TTL_S - 100)
    _, headers, _ = await served.fetch(url)
    assert headers["Cache-Control"] == "private, max-age=100"


async def test_head_has_headers_and_no_body(served: Downloads) -> None:
    status, headers, body = await served.fetch(served.signed(), "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(SIZE)
    assert headers["ETag"] == f'"{served.meta.sha256}"'


async def test_big_blob_is_streamed_whole(served: Downloads) -> None:
    data = DATA * 8
    meta = await served.blobs.put_bytes(data, "application/octet-stream")
    status, headers, body = await served.fetch(served.signed(meta.sha256))
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == meta.sha256
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=-5", SIZE - 5, SIZE),
        ("bytes=-99999999", 0, SIZE),
        ("bytes=1000-", 1000, SIZE),
        ("bytes=262140-262150", 262140, 262151),  # across a chunk boundary
        ("bytes=10-99999999", 10, SIZE),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE),
        ("BYTES=0-0", 0, 1),
    ],
)
async def test_single_range(served: Downloads, header: str, start: int, end: int) -> None:
    status, headers, body = await served.fetch(served.signed(), Range=header)
    assert status == 206
    assert body == DATA[start:end]
    assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}", "bytes=-0"])
async def test_unsatisfiable_range(served: Downloads, header: str) -> None:
    status, headers, body = await served.fetch(served.signed(), Range=header)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"
    refusal(416, headers, body)


@pytest.mark.parametrize(
    "header", ["bytes=0-9,20-29", "bytes=abc", "bytes=9-2", "bytes=-", "items=0-9", "bytes 0-9"]
)
async def test_ranges_we_ignore_get_the_whole_blob(served: Downloads, header: str) -> None:
    status, headers, body = await served.fetch(served.signed(), Range=header)
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers


async def test_if_range(served: Downloads) -> None:
    etag = f'"{served.meta.sha256}"'
    status, _, body = await served.fetch(served.signed(), Range="bytes=0-9", **{"If-Range": etag})
    assert (status, body) == (206, DATA[:10])
    stale = {"If-Range": '"' + "0" * 64 + '"'}
    status, _, body = await served.fetch(served.signed(), Range="bytes=0-9", **stale)
    assert (status, body) == (200, DATA)


@pytest.mark.parametrize("match", ["{etag}", "*", "W/{etag}", '"other", {etag}'])
async def test_if_none_match_is_not_modified(served: Downloads, match: str) -> None:
    etag = f'"{served.meta.sha256}"'
    header = {"If-None-Match": match.format(etag=etag)}
    status, headers, body = await served.fetch(served.signed(), **header)
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag


async def test_if_none_match_other_etag_sends_the_blob(served: Downloads) -> None:
    status, _, body = await served.fetch(served.signed(), **{"If-None-Match": '"other"'})
    assert (status, body) == (200, DATA)


def tampered(url: str) -> list[str]:
    """Variants of a signed URL that must all be refused the same way."""
    base, query = url.split("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    sig, expires = params["sig"], params["expires"]
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    return [
        f"{base}?expires={expires}&sig={flipped}",
        f"{base}?expires={int(expires) + 1}&sig={sig}",
        f"{base}?expires={expires}",
        f"{base}?sig={sig}",
        base,
        f"{base}?expires={expires}&sig=k9.{sig.removeprefix('k1.')}",
        f"{base}?expires={expires}&sig=",
        f"{base}?expires=soon&sig={sig}",
    ]


async def test_bad_signatures_are_forbidden_and_say_nothing(served: Downloads) -> None:
    url = served.signed()
    bodies = set()
    for bad in tampered(url):
        status, headers, body = await served.fetch(bad)
        assert status == 403, bad
        assert refusal(403, headers, body)["type"] == "/problems/forbidden"
        bodies.add(body)
    assert len(bodies) == 1  # the reason is never told
    assert served.meta.sha256.encode() not in bodies.pop()


async def test_a_signature_for_another_blob_is_forbidden(served: Downloads) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    sig_query = urlsplit(served.signed(other)).query
    status, headers, body = await served.fetch(f"{served.signed().split('?')[0]}?{sig_query}")
    assert status == 403
    refusal(403, headers, body)


async def test_expired_url_is_forbidden(served: Downloads) -> None:
    url = served.signed(ttl_s=60)
    served.clock.advance(60)
    assert (await served.fetch(url))[0] == 200
    served.clock.advance(1.5)
    status, headers, body = await served.fetch(url)
    assert status == 403
    assert refusal(403, headers, body)["type"] == "/problems/forbidden"
    assert (await served.fetch(url, "HEAD"))[0] == 403


async def test_unknown_blob_with_a_valid_signature_is_not_found(served: Downloads) -> None:
    unknown = hashlib.sha256(b"never stored").hexdigest()
    url = served.signed(unknown)
    status, headers, body = await served.fetch(url)
    assert status == 404
    assert refusal(404, headers, body)["type"] == "/problems/not-found"
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    for secret in (unknown, sig, sig.removeprefix("k1.")):
        assert secret.encode() not in body


async def test_collected_blob_is_not_found(served: Downloads) -> None:
    url = served.signed()
    await served.blobs.delete(served.meta.sha256)
    with structlog.testing.capture_logs() as logs:
        status, headers, body = await served.fetch(url)
    assert status == 404
    refusal(404, headers, body)
    # a payload gone while its URL is still valid: said, where it was silent
    [gone] = [e for e in logs if e["event"] == "blobs.download.gone"]
    assert (gone["blob"], gone["log_level"]) == (served.meta.sha256, "warning")


async def test_a_read_the_store_refuses_after_its_stat_is_said(
    served: Downloads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HEAD answered, the GET was denied (an S3 key without kms:Decrypt): the download
    was a 404 "collected" with no line at all."""
    url = served.signed()

    async def denied(*_args: object, **_kwargs: object) -> AsyncIterator[bytes]:
        raise BlobForbidden("cannot read blob: AccessDenied")
        yield b""  # an async generator, as the store's read is

    monkeypatch.setattr(served.blobs, "read", denied)
    with structlog.testing.capture_logs() as logs:
        status, _, _ = await served.fetch(url)
    assert status == 404
    [said] = [e for e in logs if e["event"] == "blobs.download.store_forbidden"]
    assert (said["blob"], said["detail"]) == (served.meta.sha256, "cannot read blob: AccessDenied")


async def test_forbidden_and_not_found_look_alike(served: Downloads) -> None:
    url = served.signed(hashlib.sha256(b"never stored").hexdigest())
    _, _, missing = await served.fetch(url)
    _, _, forbidden = await served.fetch(url.replace("sig=k1.", "sig=k1.x"))
    assert set(json.loads(missing)) == set(json.loads(forbidden))
    for body in (missing, forbidden):
        for word in (b"sig", b"expires", b"k1", b"signature"):
            assert word not in body

"""``GET /v1/blobs/{id}``: the claim-check download the resumed Workato action makes.

The signature is checked before anything else, and every refusal looks the same (no reason, no
id, no signature echoed), so the endpoint tells a prober nothing. Bodies are streamed; a single
byte range is honoured so an interrupted download can resume (RFC 9110 section 14).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Literal

import structlog
from aiohttp import hdrs, web

from gateway.blobs.base import BlobForbidden, BlobMeta, BlobMissing, BlobStore, is_media_type
from gateway.blobs.signing import UrlSigner
from gateway.errors import Forbidden, NotFound, described
from gateway.http.problems import problem

log = structlog.get_logger(__name__)

_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.IGNORECASE)
Unsatisfiable = Literal["unsatisfiable"]
GONE_DETAIL = "the blob does not exist or has been collected"


class BlobDownloads:
    def __init__(self, blobs: BlobStore, signer: UrlSigner, clock: Callable[[], float]) -> None:
        self._blobs = blobs
        self._signer = signer
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/blobs/{id}", self.download, allow_head=True)]

    async def download(self, request: web.Request) -> web.StreamResponse:
        sha256, query, now = request.match_info["id"], request.query, self._clock()
        declared = query.get("type")  # signed: the content type the event declared
        # (checked again all the same: it becomes a header, and only media types are signed)
        malformed = declared is not None and not is_media_type(declared)
        signed = self._signer.verify(sha256, query.get("expires"), query.get("sig"), now, declared)
        if malformed or not signed:
            log.info("blobs.download.forbidden")
            raise Forbidden()
        try:
            meta = await self._blobs.stat(sha256)
        except BlobForbidden:  # most likely collected: the bucket will not say
            log.warning("blobs.download.store_forbidden", blob=sha256)
            meta = None
        if meta is None:  # a URL still valid for a payload that is gone: someone should know
            log.warning("blobs.download.gone", blob=sha256)
            raise NotFound(GONE_DETAIL)
        if declared is not None:
            meta = BlobMeta(meta.sha256, meta.size, declared)
        headers = _headers(meta, max_age_s=max(0, int(query["expires"]) - int(now)))
        if _matches(request.headers.get(hdrs.IF_NONE_MATCH), headers[hdrs.ETAG]):
            return web.Response(status=304, headers=headers)
        wanted = _wanted_range(request, meta)
        if wanted == "unsatisfiable":
            refused = problem(416, "/problems/range", "Range not satisfiable", "see Content-Range")
            refused.headers[hdrs.CONTENT_RANGE] = f"bytes */{meta.size}"
            return refused
        return await self._send(request, meta, headers, wanted)

    async def _send(
        self,
        request: web.Request,
        meta: BlobMeta,
        headers: dict[str, str],
        wanted: tuple[int, int] | None,
    ) -> web.StreamResponse:
        start, end = wanted or (0, meta.size)
        response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
        if wanted:
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{meta.size}"
        response.content_length = end - start
        if request.method == hdrs.METH_HEAD:
            await response.prepare(request)
            return response
        chunks = self._blobs.read(meta.sha256, start, end)
        try:
            await _stream(request, response, chunks, meta.sha256)
        finally:
            await chunks.aclose()
        return response


async def _stream(
    request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes], blob: str
) -> None:
    try:  # the first chunk before the headers: a blob collected since stat() is still a 404
        first = await anext(chunks, b"")
    except BlobMissing:  # collected since stat(): said, as there
        log.warning("blobs.download.gone", blob=blob)
        raise NotFound(GONE_DETAIL) from None
    except BlobForbidden as exc:  # a GET denied where the HEAD was not (no kms:Decrypt, say)
        log.warning("blobs.download.store_forbidden", blob=blob, detail=described(exc))
        raise NotFound(GONE_DETAIL) from None
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:  # the client went away (reset, or lost while we waited to write);
        # it may resume with a Range
        log.info("blobs.download.aborted", blob=blob)
    except Exception as exc:  # the headers are out: end the connection, the client sees it short
        log.warning(
            "blobs.download.failed", blob=blob, error=type(exc).__name__, detail=described(exc)
        )
        if request.transport is not None:
            request.transport.close()


def _headers(meta: BlobMeta, max_age_s: int) -> dict[str, str]:
    """The payload is the third party's, served from the gateway's origin: never rendered."""
    return {
        hdrs.CONTENT_TYPE: meta.content_type,
        hdrs.ETAG: f'"{meta.sha256}"',
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CACHE_CONTROL: f"private, max-age={max_age_s}",
        hdrs.CONTENT_DISPOSITION: "attachment",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _wanted_range(request: web.Request, meta: BlobMeta) -> tuple[int, int] | Unsatisfiable | None:
    """``[start, end)`` of one satisfiable range; None for the whole blob (no Range, a stale
    If-Range, or a Range we may ignore: malformed or several ranges)."""
    header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if header is None or (if_range is not None and if_range.strip() != f'"{meta.sha256}"'):
        return None
    return parse_range(header, meta.size)


def parse_range(header: str, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """One ``bytes=`` range (``a-b``, ``a-``, ``-n``) as ``[start, end)`` against ``size``."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if size == 0:
            return None  # nothing to cut from; the whole (empty) blob is the answer
        return (size - min(n, size), size) if n else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last) + 1, size) if last else size

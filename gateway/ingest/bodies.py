"""Event bodies of any size (invariant 8).

A body up to the spool threshold is parsed in memory, as before. A larger one is streamed to
disk while it is hashed and measured, scanned in a worker thread (the event loop keeps
serving), and the exact bytes of its data go to the blob store: the event's row then names the
blob instead of holding the bytes. Payloads that are not JSON (CSV, binary) always go to the
blob store with their content type; they reach the action as a claim check.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import structlog
from multidict import MultiMapping

from gateway.blobs.base import BlobError, BlobMeta, BlobStore, is_media_type
from gateway.config.settings import IngestSettings
from gateway.errors import PayloadTooLarge, Unavailable, UnsupportedMediaType, described
from gateway.ingest import jsoncheck, streamjson
from gateway.ingest.rawjson import parse_document, split_object
from gateway.ingest.service import Ingest
from gateway.ingest.spool import Body, receive
from gateway.messages import CompletionEvent
from gateway.store.records import JSON, Acceptance

log = structlog.get_logger(__name__)

READ_CHUNK_BYTES = 64 * 1024
OCTET_STREAM = "application/octet-stream"
LEFTOVER_AGE_S = 3600.0
EVENT_MEMBERS = frozenset(CompletionEvent.model_fields)
Span = tuple[int, int]
Data = bytes | Span | None
"""An event's data: its bytes, or where they are in a spooled body, or absent (null)."""


class Chunks(Protocol):
    """A large body, read a chunk at a time."""

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class Upload(Protocol):
    """A request body as the HTTP layer hands it over (aiohttp's request is one): its declared
    length, the whole of it, or its chunks. The intake needs nothing else of HTTP."""

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> Chunks: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...


class Bodies:
    """Receives request bodies and turns them into accepted events."""

    def __init__(self, ingest: Ingest, blobs: BlobStore, settings: IngestSettings):
        self._ingest = ingest
        self._blobs = blobs
        self._threshold = settings.spool_threshold_bytes
        self._spool_dir = Path(settings.spool_dir)
        self.max_body_bytes = settings.max_body_bytes

    def remove_leftovers(self, now: float) -> int:
        """Spool files a killed process left behind (older than an hour, so that another
        process sharing the directory keeps its uploads in progress); how many went."""
        if not self._spool_dir.is_dir():
            return 0
        stale = [path for path in self._spool_dir.iterdir() if _older(path, now - LEFTOVER_AGE_S)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    async def receive(self, upload: Upload, cap: int) -> Body:
        """The body, spooled above the threshold; 413 as soon as it exceeds ``cap``."""
        refuse_encoded(upload.headers)
        declared = upload.content_length
        if declared is not None and declared <= min(self._threshold, cap):
            return Body.of(await upload.read())  # the common, small case: one read
        with _storage():
            return await receive(
                upload.content.iter_chunked(READ_CHUNK_BYTES),
                declared,
                spool_threshold=self._threshold,
                cap=cap,
                spool_dir=self._spool_dir,
                too_large=lambda: PayloadTooLarge(f"the body exceeds the cap of {cap} bytes"),
            )

    async def event_document(self, body: Body) -> tuple[dict[str, object], Data]:
        """The values of an event document's members other than ``data``, and ``data`` itself,
        never decoded: its bytes (in memory) or its span in a spooled body, which is validated
        and scanned in a thread."""
        if body.memory is not None:
            return split_object(body.memory, "data")
        return await asyncio.to_thread(_scan_document, body)

    async def accept_data(
        self, tenant: str, source: str, event: CompletionEvent, body: Body, data: Data
    ) -> Acceptance:
        """Accept ``event`` whose data are JSON bytes, or the JSON value at a span of a spooled
        ``body`` (moved to the blob store), or absent (null)."""
        if data is None or isinstance(data, bytes):
            return await self._ingest.accept(tenant, source, event, data or b"null")
        self._ingest.require_object(tenant, body.read(data[0], data[0] + 1))
        staged, abandoned = self._staged(), threading.Event()
        copy = functools.partial(streamjson.copy_span, abandoned=abandoned)
        try:
            with _storage():
                sha256, size = await asyncio.to_thread(copy, body, data, staged)
            return await self._store(tenant, source, event, staged, BlobMeta(sha256, size, JSON))
        finally:
            abandoned.set()  # a cancelled request leaves its copy running: it removes its file
            staged.unlink(missing_ok=True)

    async def accept_payload(
        self, tenant: str, source: str, event: CompletionEvent, body: Body, content_type: str
    ) -> Acceptance:
        """Accept ``event`` whose data is the whole body, of any content type."""
        if content_type == JSON:
            if body.memory is not None:
                parse_document(body.memory)  # 422 unless it is JSON
                data = body.memory.strip(b" \t\r\n")
                return await self._ingest.accept(tenant, source, event, data)
            await asyncio.to_thread(jsoncheck.validate, body)
            span = await asyncio.to_thread(streamjson.span_at, body, ())
            return await self.accept_data(tenant, source, event, body, span)
        meta = BlobMeta(body.sha256, body.size, content_type)
        await self._ingest.reserve_blob(meta)  # the row before the bytes (blobs/reservation.py)
        with _storage():
            if body.path is not None:
                await self._blobs.put_file(body.path, meta)
            else:
                await self._blobs.put_bytes(body.memory or b"", content_type)
        return await self._ingest.accept(tenant, source, event, b"", meta)

    async def _store(
        self, tenant: str, source: str, event: CompletionEvent, staged: Path, meta: BlobMeta
    ) -> Acceptance:
        await self._ingest.reserve_blob(meta)  # the row before the bytes (blobs/reservation.py)
        with _storage():
            await self._blobs.put_file(staged, meta)
        return await self._ingest.accept(tenant, source, event, b"", meta)

    def _staged(self) -> Path:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        return self._spool_dir / f"{uuid.uuid4().hex}.data"


def refuse_encoded(headers: Mapping[str, str]) -> None:
    """415 for a body sent compressed (``Content-Encoding``): its declared length is not its
    size, so neither the cap nor the spool threshold would hold, and its bytes are not the
    event's. The server never decompresses (``auto_decompress=False``)."""
    if "Content-Encoding" not in headers:
        return
    if isinstance(headers, MultiMapping):  # every such header counts, not the first
        values = headers.getall("Content-Encoding")
    else:
        values = [headers["Content-Encoding"]]
    codings = {coding.strip().lower() for value in values for coding in value.split(",")}
    if not codings <= {"", "identity"}:
        raise UnsupportedMediaType(
            "Content-Encoding is not accepted: send the body uncompressed",
            errors=[{"field": "Content-Encoding", "message": "must be absent or identity"}],
        )


@contextmanager
def _storage() -> Iterator[None]:
    """The blob store or the disk failing is the gateway's problem, not the request's: 503,
    nothing accepted, the sender retries. A client that went away is not such a failure."""
    try:
        yield
    except ConnectionError:
        raise
    except (BlobError, OSError) as exc:
        log.warning("intake.storage_failed", error=type(exc).__name__, detail=described(exc))
        raise Unavailable() from exc


def _scan_document(body: Body) -> tuple[dict[str, object], Data]:
    jsoncheck.validate(body)
    spans = streamjson.member_spans(body, EVENT_MEMBERS)
    fields = {
        name: streamjson.load_small(body, span, field=name)
        for name, span in spans.items()
        if name != "data"
    }
    return fields, spans.get("data")


def content_type_of(headers: Mapping[str, str]) -> str:
    """The media type without parameters, lower case (``text/csv; charset=utf-8`` → text/csv);
    415 unless it is ``type/subtype`` in RFC 6838's restricted names (it is served back)."""
    value = headers.get("Content-Type", OCTET_STREAM)
    media = value.split(";", 1)[0].strip().lower() or OCTET_STREAM
    if not is_media_type(media):
        raise UnsupportedMediaType("the Content-Type must be a media type such as text/csv")
    return media


def _older(path: Path, than: float) -> bool:
    """A file last written before ``than``; one that is gone meanwhile (another process's
    upload ending) is not, where its ``stat`` raised out of the gateway's start."""
    try:
        return path.is_file() and path.stat().st_mtime < than
    except FileNotFoundError:
        return False

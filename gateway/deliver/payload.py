"""Shaping the resume request (DESIGN 5.3): the envelope around the event's exact bytes.

The body is assembled from byte strings, never by re-serializing the payload, so the size
checked against the limit is the size of the very body that is sent (invariant 7). A body is
a frame (the bytes before and after the payload) plus the payload itself, so a payload kept in
the blob store can be streamed between the two without ever being held in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from gateway.clock import isoformat
from gateway.store.records import Claim


@dataclass(frozen=True, slots=True)
class PayloadRef:
    """A claim check: where the action downloads the payload, and how to check what it got."""

    url: str
    size: int
    sha256: str
    content_type: str
    expires_at: float

    def json_bytes(self) -> bytes:
        return json.dumps(
            {
                "url": self.url,
                "size": self.size,
                "sha256": self.sha256,
                "content_type": self.content_type,
                "expires_at": isoformat(self.expires_at),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()


def data_frame(claim: Claim, raw_mode: bool) -> tuple[bytes, bytes]:
    """The bytes of ``data`` before and after the payload: the envelope, or none in raw mode."""
    if raw_mode:
        return b"", b""
    head = {
        "status": claim.status,
        "key": claim.key,
        "event_id": claim.event_id,
        "source": claim.source,
        "received_at": isoformat(claim.received_at),
    }
    metadata = (claim.metadata_json or "null").encode()
    prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1].encode()
    return b"".join((prefix, b',"metadata":', metadata, b',"payload":')), b"}"


def reference_data(claim: Claim, raw_mode: bool, ref: PayloadRef) -> bytes:
    """``data`` with the payload replaced by its claim check (``payload`` null)."""
    if raw_mode:
        return b"".join((b'{"payload_ref":', ref.json_bytes(), b"}"))
    before, after = data_frame(claim, raw_mode)
    return b"".join((before, b'null,"payload_ref":', ref.json_bytes(), after))


def body_frame(token: str, data_before: bytes, data_after: bytes) -> tuple[bytes, bytes]:
    """The bytes of the request body before and after the payload."""
    head = b"".join((b'{"token":', json.dumps(token).encode(), b',"data":', data_before))
    return head, data_after + b"}"


def resume_body(token: str, data: bytes) -> bytes:
    """``{"token": ..., "data": ...}`` with ``data`` spliced in verbatim."""
    head, tail = body_frame(token, b"", b"")
    return b"".join((head, data, tail))


class FramedBody:
    """A body streamed as its frame around a payload read in chunks, which remembers whether
    the payload failed to read to its announced size: the request then left incomplete (its
    Content-Length unmet), so Workato cannot have acted on it."""

    def __init__(self, head: bytes, payload: AsyncIterable[bytes], size: int, tail: bytes):
        self._head, self._payload, self._size, self._tail = head, payload, size, tail
        self.failed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        read = 0
        try:
            async for chunk in self._payload:
                read += len(chunk)
                yield chunk
        except Exception:
            self.failed = True
            raise
        if read != self._size:
            self.failed = True
            raise OSError(f"the payload ended at byte {read} of {self._size}")
        yield self._tail

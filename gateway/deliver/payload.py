"""Shaping the resume request (DESIGN 5.3): the envelope around the event's exact bytes.

The body is assembled from byte strings, never by re-serializing the payload, so the size
checked against the limit is the size of the very body that is sent (invariant 7).
"""

from __future__ import annotations

import json

from gateway.clock import isoformat
from gateway.store.records import Claim


def resume_data(claim: Claim, raw_mode: bool) -> bytes:
    """The ``data`` member: the envelope, or in raw mode the event data as it came."""
    if raw_mode:
        return claim.data
    head = {
        "status": claim.status,
        "key": claim.key,
        "event_id": claim.event_id,
        "source": claim.source,
        "received_at": isoformat(claim.received_at),
    }
    metadata = (claim.metadata_json or "null").encode()
    prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1].encode()
    return b"".join((prefix, b',"metadata":', metadata, b',"payload":', claim.data, b"}"))


def resume_body(token: str, data: bytes) -> bytes:
    """``{"token": ..., "data": ...}`` with ``data`` spliced in verbatim."""
    return b"".join((b'{"token":', json.dumps(token).encode(), b',"data":', data, b"}"))


def body_size(token: str, data: bytes) -> int:
    """The exact length of ``resume_body(token, data)`` without building it."""
    return len(b'{"token":,"data":}') + len(json.dumps(token).encode()) + len(data)

"""The requests the bench sends: ~1 KB completion events, wait registrations, sandbox calls.

Bodies are built from a fixed ``data`` document and unique ids with plain byte formatting, so
building a request costs the load generator almost nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.httpload import Reply, encode_request

EVENT_BYTES = 1024
JSON = "application/json"


def _event_data(size: int) -> bytes:
    """A realistic-looking ``data`` member, padded so the whole event is about ``size`` bytes."""
    lines = [{"sku": f"SKU-{n:05d}", "qty": n % 7 + 1, "price": 9.5 + n} for n in range(8)]
    doc = {"order": {"id": "ORD-000000", "currency": "EUR", "total": 412.0}, "lines": lines}
    skeleton = json.dumps({**doc, "note": ""}, separators=(",", ":"))
    envelope = len(b'{"id":"","key":"","status":"succeeded","data":}') + 2 * 16
    note = "x" * max(0, size - envelope - len(skeleton))
    return json.dumps({**doc, "note": note}, separators=(",", ":")).encode()


EVENT_DATA = _event_data(EVENT_BYTES)


@dataclass(frozen=True, slots=True)
class Api:
    """A server speaking the gateway's ``/v1`` API (the gateway, a baseline, the forwarder)."""

    host: str
    port: int
    api_key: str

    def _post(self, path: str, body: bytes) -> bytes:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": JSON}
        return encode_request("POST", f"{self.host}:{self.port}", path, body, headers)

    def event(self, event_id: str, key: str) -> bytes:
        """``POST /v1/events`` with a ~1 KB body."""
        body = b'{"id":"%s","key":"%s","status":"succeeded","data":%s}' % (
            event_id.encode(),
            key.encode(),
            EVENT_DATA,
        )
        return self._post("/v1/events", body)

    def wait(self, key: str, resume_token: str) -> bytes:
        """``POST /v1/waits``."""
        body = json.dumps({"key": key, "resume_token": resume_token}).encode()
        return self._post("/v1/waits", body)


def outcome(reply: Reply) -> str:
    """``matched``/``buffered``/``accepted`` for a 202, ``http_<status>`` otherwise."""
    if reply.status != 202:
        return f"http_{reply.status}"
    if b'"matched"' in reply.body:
        return "matched"
    if b'"buffered"' in reply.body:
        return "buffered"
    return "accepted"


ACCEPTED = ("matched", "buffered", "accepted")

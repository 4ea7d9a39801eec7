"""A minimal HTTP/1.1 keep-alive client for load generation, on raw asyncio protocols.

aiohttp's client costs several times more CPU per request than a bare aiohttp server, so with it
the load generator, not the server, would set the ceiling on this two-core machine. Requests
are pre-encoded bytes, one in flight per connection, and responses must carry Content-Length
(aiohttp servers always send it for the small bodies measured here).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"


@dataclass(frozen=True, slots=True)
class Reply:
    """One response: status, body and the wall-clock time its last byte arrived."""

    status: int
    body: bytes
    arrived_at: float


class BadResponse(ConnectionError):
    """The server answered something this minimal client does not understand."""


def encode_request(
    method: str, host: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Reply] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, request: bytes) -> asyncio.Future[Reply]:
        """Write ``request``; the future resolves with the reply."""
        if self._transport is None or self.closed:
            raise ConnectionError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            reply = _complete_reply(self._buffer)
        except BadResponse as exc:
            self._fail(exc)
            return
        if reply is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _complete_reply(buffer: bytearray) -> Reply | None:
    """Take one complete response off the front of ``buffer``, if it is all there."""
    end = buffer.find(HEADER_END)
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(CONTENT_LENGTH)
    if start < 0:
        raise BadResponse("response without Content-Length")
    stop = head.find(b"\r\n", start + 2)
    length = int(head[start + len(CONTENT_LENGTH) : stop if stop > 0 else len(head)])
    total = end + len(HEADER_END) + length
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + len(HEADER_END) : total])
    del buffer[:total]
    return Reply(int(head[9:12]), body, time.time())


async def connect(host: str, port: int) -> Connection:
    """Open one connection (TCP_NODELAY is asyncio's default)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


class Pool:
    """Idle connections to one server, opened on demand, reused while they stay open."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[Connection] = []

    async def request(self, request: bytes) -> Reply:
        """Send on an idle connection (or a new one) and return it to the pool afterwards."""
        conn = self._idle.pop() if self._idle else await connect(self.host, self.port)
        reply = await conn.send(request)
        if not conn.closed:
            self._idle.append(conn)
        return reply

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

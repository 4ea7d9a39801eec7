"""JSON in a body that may be far larger than memory: find, check and copy values by span.

A spooled body (invariant 8) is never read whole. A structural scanner walks it chunk by chunk,
keeping only a nesting depth and whether it is inside a string, so even one 200 MB string costs
a chunk of memory; compiled patterns skip whole strings and small containers per match, so
Python runs once per bracket, not per byte. Spans are byte offsets into the body, and what they
name is copied byte-exact (invariant 7). The scanner finds without checking; ``validate``
checks, with ijson, whose parser is fed long strings as ``""`` after checking them itself,
because yajl would hold a token that spans its input chunks in memory whole.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import ijson

from gateway.errors import InvalidInput
from gateway.ingest.rawjson import parse_document
from gateway.ingest.spool import CHUNK_BYTES, Body
from gateway.jsonpointer import array_index

Span = tuple[int, int]
SMALL_BYTES = 64 * 1024  # a member name, or a scalar the walk decodes

_QUOTE = 0x22
_OPEN_BRACE, _CLOSE_BRACE, _OPEN_BRACKET, _CLOSE_BRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_OPENERS = (_OPEN_BRACE, _OPEN_BRACKET)
_SCALAR_FIRST = frozenset(b"-0123456789tfn")
_SCALAR_BYTES = b"-+.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # C-accelerated

_Match = Callable[[bytes, int], "re.Match[bytes]"]


def _matcher(pattern: bytes) -> _Match:
    """``match`` of a pattern that matches the empty string, so it never returns None."""
    return cast(_Match, re.compile(pattern, re.S).match)


def _nested(level: bytes) -> bytes:
    return rb"\{(?:" + level + rb")*+\}|\[(?:" + level + rb")*+\]"


_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_ATOM = rb'[^"{}\[\]]++|' + _STRING
_FLAT = _ATOM + b"|" + _nested(_ATOM)

_WS = _matcher(rb"[ \t\n\r]*")
_SCALAR = _matcher(rb"[-+.0-9A-Za-z]*")
# String content: stops at the closing '"', at a '\' that ends the chunk, or at the chunk end.
_STRING_BODY = _matcher(rb'(?:[^"\\]++|\\.)*+')
# What leaves the depth unchanged: text, whole strings, containers nested up to 2 levels.
_RUN = _matcher(b"(?:" + _ATOM + b"|" + _nested(_FLAT) + b")*+")
# For the checker: text and whole strings, up to a string the chunk does not finish.
_OUTSIDE = _matcher(rb'(?:[^"]++|' + _STRING + b")*+")
_STRICT_STRING_BODY = _matcher(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+')
_PARTIAL_ESCAPE = re.compile(rb"\\(?:u[0-9A-Fa-f]{0,3})?\Z").match


def span_at(body: Body, tokens: Sequence[str], *, chunk_size: int = CHUNK_BYTES) -> Span | None:
    """The byte span ``[start, end)`` of the value a parsed JSON pointer names, or None.

    Names what ``rawjson.raw_at`` names: no tokens is the whole document without the whitespace
    around it, the last of duplicate members counts. Only the walk is checked: ``validate`` first.
    """
    start = 0
    for token in tokens:
        child = _child_start(body, start, token, chunk_size)
        if child is None:
            return None
        start = child
    cursor = _Cursor(body, start, chunk_size)
    cursor.peek()
    start = cursor.offset
    return start, cursor.skip_value()


def member_spans(body: Body, *, chunk_size: int = CHUNK_BYTES) -> dict[str, Span]:
    """The spans of the members of a JSON object document; of duplicates the last counts."""
    cursor = _Cursor(body, 0, chunk_size)
    if cursor.peek() != _OPEN_BRACE:
        raise InvalidInput("the body is not a JSON object: expected '{'")
    cursor.pos += 1
    spans = {name: span for name, span in cursor.members()}
    if cursor.peek() is not None:
        raise cursor.invalid("extra data after the object")
    return spans


def load_small(body: Body, span: Span, limit: int = SMALL_BYTES, field: str | None = None) -> Any:
    """The decoded value at a span that must be small (an event's id, key, status)."""
    where = {} if field is None else {"field": field}
    start, end = span
    if end - start > limit:
        raise InvalidInput(f"{field or 'the value'} is longer than {limit} bytes", **where)
    try:
        return parse_document(body.read(start, end))
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, **where) from None


def copy_span(
    body: Body, span: Span, dst: Path, *, chunk_size: int = CHUNK_BYTES
) -> tuple[str, int]:
    """Copy the span's bytes to a new private file ``dst``; their sha256 and size."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as file:
            for chunk in body.chunks(span[0], span[1], chunk_size):
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


def validate(
    body: Body, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_BYTES
) -> None:
    """Check that ``[start, end)`` is exactly one JSON value, as ``rawjson`` would accept it
    (UTF-8, no NaN or Infinity), reading it in chunks; InvalidInput says what is wrong."""
    checker = _Checker()
    for chunk in body.chunks(start, end, chunk_size):
        checker.feed(chunk)
    checker.close()


def _child_start(body: Body, start: int, token: str, chunk_size: int) -> int | None:
    cursor = _Cursor(body, start, chunk_size)
    opener = cursor.peek()
    cursor.pos += 1
    if opener == _OPEN_BRACE:
        found = None
        for name, span in cursor.members():
            if name == token:
                found = span[0]  # keep scanning: a later duplicate wins
        return found
    if opener == _OPEN_BRACKET:
        index = array_index(token)
        return None if index is None else cursor.element_start(index)
    return None  # a scalar has no children


class _Cursor:
    """A read position in a body that holds one chunk at a time."""

    __slots__ = ("_chunks", "base", "buf", "pos")

    def __init__(self, body: Body, start: int, chunk_size: int) -> None:
        self._chunks = body.chunks(start, None, chunk_size)
        self.buf = b""
        self.base = start  # the offset of buf[0]
        self.pos = 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def next_chunk(self) -> bool:
        """Move on to the next chunk (the current one is used up); False at the end."""
        self.base += len(self.buf)
        self.buf = next(self._chunks, b"")
        self.pos = 0
        return bool(self.buf)

    def invalid(self, what: str) -> InvalidInput:
        return InvalidInput(f"the body is not JSON: {what} at byte {self.offset}")

    def peek(self) -> int | None:
        """The next byte after whitespace, not consumed; None at the end of the body."""
        while True:
            self.pos = _WS(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.next_chunk():
                return None

    def value_start(self) -> int | None:
        """The offset of the value after whitespace, or None at the end of the body."""
        return None if self.peek() is None else self.offset

    def take(self, allowed: bytes) -> int:
        """Consume the next byte after whitespace, which must be one of ``allowed``."""
        byte = self.peek()
        if byte is None or byte not in allowed:
            raise self.invalid(f"expected one of {allowed.decode()!r}")
        self.pos += 1
        return byte

    def members(self) -> Iterator[tuple[str, Span]]:
        """Name and value span of each member of the object whose '{' was just consumed."""
        if self.peek() == _CLOSE_BRACE:
            self.pos += 1
            return
        while True:
            if self.peek() != _QUOTE:
                raise self.invalid("expected a member name")
            self.pos += 1
            name = self.string_rest(SMALL_BYTES)
            self.take(b":")
            self.peek()
            start = self.offset
            yield name, (start, self.skip_value())
            if self.take(b",}") == _CLOSE_BRACE:
                return

    def element_start(self, index: int) -> int | None:
        """The offset of element ``index`` of the array whose '[' was just consumed, or None."""
        if self.peek() == _CLOSE_BRACKET:
            return None
        for _ in range(index):
            self.skip_value()
            if self.take(b",]") == _CLOSE_BRACKET:
                return None
        return self.value_start()

    def skip_value(self) -> int:
        """Move past the value that starts here (after whitespace); its end offset."""
        byte = self.peek()
        if byte == _QUOTE:
            self.pos += 1
            self.string_rest()
        elif byte in _OPENERS:
            self.pos += 1
            self._container_rest()
        elif byte is not None and byte in _SCALAR_FIRST:
            self._scalar()
        else:
            raise self.invalid("expected a value")
        return self.offset

    def string_rest(self, keep: int = 0) -> str:
        """Move past the string whose '"' was just consumed; it is decoded when ``keep`` > 0
        (it must then be at most ``keep`` bytes), else skipped and returned as ""."""
        kept: list[bytes] = []
        size, escaped = 0, False
        while True:
            buf, start = self.buf, self.pos
            pos = _STRING_BODY(buf, start + escaped).end()  # an escaped byte opens the chunk
            closed = pos < len(buf) and buf[pos] == _QUOTE
            escaped = pos < len(buf) and not closed  # a '\' ends the chunk
            self.pos = pos + 1 if pos < len(buf) else pos
            if keep:
                size += self.pos - start
                if size > keep + 1:
                    raise InvalidInput(f"a member name is longer than {keep} bytes")
                kept.append(buf[start : self.pos])
            if closed:
                return _decode_string(b"".join(kept)) if keep else ""
            if not self.next_chunk():
                raise self.invalid("unterminated string")

    def _container_rest(self) -> None:
        """Move past the bracket that closes the container whose opener was just consumed."""
        depth = 1
        while True:
            depth, self.pos = _brackets(self.buf, self.pos, depth)
            if depth == 0:
                return
            if self.pos < len(self.buf):  # at a string that runs past this chunk
                self.pos += 1
                self.string_rest()
            elif not self.next_chunk():
                raise self.invalid("unterminated array or object")

    def _scalar(self) -> None:
        while True:
            self.pos = _SCALAR(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.next_chunk():
                return


def _brackets(buf: bytes, pos: int, depth: int) -> tuple[int, int]:
    """Scan from ``pos`` until ``depth`` reaches 0 (just past the closer), the chunk ends, or
    a string starts that the chunk does not finish (at its '"')."""
    run, end = _RUN, len(buf)
    while True:
        pos = run(buf, pos).end()
        if pos == end:
            return depth, pos
        byte = buf[pos]
        if byte == _QUOTE:
            return depth, pos
        depth += 1 if byte in _OPENERS else -1
        pos += 1
        if depth == 0:
            return 0, pos


def _decode_string(raw: bytes) -> str:
    """A string's content and closing quote, decoded as ``rawjson`` decodes member names."""
    try:
        name, _ = _scanstring(raw.decode("utf-8"), 0)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: a member name: {exc}") from None
    return name  # type: ignore[no-any-return]


class _Checker:
    """Feeds ijson a body chunk by chunk. A string that a chunk does not finish is checked here
    and fed as ``""``: yajl would buffer it whole, and it may be most of the body."""

    def __init__(self) -> None:
        self._parser = ijson.basic_parse_coro(_Discard(), use_float=True)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._in_string = False
        self._carry = b""  # an escape sequence the last chunk cut short
        self._scalar = 0  # the length of the number or literal the last chunk ended in

    def feed(self, chunk: bytes) -> None:
        try:
            self._utf8.decode(chunk)
        except UnicodeDecodeError:
            raise InvalidInput("the body is not UTF-8") from None
        data, pos = chunk, 0
        if self._in_string:
            data = self._carry + chunk if self._carry else chunk
            pos = self._string_end(data, 0)
            if pos < 0:
                return
            self._send(b'"')
        self._outside(data, pos)

    def close(self) -> None:
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InvalidInput("the body is not UTF-8") from None
        if self._in_string:
            raise InvalidInput("the body is not JSON: unterminated string")
        self._call(self._parser.close)

    def _outside(self, data: bytes, pos: int) -> None:
        end = _OUTSIDE(data, pos).end()
        piece = data[pos : end + 1]  # with the '"' of a string this chunk does not finish
        self._send(piece)
        if end == len(data):
            self._track_scalar(piece)
            return
        self._scalar = 0
        self._in_string = True
        self._string_end(data, end + 1)  # the string runs past the chunk: no end here

    def _string_end(self, data: bytes, pos: int) -> int:
        """Check string content from ``pos``; the offset past its closing '"', or -1 when it
        runs past ``data`` (an escape sequence cut short is carried over)."""
        end = _STRICT_STRING_BODY(data, pos).end()
        self._carry = b""
        if end < len(data) and data[end] == _QUOTE:
            self._in_string = False
            return end + 1
        if end < len(data):
            if not _PARTIAL_ESCAPE(data, end):
                raise InvalidInput("the body is not JSON: invalid character or escape in a string")
            self._carry = data[end:]
        return -1

    def _track_scalar(self, piece: bytes) -> None:
        # yajl holds a token that spans chunks: bound the one a chunk ends in
        tail = piece[-SMALL_BYTES - 1 :]
        run = len(tail) - len(tail.rstrip(_SCALAR_BYTES))
        self._scalar = self._scalar + run if run == len(piece) else run
        if self._scalar > SMALL_BYTES:
            raise InvalidInput(f"the body is not JSON: a number is longer than {SMALL_BYTES} bytes")

    def _send(self, data: bytes) -> None:
        if data:
            self._call(self._parser.send, data)

    @staticmethod
    def _call(step: Any, *args: bytes) -> None:
        try:
            step(*args)
        except (ijson.JSONError, ValueError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInput(f"the body is not JSON: {message}") from None


class _Discard:
    """An ijson target that drops events: validation needs none of them."""

    def send(self, event: object) -> None:
        pass

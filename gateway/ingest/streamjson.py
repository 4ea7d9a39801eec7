"""JSON in a body that may be far larger than memory: find, check and copy values by span.

A spooled body (invariant 8) is never read whole. A scanner walks it a chunk at a time and
keeps only a nesting depth and whether it is inside a string, so one 200 MB string costs a
chunk of memory. Spans are byte offsets into the body; what they name is copied byte-exact
(invariant 7). The scanner finds without checking; ``jsoncheck.validate`` checks, with ijson.

Speed comes from doing the per-byte work in C. Near the place a value may end, compiled
patterns scan byte-exact. Across the rest, escape pairs are blanked out (then every '"' left
starts or ends a string), ``translate`` keeps just quotes and brackets, and counting them tells
whether the container closes in a stretch: a stretch it does not close in is passed whole, one
it does is halved until the closing bracket is in reach of the exact scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple, cast

from gateway.errors import InvalidInput
from gateway.ingest.rawjson import parse_document
from gateway.ingest.spool import CHUNK_BYTES, Body
from gateway.jsonpointer import array_index

Span = tuple[int, int]
SMALL_BYTES = 64 * 1024  # the longest member name the walk decodes

QUOTE, _BACKSLASH = 0x22, 0x5C
_OPEN_BRACE, _CLOSE_BRACE, _OPEN_BRACKET, _CLOSE_BRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_OPENERS = (_OPEN_BRACE, _OPEN_BRACKET)
_SCALAR_FIRST = frozenset(b"-0123456789tfn")
SCALAR_BYTES = b"-+.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"{}[]')))
_PARENS = bytes.maketrans(b"{[}]", b"(())")
_STEPS = bytes.maketrans(b"()", b"\x01\xff")
_PAIR_PASSES = 32  # nesting deeper than this within a stretch is counted step by step
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # C-accelerated

_Match = Callable[[bytes, int, int], "re.Match[bytes]"]


def matcher(pattern: bytes) -> _Match:
    """``match`` of a pattern that matches the empty string, so it never returns None."""
    return cast(_Match, re.compile(pattern, re.S).match)


def _nested(level: bytes) -> bytes:
    return rb"\{(?:" + level + rb")*+\}|\[(?:" + level + rb")*+\]"


_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_ATOM = rb'[^"{}\[\]]++|' + _STRING
_WS = matcher(rb"[ \t\n\r]*")
_SCALAR = matcher(rb"[-+.0-9A-Za-z]*")
# String content: stops at the closing '"', at a '\' that ends the stretch, or at its end.
_STRING_BODY = matcher(rb'(?:[^"\\]++|\\.)*+')
# What leaves the depth unchanged: text, whole strings, containers nested up to 2 levels.
_RUN = matcher(b"(?:" + _ATOM + b"|" + _nested(_ATOM + b"|" + _nested(_ATOM)) + b")*+")
QUOTED = re.compile(rb'"[^"]*"')


def span_at(body: Body, tokens: Sequence[str], *, chunk_size: int = CHUNK_BYTES) -> Span | None:
    """The byte span ``[start, end)`` of the value a parsed JSON pointer names, or None.

    Names what ``rawjson.raw_at`` names: no tokens is the whole document without the whitespace
    around it, the last of duplicate members counts. Only the walk is checked: ``validate`` first.
    """
    start = 0
    for token in tokens:
        child = _child_start(_Cursor(body, start, chunk_size), token)
        if child is None:
            return None
        start = child
    cursor = _Cursor(body, start, chunk_size)
    cursor.peek()
    start = cursor.offset
    return start, cursor.skip_value()


def member_spans(
    body: Body, names: Collection[str] | None = None, *, chunk_size: int = CHUNK_BYTES
) -> dict[str, Span]:
    """The spans of the members of a JSON object document; of duplicates the last counts.
    With ``names``, a member of another name is refused as soon as it is met: a body of
    millions of members held a span each (20 times the body's size in memory)."""
    cursor = _Cursor(body, 0, chunk_size)
    if cursor.peek() != _OPEN_BRACE:
        raise InvalidInput("the body is not a JSON object: expected '{'")
    cursor.pos += 1
    spans: dict[str, Span] = {}
    for name, span in cursor.members():
        if names is not None and name not in names:
            extra = "Extra inputs are not permitted"  # as pydantic says it of small bodies
            raise InvalidInput(f"{name}: {extra}", errors=[{"field": name, "message": extra}])
        spans[name] = span
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


class Abandoned(Exception):
    """The caller of a copy went away: its file is removed by the copy itself."""


def copy_span(
    body: Body,
    span: Span,
    dst: Path,
    *,
    chunk_size: int = CHUNK_BYTES,
    abandoned: threading.Event | None = None,
) -> tuple[str, int]:
    """Copy the span's bytes to a new private file ``dst``; their sha256 and size.

    A thread cannot be cancelled: a caller that gives up sets ``abandoned`` and removes
    ``dst``, and the copy, checking the event after each write, removes the file it may have
    created after that removal and stops."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as file:
            for chunk in body.chunks(span[0], span[1], chunk_size):
                if abandoned is not None and abandoned.is_set():
                    raise Abandoned()
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
        if abandoned is not None and abandoned.is_set():
            raise Abandoned()
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


def _child_start(cursor: _Cursor, token: str) -> int | None:
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

    __slots__ = ("_chunks", "base", "buf", "pos", "window")

    def __init__(self, body: Body, start: int, chunk_size: int) -> None:
        self._chunks = body.chunks(start, None, chunk_size)
        self.buf = b""
        self.base = start  # the offset of buf[0]
        self.pos = 0
        self.window = max(1, chunk_size >> 6)  # how far to scan byte-exact before counting

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
            self.pos = _WS(self.buf, self.pos, len(self.buf)).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.next_chunk():
                return None

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
            if self.peek() != QUOTE:
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
        self.peek()
        return self.offset

    def skip_value(self) -> int:
        """Move past the value that starts here (after whitespace); its end offset."""
        byte = self.peek()
        if byte == QUOTE:
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
            end, escaped = _string_end(buf, start + escaped, self.window)
            self.pos = end + 1 if end < len(buf) else end
            if keep:
                size += self.pos - start
                if size > keep + 1:
                    raise InvalidInput(f"a member name is longer than {keep} bytes")
                kept.append(buf[start : self.pos])
            if end < len(buf):
                return _decode_string(b"".join(kept)) if keep else ""
            if not self.next_chunk():
                raise self.invalid("unterminated string")

    def _container_rest(self) -> None:
        """Move past the bracket that closes the container whose opener was just consumed."""
        state = _Depth(1)
        while True:
            self.pos, state = _settle(self.buf, self.pos, state, self.window)
            if state.depth == 0:
                return
            if not self.next_chunk():
                raise self.invalid("unterminated array or object")

    def _scalar(self) -> None:
        while True:
            self.pos = _SCALAR(self.buf, self.pos, len(self.buf)).end()
            if self.pos < len(self.buf) or not self.next_chunk():
                return


class _Depth(NamedTuple):
    """How deep a scan is inside the container it skips, and whether it is in a string."""

    depth: int
    in_string: bool = False
    escaped: bool = False  # a '\' in a string ended the last stretch


def _string_end(buf: bytes, pos: int, window: int) -> tuple[int, bool]:
    """Where string content from ``pos`` ends: the index of its closing '"', or ``len(buf)``
    with whether a '\\' there escapes the next chunk's first byte. Past the first window,
    stretches of doubling length are searched in bulk."""
    n, size = len(buf), window
    end = _STRING_BODY(buf, pos, min(n, pos + window)).end()
    while end < n and buf[end] != QUOTE:
        if end == n - 1 and buf[end] == _BACKSLASH:
            return n, True
        size *= 2
        stretch = blank_escapes(buf[end : end + size])
        found = stretch.find(b'"')
        if found >= 0:
            return end + found, False
        end += len(stretch) - stretch.endswith(b"\\")  # an escape cut short opens the next
    return end, False


def _settle(buf: bytes, pos: int, state: _Depth, window: int) -> tuple[int, _Depth]:
    """Look for the closing bracket from ``pos``: the position just past it (depth 0), or the
    end of ``buf`` and the state there. Stretches of doubling length are counted in bulk."""
    size, n = window, len(buf)
    while pos < n:
        end = min(n, pos + size)
        if size > window:
            counted = _count(buf[pos:end], state)
            if counted is not None:
                pos, state, size = end, counted, size * 2
                continue
            pos, end, state = _bisect(buf, pos, end, state, window)
        pos, state = _scan(buf, pos, end, state)
        if state.depth == 0:
            break
        size = 2 * window
    return pos, state


def _bisect(buf: bytes, pos: int, end: int, state: _Depth, window: int) -> tuple[int, int, _Depth]:
    """Narrow ``[pos, end)``, which holds the closing bracket, to at most ``window`` bytes."""
    while end - pos > window:
        mid = (pos + end) // 2
        counted = _count(buf[pos:mid], state)
        if counted is None:
            end = mid
        else:
            pos, state = mid, counted
    return pos, end, state


def _scan(buf: bytes, pos: int, end: int, state: _Depth) -> tuple[int, _Depth]:
    """Scan ``buf[pos:end]`` byte-exact for the closing bracket (see ``_settle``)."""
    depth, in_string, escaped = state
    while pos < end:
        if in_string:
            pos = _STRING_BODY(buf, pos + escaped, end).end()
            in_string = pos == end or buf[pos] != QUOTE
            escaped = in_string and pos < end  # stopped at a '\' that ends the stretch
            pos = pos + 1 if pos < end else end
            continue
        pos, depth = _brackets(buf, pos, end, depth)
        if depth == 0:
            return pos, _Depth(0)
        if pos < end:
            in_string, pos = True, pos + 1
    return pos, _Depth(depth, in_string, escaped)


def _brackets(buf: bytes, pos: int, end: int, depth: int) -> tuple[int, int]:
    """Scan until ``depth`` reaches 0 (just past the closer), the stretch ends, or a string
    opens that the stretch does not finish (at its '"')."""
    run = _RUN
    while True:
        pos = run(buf, pos, end).end()
        if pos == end or buf[pos] == QUOTE:
            return pos, depth
        depth += 1 if buf[pos] in _OPENERS else -1
        pos += 1
        if depth == 0:
            return pos, 0


def _count(stretch: bytes, state: _Depth) -> _Depth | None:
    """The state after ``stretch``, counted in bulk, or None if the container closes in it."""
    depth, in_string, escaped = state
    if escaped:
        stretch = stretch[1:]
    stretch = blank_escapes(stretch)
    escaped = stretch.endswith(b"\\")
    marks = stretch.translate(None, _NOT_MARKS)  # quotes and brackets
    if in_string:
        marks = b'"' + marks
    in_string = marks.count(b'"') % 2 == 1
    if in_string:
        marks += b'"'
    marks = marks.replace(b'""', b"")  # strings without brackets in them
    if b'"' in marks:
        marks = QUOTED.sub(b"", marks)
    depth_after = _balance(marks, depth)
    return None if depth_after is None else _Depth(depth_after, in_string, escaped)


def _balance(brackets: bytes, depth: int) -> int | None:
    """The depth after ``brackets`` (nothing else), or None if it falls to 0 on the way."""
    closers = brackets.count(b"}") + brackets.count(b"]")
    if closers < depth:
        return depth + len(brackets) - 2 * closers
    parens = brackets.translate(_PARENS)
    for _ in range(_PAIR_PASSES):  # drop matched pairs until only ")))(((" is left
        if b"()" not in parens:
            break
        parens = parens.replace(b"()", b"")
    else:
        steps = accumulate(memoryview(parens.translate(_STEPS)).cast("b"), initial=depth)
        if 0 in steps:  # stops at the first 0
            return None
        return depth + len(parens) - 2 * parens.count(b")")
    closers = len(parens) - len(parens.lstrip(b")"))
    return None if closers >= depth else depth + len(parens) - 2 * closers


def blank_escapes(stretch: bytes) -> bytes:
    """``stretch`` with every escape pair in its strings blanked, so that each '"' left opens
    or closes a string. Positions do not move. It must not start inside an escape pair."""
    if b"\\" not in stretch:
        return stretch
    return stretch.replace(b"\\\\", b"..").replace(b'\\"', b"..")


def _decode_string(raw: bytes) -> str:
    """A string's content and closing quote, decoded as ``rawjson`` decodes member names."""
    try:
        name, _ = _scanstring(raw.decode("utf-8"), 0)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: a member name: {exc}") from None
    return name  # type: ignore[no-any-return]

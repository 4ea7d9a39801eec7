"""Checking JSON far larger than memory, a chunk at a time: is it one value ``rawjson`` would
accept? ijson (yajl) does the parsing in C; what it would hold whole (a string a chunk does not
finish) is checked here instead, so memory stays at a chunk whatever the body holds."""

from __future__ import annotations

import codecs
import collections
import re
from collections.abc import Callable

import ijson

from gateway.errors import InvalidInput
from gateway.ingest.spool import CHUNK_BYTES, Body
from gateway.ingest.streamjson import QUOTE, SCALAR_BYTES, SMALL_BYTES, blank_escapes, matcher

_STRICT_STRING_BODY = matcher(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+')
_PARTIAL_ESCAPE = re.compile(rb"\\(?:u[0-9A-Fa-f]{0,3})?\Z").match
_LOW_SURROGATE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def validate(
    body: Body, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_BYTES
) -> None:
    """Check that ``[start, end)`` is exactly one JSON value that ``rawjson`` would accept
    (UTF-8, no NaN or Infinity), a chunk at a time; InvalidInput says what is wrong."""
    checker = _Checker()
    for chunk in body.chunks(start, end, chunk_size):
        checker.feed(chunk)
    checker.close()


class _Checker:
    """Feeds ijson a body a chunk at a time. A string that a chunk does not finish is checked
    here and fed as ``""``: yajl would buffer it whole, and it may be most of the body."""

    def __init__(self) -> None:
        self._parser = ijson.basic_parse_coro(_Discard(maxlen=0))  # 1e999 is valid, as in json
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
            data = self._carry + chunk
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
        rest = data[pos:]
        blanked = blank_escapes(rest)
        rest = _mask_low_surrogates(rest, blanked)
        if blanked.count(b'"') % 2 == 0:  # every string it opens, it finishes
            self._send(rest)
            self._track_scalar(rest)
            return
        opener = blanked.rfind(b'"')
        self._send(rest[: opener + 1])
        self._scalar = 0
        self._in_string = True
        self._string_end(data, pos + opener + 1)  # runs past the chunk: no end here

    def _string_end(self, data: bytes, pos: int) -> int:
        """Check string content from ``pos``; the offset past its closing '"', or -1 when it
        runs past ``data`` (an escape sequence cut short is carried over)."""
        end = _STRICT_STRING_BODY(data, pos, len(data)).end()
        self._carry = b""
        if end < len(data) and data[end] == QUOTE:
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
        run = len(tail) - len(tail.rstrip(SCALAR_BYTES))
        self._scalar = self._scalar + run if run == len(piece) else run
        if self._scalar > SMALL_BYTES:
            raise InvalidInput(f"the body is not JSON: a number is longer than {SMALL_BYTES} bytes")

    def _send(self, data: bytes) -> None:
        if data:
            self._call(self._parser.send, data)

    @staticmethod
    def _call(step: Callable[..., object], *args: bytes) -> None:
        try:
            step(*args)
        except SystemError as exc:  # ijson wraps a number too long for int() in it
            if not isinstance(exc.__cause__, ValueError):
                raise
            raise InvalidInput(f"the body is not JSON: {exc.__cause__}") from None
        except (ijson.JSONError, ValueError) as exc:
            # the first line: yajl goes on with an excerpt of the body
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidInput(f"the body is not JSON: {message}") from None


def _mask_low_surrogates(piece: bytes, blanked: bytes) -> bytes:
    """``piece`` with each escaped low surrogate made an escaped letter: json accepts one
    alone, yajl makes invalid UTF-8 of it. (``blanked``: the piece with escape pairs blanked.)"""
    if b"\\u" not in blanked:
        return piece
    found = [match.start() for match in _LOW_SURROGATE.finditer(blanked)]
    if not found:
        return piece
    masked = bytearray(piece)
    for at in found:
        masked[at + 2 : at + 6] = b"0041"
    return bytes(masked)


class _Discard(collections.deque[object]):
    """An ijson target that drops every event (a deque of length 0: no Python call per event)."""

    send = collections.deque.append

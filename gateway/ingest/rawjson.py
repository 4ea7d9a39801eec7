"""Parse a JSON object while keeping the exact bytes of a top-level member.

The event's ``data`` must reach Workato byte for byte (invariant 7), so it is sliced out of the
original body instead of being re-serialized, and only checked to be JSON: nobody reads its
decoded value. The usual body ends with its raw member
(``{"id":…,"key":…,"status":…,"data":{…}}``): that layout is cut in two at the member's name,
the part before parsed by pydantic's Rust parser and the member's bytes checked by simdjson,
which validates a document without building it, five times faster than decoding it. Anything
else, and anything either parser refuses, goes to the general walk, the C scanner of the
standard library, which has the last word. Webhooks point anywhere into their body (RFC 6901),
so ``raw_at`` walks the same scanner down a pointer's path and slices out the value it names.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import simdjson
from pydantic_core import from_json

from gateway.errors import InvalidInput
from gateway.jsonpointer import array_index

_WS = re.compile(r"[ \t\n\r]*")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WS_MATCH = cast(Callable[[str, int], re.Match[str]], _WS.match)  # [ \t\n\r]* always matches
_scan_once: Any = _DECODER.scan_once  # type: ignore[attr-defined]
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # C-accelerated
_BLANK = " \t\n\r"  # what _WS matches; a one-character test is cheaper than the regex
_BLANK_BYTES = _BLANK.encode()
_COMMA, _OPEN, _CLOSE, _COLON = b",{}:"
_VALUE_STARTS = frozenset(b'{["-0123456789tfn')
_MAY_NEST_TOO_DEEP = 900
_PER_THREAD = threading.local()


def split_object(body: bytes, member: str | None) -> tuple[dict[str, Any], bytes | None]:
    """The decoded values of a JSON object's top-level members other than ``member``, and the
    exact bytes of ``member`` (None when it is absent), checked to be JSON. Of duplicate names
    the last one counts, for the value and the bytes alike, as in ``json.loads``. With no
    ``member``, every member is decoded."""
    if member is not None:
        closing = _split_at_closing_member(body, member)
        if closing is not None:
            return closing
    try:
        text = body.decode("utf-8")
        return _members(text, member)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except (ValueError, IndexError, RecursionError) as exc:  # deep nesting recurses in C
        raise InvalidInput(f"the body is not a JSON object: {_why(exc)}") from None


def _split_at_closing_member(body: bytes, member: str) -> tuple[dict[str, Any], bytes] | None:
    """``split_object`` for a body whose last member is ``member``, or None.

    The body is cut at the last spelling of the name: what comes before, closed with ``}``,
    must parse as an object, which proves the comma in front of the name is the object's own
    (outside any string, at depth one); what follows the colon, up to the closing brace, must
    be one JSON value. Then the whole body is that object plus this member, last, so its bytes
    win over any earlier duplicate, as in ``json.loads``. Each part is parsed once: the cost
    stays linear in the body, whatever it holds.
    """
    name = _spelling(member)
    at = body.rfind(name)
    if at < 0:
        return None
    before = at - 1
    while before >= 0 and body[before] in _BLANK_BYTES:
        before -= 1
    colon, end = at + len(name), len(body)
    while colon < end and body[colon] in _BLANK_BYTES:
        colon += 1
    while end > colon and body[end - 1] in _BLANK_BYTES:
        end -= 1
    if before < 0 or end - colon < 3 or body[colon] != _COLON or body[end - 1] != _CLOSE:
        return None  # not even ':', a value and '}' after the name
    start, end = colon + 1, end - 1
    while start < end and body[start] in _BLANK_BYTES:
        start += 1
    while end > start and body[end - 1] in _BLANK_BYTES:
        end -= 1
    try:
        if body[before] == _COMMA:  # after a member: '{,' parses as '{}' but is no object
            values = from_json(body[:before] + b"}", allow_inf_nan=False)
            if not isinstance(values, dict) or not values:
                return None
        elif body[before] == _OPEN and not body[:before].strip(_BLANK_BYTES):
            values = {}
        else:
            return None
    except ValueError:
        return None
    raw = body[start:end]
    if not _is_json(raw):
        return None
    values.pop(member, None)  # an earlier duplicate
    return values, raw


def _is_json(value: bytes) -> bool:
    """Whether ``value`` is one JSON value, never taking what the walk refuses (refusing what it
    takes is fine: the walk then decides). simdjson refuses numbers beyond 64 bits and lone
    surrogates, which the walk takes; it skips a byte-order mark, which is no JSON, and nests
    1024 levels deep where the walk stops near 990, so a value with 900 containers or more,
    which could be nested that deep, goes to pydantic's parser (it stops at 200), as before."""
    if not value or value[0] not in _VALUE_STARTS:
        return False
    try:
        if _may_nest_too_deep(value):
            from_json(value, allow_inf_nan=False)
        else:
            _parser().parse(value)  # the document is dropped at once: the parser is free again
    except (ValueError, RuntimeError):
        return False
    return True


def _parser() -> simdjson.Parser:
    """This thread's parser: one cannot be shared, and building one per value cost a fifth of
    the check."""
    parser: simdjson.Parser | None = getattr(_PER_THREAD, "parser", None)
    if parser is None:
        parser = _PER_THREAD.parser = simdjson.Parser()
    return parser


def _may_nest_too_deep(value: bytes) -> bool:
    # Each level takes two bytes, so most values are too short to count (the count costs
    # twice simdjson's whole check).
    if len(value) < 2 * _MAY_NEST_TOO_DEEP:
        return False
    return value.count(b"[") + value.count(b"{") >= _MAY_NEST_TOO_DEEP


@functools.cache
def _spelling(member: str) -> bytes:
    """The name as the fast path looks for it; other spellings (escapes) take the walk."""
    return json.dumps(member, ensure_ascii=False).encode()


def parse_document(body: bytes) -> Any:
    """Any JSON value (a webhook body need not be an object), refused like ``split_object``."""
    try:
        text = body.decode("utf-8")
        value, end = _scan_value(text, _skip(text, 0))
        if _skip(text, end) != len(text):
            raise ValueError("extra data after the value")
        return value
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except (ValueError, IndexError, RecursionError) as exc:
        raise InvalidInput(f"the body is not JSON: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    """What the scanner says, or, for the IndexError it raises at a body's end ("string index
    out of range"), that the body ended too soon."""
    return "it ends before its value does" if isinstance(exc, IndexError) else str(exc)


def raw_at(body: bytes, tokens: Sequence[str]) -> bytes | None:
    """The exact bytes of the value a parsed JSON pointer names, or None when it names nothing.

    No tokens is the whole document without the whitespace around it. Of duplicate member
    names the last one counts, as in ``json.loads``, so bytes and decoded values agree. Only
    what the walk passes through is checked: validate the whole body with ``parse_document``.
    """
    try:
        text = body.decode("utf-8")
        span = _span(text, tokens)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except (ValueError, IndexError, RecursionError) as exc:
        raise InvalidInput(f"the body is not JSON: {_why(exc)}") from None
    return None if span is None else text[span[0] : span[1]].encode("utf-8")


def _span(text: str, tokens: Sequence[str]) -> tuple[int, int] | None:
    start = _skip(text, 0)
    for token in tokens:
        child = _child_start(text, start, token)
        if child is None:
            return None
        start = child
    _, end = _scan_value(text, start)
    return start, end


def _child_start(text: str, pos: int, token: str) -> int | None:
    opener = text[pos : pos + 1]
    if opener == "{":
        return _member_start(text, pos, token)
    if opener == "[":
        index = array_index(token)
        return None if index is None else _element_start(text, pos, index)
    return None  # a scalar has no children


def _member_start(text: str, pos: int, name: str) -> int | None:
    found = None
    pos = _skip(text, pos + 1)
    if text[pos] == "}":
        return None
    while True:
        if text[pos] != '"':
            raise ValueError(f"expected a member name at {pos}")
        member, pos = _scanstring(text, pos + 1)
        start = _skip(text, _expect(text, _skip(text, pos), ":"))
        if member == name:
            found = start  # keep scanning: a later duplicate wins
        _, pos = _scan_value(text, start)
        pos = _skip(text, pos)
        if text[pos] == "}":
            return found
        pos = _skip(text, _expect(text, pos, ","))


def _element_start(text: str, pos: int, index: int) -> int | None:
    pos = _skip(text, pos + 1)
    if text[pos] == "]":
        return None
    for _ in range(index):
        _, pos = _scan_value(text, pos)
        pos = _skip(text, pos)
        if text[pos] == "]":
            return None
        pos = _skip(text, _expect(text, pos, ","))
    return pos


def _members(text: str, raw_member: str | None) -> tuple[dict[str, Any], bytes | None]:
    # Any layout, and the last word on everything the fast path refused: one frame, the C
    # scanners called directly, and the whitespace regex only where there is whitespace.
    # Errors are those of the general helpers (``_skip``, ``_expect``, ``_scan_value``).
    ws, scan_value, scan_name, blank = _WS_MATCH, _scan_once, _scanstring, _BLANK
    pos = ws(text, 0).end() if text[:1] in blank else 0
    if text[pos : pos + 1] != "{":
        raise ValueError("expected '{'")
    pos += 1
    if text[pos : pos + 1] in blank:  # "" at the end: the index below reports it
        pos = ws(text, pos).end()
    values: dict[str, Any] = {}
    span = None
    if text[pos] == "}":
        return _end(text, pos + 1, values, raw_member, span)
    try:
        while True:
            if text[pos] != '"':
                raise ValueError(f"expected a member name at {pos}")
            name, pos = scan_name(text, pos + 1)
            if text[pos] in blank:
                pos = ws(text, pos).end()
            if text[pos] != ":":
                raise ValueError(f"expected ':' at {pos}")
            start = pos + 1
            if text[start : start + 1] in blank:  # "" at the end: the scanner reports it
                start = ws(text, start).end()
            values[name], pos = scan_value(text, start)
            if name == raw_member:
                span = start, pos
            if text[pos] in blank:
                pos = ws(text, pos).end()
            if text[pos] == "}":
                return _end(text, pos + 1, values, raw_member, span)
            if text[pos] != ",":
                raise ValueError(f"expected ',' at {pos}")
            pos += 1
            if text[pos] in blank:
                pos = ws(text, pos).end()
    except StopIteration as exc:
        raise ValueError(f"expected a value at {exc.value}") from None


def _scan_value(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, pos)  # type: ignore[no-any-return]
    except StopIteration as exc:
        raise ValueError(f"expected a value at {exc.value}") from None


def _skip(text: str, pos: int) -> int:
    return _WS_MATCH(text, pos).end()


def _expect(text: str, pos: int, char: str) -> int:
    if text[pos] != char:
        raise ValueError(f"expected {char!r} at {pos}")
    return pos + 1


def _end(
    text: str, pos: int, values: dict[str, Any], member: str | None, span: tuple[int, int] | None
) -> tuple[dict[str, Any], bytes | None]:
    if _skip(text, pos) != len(text):
        raise ValueError("extra data after the object")
    if member is None or span is None:
        return values, None
    del values[member]
    return values, text[span[0] : span[1]].encode("utf-8")

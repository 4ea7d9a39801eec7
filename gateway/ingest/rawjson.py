"""Parse a JSON object while keeping the exact bytes of each top-level member.

The event's ``data`` must reach Workato byte for byte (invariant 7), so it is sliced out of the
original body instead of being re-serialized. Every member is decoded exactly once, by the C
scanner of the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from gateway.errors import InvalidInput

_WS = re.compile(r"[ \t\n\r]*")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WS_MATCH = _WS.match
_scan_once: Any = _DECODER.scan_once  # type: ignore[attr-defined]
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # C-accelerated


class Member(NamedTuple):
    value: Any
    raw: bytes


def parse_object(body: bytes) -> dict[str, Member]:
    """The top-level members of a JSON object, each with its decoded value and exact bytes."""
    try:
        text = body.decode("utf-8")
        return _members(text)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except (ValueError, IndexError, RecursionError) as exc:  # deep nesting recurses in C
        raise InvalidInput(f"the body is not a JSON object: {exc}") from None


def _members(text: str) -> dict[str, Member]:
    # Hot path of every event: local names and the C scanner called directly.
    skip, scan_value, scan_name = _skip, _scan_value, _scanstring
    pos = skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("expected '{'")
    pos = skip(text, pos + 1)
    members: dict[str, Member] = {}
    if text[pos] == "}":
        return _end(text, pos + 1, members)
    while True:
        if text[pos] != '"':
            raise ValueError(f"expected a member name at {pos}")
        name, pos = scan_name(text, pos + 1)
        pos = _expect(text, skip(text, pos), ":")
        start = skip(text, pos)
        value, pos = scan_value(text, start)
        members[name] = Member(value, text[start:pos].encode("utf-8"))
        pos = skip(text, pos)
        if text[pos] == "}":
            return _end(text, pos + 1, members)
        pos = skip(text, _expect(text, pos, ","))


def _scan_value(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, pos)  # type: ignore[no-any-return]
    except StopIteration as exc:
        raise ValueError(f"expected a value at {exc.value}") from None


def _skip(text: str, pos: int) -> int:
    return _WS_MATCH(text, pos).end()  # type: ignore[union-attr]  # [ \t\n\r]* always matches


def _expect(text: str, pos: int, char: str) -> int:
    if text[pos] != char:
        raise ValueError(f"expected {char!r} at {pos}")
    return pos + 1


def _end(text: str, pos: int, members: dict[str, Member]) -> dict[str, Member]:
    if _skip(text, pos) != len(text):
        raise ValueError("extra data after the object")
    return members

"""Parse a JSON object while keeping the exact bytes of each top-level member.

The event's ``data`` must reach Workato byte for byte (invariant 7), so it is sliced out of the
original body instead of being re-serialized. Every member is decoded exactly once, by the C
scanner of the standard library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidInput

_WS = re.compile(r"[ \t\n\r]*")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]  # C-accelerated


@dataclass(frozen=True, slots=True)
class Member:
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
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("expected '{'")
    pos = _skip(text, pos + 1)
    members: dict[str, Member] = {}
    if text[pos] == "}":
        return _end(text, pos + 1, members)
    while True:
        if text[pos] != '"':
            raise ValueError(f"expected a member name at {pos}")
        name, pos = _scanstring(text, pos + 1)
        pos = _expect(text, _skip(text, pos), ":")
        start = _skip(text, pos)
        value, pos = _DECODER.raw_decode(text, start)
        members[name] = Member(value, text[start:pos].encode("utf-8"))
        pos = _skip(text, pos)
        if text[pos] == "}":
            return _end(text, pos + 1, members)
        pos = _skip(text, _expect(text, pos, ","))


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _expect(text: str, pos: int, char: str) -> int:
    if text[pos] != char:
        raise ValueError(f"expected {char!r} at {pos}")
    return pos + 1


def _end(text: str, pos: int, members: dict[str, Member]) -> dict[str, Member]:
    if _skip(text, pos) != len(text):
        raise ValueError("extra data after the object")
    return members

"""RFC 6901 JSON pointers: parsed (and so validated) once at config time, resolved per event.

A pointer names one value inside a JSON document: ``""`` is the whole document, ``/a/0/b~1c``
is member ``a``, its first element, then member ``b/c``. The same array-index rule serves the
decoded document here and the raw byte walk in ``gateway.ingest.rawjson``, so both always
agree on what a pointer names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


@dataclass(frozen=True)
class Pointer:
    """A parsed pointer: its text (for messages) and its unescaped reference tokens."""

    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pointer:
        return cls(text, parse_pointer(text))


def parse_pointer(text: str) -> tuple[str, ...]:
    """The reference tokens of ``text``; ValueError says what makes it invalid."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ValueError(f"JSON pointer {text!r} must be empty or start with '/'")
    if _BAD_ESCAPE.search(text):
        raise ValueError(f"JSON pointer {text!r}: '~' must be followed by 0 or 1")
    # RFC 6901 section 4: ~1 first, then ~0, so "~01" means "~1", not "/"
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/"))


def array_index(token: str) -> int | None:
    """The index ``token`` names in an array, or None (``-``, leading zeros, not a number)."""
    return int(token) if _INDEX.fullmatch(token) else None


def resolve(document: Any, tokens: Sequence[str]) -> Any:
    """The value ``tokens`` names in a decoded document; LookupError when nothing is there."""
    node = document
    for token in tokens:
        node = _child(node, token)
    return node


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list):
        index = array_index(token)
        if index is not None and index < len(node):
            return node[index]
    raise LookupError(token)

"""Field mapping: a verified webhook body, in the sender's shape, as a completion event.

Pure: body bytes and headers in, a ``CompletionEvent`` plus the exact bytes of its ``data``
out. Every refusal is an ``InvalidInput`` (422) naming the pointer or header it came from, so
whoever configures the sender sees which field to fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.config.sources import KEY_TEMPLATE_FIELD, SourceSettings, StatusTarget
from gateway.errors import InvalidInput
from gateway.ingest import jsoncheck, streamjson
from gateway.ingest.rawjson import parse_document, raw_at
from gateway.ingest.spool import Body
from gateway.jsonpointer import Pointer, resolve
from gateway.messages import CompletionEvent

SUCCEEDED_OR_FAILED: frozenset[str] = frozenset({"succeeded", "failed"})
QUOTED_VALUE_CHARS = 64


@dataclass(frozen=True)
class EventMapping:
    """A source's ``mapping`` with its pointers parsed once."""

    key: Pointer
    key_template: str | None
    event_id: Pointer | None
    event_id_header: str | None
    status: Pointer | None
    status_map: Mapping[str, StatusTarget]
    default_status: StatusTarget | None
    data: Pointer

    @classmethod
    def from_settings(cls, source: SourceSettings) -> EventMapping:
        m = source.mapping
        return cls(
            key=Pointer.parse(m.key),
            key_template=m.key_template,
            event_id=Pointer.parse(m.event_id) if m.event_id is not None else None,
            event_id_header=source.event_id_header,
            status=Pointer.parse(m.status) if m.status is not None else None,
            status_map=dict(m.status_map),
            default_status=m.default_status,
            data=Pointer.parse(m.data),
        )


@dataclass(frozen=True)
class MappedEvent:
    event: CompletionEvent
    data: bytes
    """The exact bytes of the pointed-to value in the body (invariant 7)."""


@dataclass(frozen=True)
class Ignored:
    """A webhook whose status its source maps to ``ignore``: acknowledged, nothing stored.
    Its key and id were read and checked like any event's."""

    event_id: str
    key: str


@dataclass(frozen=True)
class Oversized:
    """A spooled body's value too long to decode for a key, an id or a status: none is ever
    that long. It maps as a value of its kind would in memory: no status, a 422 for a key."""

    size: int


Lookup = Callable[[Sequence[str]], Any]
"""The decoded value at a pointer's tokens; LookupError when nothing is there."""


def map_event(
    mapping: EventMapping, body: bytes, headers: Mapping[str, str]
) -> MappedEvent | Ignored:
    """The event a webhook reports; ``InvalidInput`` naming the pointer when a field is wrong."""
    document = parse_document(body)
    event = _event(mapping, lambda tokens: resolve(document, tokens), headers)
    if isinstance(event, Ignored):
        return event
    return MappedEvent(event, _data(mapping.data, body))


def map_spooled(
    mapping: EventMapping, body: Body, headers: Mapping[str, str]
) -> tuple[CompletionEvent, tuple[int, int]] | Ignored:
    """``map_event`` for a body too large for memory: the event and the span of its data.
    Blocking (it reads the spool file): run it in a thread."""
    jsoncheck.validate(body)

    def lookup(tokens: Sequence[str]) -> Any:
        span = streamjson.span_at(body, tokens)
        if span is None:
            raise LookupError(tokens)
        if span[1] - span[0] > streamjson.SMALL_BYTES:  # refused bare, it named no pointer
            return Oversized(span[1] - span[0])
        return streamjson.load_small(body, span)

    event = _event(mapping, lookup, headers)
    if isinstance(event, Ignored):
        return event
    span = streamjson.span_at(body, mapping.data.tokens)
    if span is None:
        raise _missing(mapping.data, "data")
    return event, span


def _event(
    mapping: EventMapping, lookup: Lookup, headers: Mapping[str, str]
) -> CompletionEvent | Ignored:
    status = _status(mapping, lookup)
    fields = {
        "key": _key(mapping, lookup),
        "id": _event_id(mapping, lookup, headers),
        "status": "succeeded" if status == "ignore" else status,  # the key and id are checked
    }
    event = _validated(fields, _origins(mapping))
    return Ignored(event.id, event.key) if status == "ignore" else event


def _key(mapping: EventMapping, lookup: Lookup) -> str:
    value = _text_at(lookup, mapping.key, "key")
    if mapping.key_template is None:
        return value
    # replace, not str.format: a template is plain text around one field, nothing else
    return mapping.key_template.replace(KEY_TEMPLATE_FIELD, value)


def _event_id(mapping: EventMapping, lookup: Lookup, headers: Mapping[str, str]) -> str:
    if mapping.event_id is not None:
        return _text_at(lookup, mapping.event_id, "event_id")
    assert mapping.event_id_header is not None  # SourceSettings requires one or the other
    value = headers.get(mapping.event_id_header)
    if not value:
        raise InvalidInput(
            f"the {mapping.event_id_header} header (the event id) is missing",
            field="event_id",
            header=mapping.event_id_header,
        )
    return value


def _status(mapping: EventMapping, lookup: Lookup) -> StatusTarget:
    if mapping.status is None:
        assert mapping.default_status is not None  # MappingSettings requires one or the other
        return mapping.default_status
    value = _value_at(lookup, mapping.status, "status")
    text = _status_text(value)
    if text is not None and text in mapping.status_map:
        return mapping.status_map[text]
    if text in SUCCEEDED_OR_FAILED:
        return "succeeded" if text == "succeeded" else "failed"
    if mapping.default_status is not None:
        return mapping.default_status
    what = f"the value {_quoted(text)}" if text is not None else _json_type(value)
    raise InvalidInput(
        f"{what} at {mapping.status.text} is not in status_map "
        "and the source has no default_status",
        field="status",
        pointer=mapping.status.text,
    )


def _status_text(value: Any) -> str | None:
    """How a status value is looked up in ``status_map``: strings as they are, numbers,
    booleans and null as JSON; an object or an array is never a status (None), and is not
    encoded (one nested near the parser's limit made the encoder recurse too deep: a 500)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | Oversized):
        return None
    return json.dumps(value)


def _data(pointer: Pointer, body: bytes) -> bytes:
    raw = raw_at(body, pointer.tokens)
    if raw is None:
        raise _missing(pointer, "data")
    return raw


def _text_at(lookup: Lookup, pointer: Pointer, field: str) -> str:
    """A key or id: a string, or an integer written as its digits."""
    value = _value_at(lookup, pointer, field)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(
        f"the value at {pointer.text or '(the whole body)'} ({field}) must be a string "
        f"or an integer, not {_json_type(value)}",
        field=field,
        pointer=pointer.text,
    )


def _value_at(lookup: Lookup, pointer: Pointer, field: str) -> Any:
    try:
        return lookup(pointer.tokens)
    except LookupError:
        raise _missing(pointer, field) from None


def _missing(pointer: Pointer, field: str) -> InvalidInput:
    return InvalidInput(
        f"the body has no value at {pointer.text} ({field})", field=field, pointer=pointer.text
    )


def _validated(fields: dict[str, str], origins: dict[str, dict[str, str]]) -> CompletionEvent:
    """The event model's own limits (lengths), reported against where each value came from."""
    try:
        return CompletionEvent.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        field = str(error["loc"][0]) if error["loc"] else "(event)"
        origin = origins.get(field, {})
        where = " ".join(f"{kind} {name}" for kind, name in origin.items())
        name = "event_id" if field == "id" else field
        raise InvalidInput(f"{name} (from {where}): {error['msg']}", field=name, **origin) from None


def _origins(mapping: EventMapping) -> dict[str, dict[str, str]]:
    """Event field → the pointer or header it was read from (status is always valid)."""
    event_id = (
        {"pointer": mapping.event_id.text}
        if mapping.event_id is not None
        else {"header": mapping.event_id_header or ""}
    )
    return {"key": {"pointer": mapping.key.text}, "id": event_id}


def _json_type(value: Any) -> str:
    if isinstance(value, Oversized):
        return f"a value of {value.size} bytes"
    names = {dict: "an object", list: "an array", bool: "a boolean", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _quoted(text: str) -> str:
    return json.dumps(text[:QUOTED_VALUE_CHARS] + ("…" if len(text) > QUOTED_VALUE_CHARS else ""))

"""Turns consumed records into store records or poison, without I/O.

A value is parsed once with the raw-JSON scanner, so an event's ``data`` keeps its exact bytes
(invariant 7), then validated against the published Kafka models and prepared by the same
``Ingest`` methods the HTTP API uses. Anything refused becomes ``Poison`` with a detail built
from field names and messages only: a registration's value holds a resume token, and the
detail ends up in headers and logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from gateway.errors import InvalidInput
from gateway.ingest.kafka.records import Batch, Poison, Record
from gateway.ingest.rawjson import split_object
from gateway.messages import (
    CompletionEvent,
    KafkaCompletionEvent,
    KafkaWaitRegistration,
    WaitRegistration,
)
from gateway.store.records import NewEvent, NewWait

log = structlog.get_logger(__name__)

KAFKA_SOURCE = "kafka"
MAX_DETAIL_CHARS = 500


class Preparer(Protocol):
    """The part of ``Ingest`` that validates a message against the tenant's configuration."""

    def prepare_wait(self, tenant: str, reg: WaitRegistration, now: float) -> NewWait: ...

    def prepare_event(
        self, tenant: str, source: str, event: CompletionEvent, data: bytes
    ) -> NewEvent: ...


class Decoder:
    """Decodes the records of ``events_topic`` and ``waits_topic`` for the known tenants."""

    def __init__(
        self,
        preparer: Preparer,
        tenants: frozenset[str],
        events_topic: str,
        waits_topic: str,
        max_message_bytes: int,
    ) -> None:
        self._preparer = preparer
        self._tenants = tenants
        self._events_topic = events_topic
        self._waits_topic = waits_topic
        self._max_bytes = max_message_bytes

    def batch(self, records: Iterable[Record], now: float) -> Batch:
        """A fetched batch sorted into waits, events and poison, with the offsets to commit."""
        batch = Batch()
        for record in records:
            decoded = self.decode(record, now)
            if isinstance(decoded, Poison):
                batch.poison.append((record, decoded))
            elif isinstance(decoded, NewWait):
                batch.waits.append((record, decoded))
            else:
                batch.events.append((record, decoded))
            tp = (record.topic, record.partition)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
            batch.size += 1
        return batch

    def decode(self, record: Record, now: float) -> NewWait | NewEvent | Poison:
        if record.headers and (bad := _name_not_utf8(record.headers)) is not None:
            return Poison("bad_header", f"the name of header {bad} is not UTF-8")
        value = record.value
        if value is None:
            return Poison("not_json", "the record has no value")
        if len(value) > self._max_bytes:
            return Poison("oversized", f"{len(value)} bytes > max_message_bytes {self._max_bytes}")
        waits = record.topic == self._waits_topic
        try:  # a registration has no raw member: all of it is decoded and validated
            values, data = split_object(value, None if waits else "data")
        except InvalidInput as exc:
            return _unparsable(value, exc)
        try:
            if waits:
                return self._wait(values, now)
            return self._event(values, data)
        except ValidationError as exc:
            return Poison("invalid", _describe(exc))
        except InvalidInput as exc:
            return Poison("invalid", _field_detail(exc))
        except _UnknownTenant as exc:
            return Poison("unknown_tenant", f"tenant {exc.tenant!r} is not configured")
        except Exception as exc:  # a bug, but this record's: raised, it ends the consumer at
            # every restart, with every record behind it unread. Its name only: the record's
            # values (a resume token) may be in the message.
            log.error("kafka.record_unprepared", topic=record.topic, error=type(exc).__name__)
            return Poison("invalid", f"the record could not be prepared ({type(exc).__name__})")

    def _wait(self, values: dict[str, Any], now: float) -> NewWait:
        reg = KafkaWaitRegistration.model_validate(values)
        self._known(reg.tenant)
        return self._preparer.prepare_wait(reg.tenant, reg, now)

    def _event(self, values: dict[str, Any], data: bytes | None) -> NewEvent:
        event = KafkaCompletionEvent.model_validate(values)
        self._known(event.tenant)
        return self._preparer.prepare_event(event.tenant, KAFKA_SOURCE, event, data or b"null")

    def _known(self, tenant: str) -> None:
        if tenant not in self._tenants:
            raise _UnknownTenant(tenant)


class _UnknownTenant(Exception):
    def __init__(self, tenant: str) -> None:
        super().__init__(tenant)
        self.tenant = tenant


def _name_not_utf8(headers: Sequence[tuple[str, bytes]]) -> int | None:
    """The index of the first header whose name is not UTF-8: aiokafka refuses such a record
    and it is read by ``rawbatch``, which keeps the name's bytes as lone surrogates."""
    for index, (name, _) in enumerate(headers):
        if not name.isascii():
            try:
                name.encode()
            except UnicodeEncodeError:
                return index
    return None


def _unparsable(value: bytes, exc: InvalidInput) -> Poison:
    """Not JSON at all, or JSON that is not an object (which no schema allows). Checked as
    strictly as the parse that refused it: ``json.loads`` of the bytes takes NaN, a BOM and
    UTF-16, and filed such objects as 'not an object'."""
    try:
        _STRICT.decode(value.decode("utf-8"))
    except (ValueError, RecursionError):
        return Poison("not_json", _clip(str(exc)))
    return Poison("invalid", "the value is JSON but not an object")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_STRICT = json.JSONDecoder(parse_constant=_no_constant)


def _describe(exc: ValidationError) -> str:
    """Field locations and messages; pydantic's ``input`` is left out (it may be a token)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(value)"
        parts.append(f"{where}: {error['msg']}")
    return _clip("; ".join(parts))


def _field_detail(exc: InvalidInput) -> str:
    field = exc.extensions.get("field")
    return _clip(f"{field}: {exc.detail}" if field else exc.detail)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"

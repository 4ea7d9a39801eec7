"""What the Kafka consumer works with: a consumed record (as a Protocol, so that pure code and
its tests need no broker), what a record decodes to, and a fetched batch."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.store.records import NewEvent, NewWait

PoisonKind = Literal["not_json", "invalid", "unknown_tenant", "oversized", "conflict", "bad_header"]
"""Why a record went to the dead-letter topic (the ``dlq.error.kind`` header)."""


class Record(Protocol):
    """The fields of an ``aiokafka.ConsumerRecord`` the gateway reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the gateway refuses, and why (never the record's content)."""

    kind: PoisonKind
    detail: str


@dataclass(slots=True)
class Batch:
    """One fetch: what to persist in one transaction, what to dead-letter, and the offsets to
    commit once both are done."""

    waits: list[tuple[Record, NewWait]] = field(default_factory=list)
    events: list[tuple[Record, NewEvent]] = field(default_factory=list)
    poison: list[tuple[Record, Poison]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) → the next offset to read, i.e. the one to commit."""
    size: int = 0

    @property
    def waits_at(self) -> list[int]:
        """For each registration, how many of the events come before it: merged by record
        time, each list keeping its own order (a partition's, for one key). Registrations
        all first, a key registered again within one batch (its first wait resolved by an
        event of the batch) conflicted, and the event for the second wait came too late."""
        events = ((record.timestamp, True) for record, _ in self.events)
        waits = ((record.timestamp, False) for record, _ in self.waits)
        at, seen = [], 0
        for _, is_event in heapq.merge(events, waits, key=lambda item: item[0]):
            if is_event:
                seen += 1
            else:
                at.append(seen)
        return at

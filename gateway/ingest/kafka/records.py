"""What the Kafka consumer works with: a consumed record (as a Protocol, so that pure code and
its tests need no broker), what a record decodes to, and a fetched batch."""

from __future__ import annotations

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

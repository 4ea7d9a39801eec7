"""Correlating a whole batch of events in memory, for a store that writes it set-based.

Recording events one by one costs a lookup and an upsert per event, and two more statements
per match. A consumer's batch instead reads the latest wait of each of its keys in one query,
and which of its events the table already holds in another (the SQLite store only once a first
plan, made as if it held none, met one); ``plan_events`` then decides every event exactly as
the one-by-one path would, in batch order, and the store writes the plan with a few set-based
statements. A batch is a consumer's (one ``now``) or HTTP requests that the
writer merged (each event with its own ``now``). Pure: no I/O, so the decisions are easy to
test and to reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.store.records import Acceptance, NewEvent

EventIdentity = tuple[str, str, str]
"""(tenant, source, event_id): what makes an event a duplicate (invariant 2)."""
WaitKey = tuple[str, str]
"""(tenant, key)."""

_DUPLICATE = Acceptance("duplicate")
_BUFFERED = Acceptance("buffered")
_LATE = Acceptance("late")


class LatestWait(NamedTuple):
    """The most recent wait of a key: only it can be open (a key is registered again only
    once its wait is closed)."""

    id: int
    state: str
    expires_at: float


class EventRow(NamedTuple):
    """A new row of ``events``; ``id`` is the rowid SQLite would give it (see ``plan_events``)."""

    id: int
    event: NewEvent
    state: str  # buffered | matched | late
    wait_id: int | None
    buffer_until: float | None
    received_at: float


class DeliveryRow(NamedTuple):
    """A new outbox row for a wait that an event of the batch resolved."""

    id: int
    tenant: str
    wait_id: int
    event_row: int
    deadline: float


@dataclass(slots=True)
class EventPlan:
    """What a batch does to the tables, and each event's answer, in batch order."""

    acceptances: list[Acceptance] = field(default_factory=list)
    rows: list[EventRow] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    """Event row id → how many more times the batch brought that event."""
    deliveries: list[DeliveryRow] = field(default_factory=list)


def plan_events(
    events: list[NewEvent],
    known: dict[EventIdentity, int],
    latest: dict[WaitKey, LatestWait],
    now: float | Sequence[float],
    last_event_row: int,
    last_delivery_id: int,
) -> EventPlan:
    """Decide a batch as if each event were recorded alone, in order, at ``now`` (one time
    for the whole batch, or one per event).

    ``known`` maps the identities already in ``events`` to their row ids, and is extended as
    the batch goes, so that a second copy of an event is a duplicate; ``latest`` maps the keys
    that have a wait to their latest one, which one event of the batch at most resolves. New
    rows and deliveries are numbered on from the largest ids in their tables: the rowid SQLite
    itself gives an inserted row in a table without AUTOINCREMENT.
    """
    plan = EventPlan()
    rows, answers, deliveries = plan.rows, plan.acceptances, plan.deliveries
    resolved: set[int] = set()
    nows = [now] * len(events) if isinstance(now, float | int) else now
    for event, at in zip(events, nows, strict=True):
        identity = (event.tenant, event.source, event.event_id)
        seen = known.get(identity)
        if seen is not None:
            plan.duplicates[seen] = plan.duplicates.get(seen, 0) + 1
            answers.append(_DUPLICATE)
            continue
        row_id = known[identity] = last_event_row + len(rows) + 1
        wait = latest.get((event.tenant, event.key))
        if event.wait_id is not None and (wait is None or wait.id != event.wait_id):
            rows.append(EventRow(row_id, event, "late", None, None, at))  # its wait is gone
            answers.append(_LATE)
        elif wait is None:
            rows.append(EventRow(row_id, event, "buffered", None, at + event.buffer_ttl_s, at))
            answers.append(_BUFFERED)
        elif wait.state == "open" and wait.expires_at > at and wait.id not in resolved:
            resolved.add(wait.id)
            delivery_id = last_delivery_id + len(deliveries) + 1
            deliveries.append(
                DeliveryRow(delivery_id, event.tenant, wait.id, row_id, wait.expires_at)
            )
            rows.append(EventRow(row_id, event, "matched", wait.id, None, at))
            answers.append(Acceptance("matched", delivery_id))
        else:
            rows.append(EventRow(row_id, event, "late", None, None, at))
            answers.append(_LATE)
    return plan

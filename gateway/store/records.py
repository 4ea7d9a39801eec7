"""Plain records that cross the store boundary; no driver types leak out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from gateway.blobs.base import BlobMeta
from gateway.security.tokens import SealedToken

RegisterOutcome = Literal["created", "repeat", "conflict"]
EventOutcome = Literal["matched", "buffered", "duplicate", "late"]
FinalState = Literal["delivered", "delivered_unconfirmed", "dead", "expired", "cancelled"]
SettleState = Literal["pending", "delivered", "delivered_unconfirmed", "dead", "expired"]
CancelOutcome = Literal["cancelled", "not_found", "in_flight", "final"]
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class NewWatch:
    kind: str
    connection: str
    spec_json: str


@dataclass(frozen=True, slots=True)
class NewWait:
    tenant: str
    key: str
    token_digest: str
    sealed: SealedToken
    expires_at: float
    job_json: str | None
    metadata_json: str | None
    watch: NewWatch | None = None


class NewEvent(NamedTuple):
    """An event to record. A named tuple, not a frozen dataclass: one is built per ingested
    event, and a named tuple costs a third as much to build."""

    tenant: str
    source: str
    event_id: str
    key: str
    status: str
    data: bytes  # the exact JSON bytes of the event's data; empty when ``blob`` holds them
    occurred_at: float | None
    buffer_ttl_s: float
    blob: BlobMeta | None = None  # the data, stored in the blob store (large or not JSON)
    wait_id: int | None = None
    """The one wait this event answers (a poll of that wait's watch): it matches only that
    wait, and is late if the key's latest wait is another one, or none."""


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    state: str
    attempts: int
    next_attempt_at: float | None
    reason: str | None
    last_status: int | None
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class WatchView:
    kind: str
    connection: str
    state: str
    job_status: str | None
    progress: str | None
    polls: int
    last_error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class WaitView:
    """A wait as operators and connectors may see it: never the token."""

    tenant: str
    key: str
    state: str
    created_at: float
    expires_at: float
    resolved_at: float | None
    job_json: str | None
    metadata_json: str | None
    event_id: str | None
    source: str | None
    delivery: DeliveryView | None
    watch: WatchView | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    outcome: RegisterOutcome
    wait: WaitView | None
    matched: bool = False
    conflict: str | None = None
    """Which of ``CONFLICTS``, when the outcome is ``conflict``."""


EXPIRED_ON_ARRIVAL = "expires_at_in_the_past"
"""The ``conflict`` of a new registration whose ``expires_at`` has passed: refused as invalid
input, where a repeat of one registered before its expiry is a repeat."""

CONFLICTS = {
    "key_open_with_other_token": "an open wait for this key has a different resume_token",
    "token_registered_under_other_key": "this resume_token is registered under another key",
    "repeat_with_other_fields": (
        "this resume_token is registered under this key with another job, watch or metadata"
    ),
    EXPIRED_ON_ARRIVAL: "expires_at is in the past",
}
"""Why a registration conflicts, as its 409 (or dead letter) says it."""


class Acceptance(NamedTuple):
    """What became of an event (one per ingested event, so a named tuple: cheap to build)."""

    outcome: EventOutcome
    delivery_id: int | None = None


@dataclass(frozen=True, slots=True)
class Cancellation:
    outcome: CancelOutcome
    wait: WaitView | None
    finished: Outcome | None = None
    """The wait's delivery, when cancelling it finished one (reported like any other)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A leased delivery with everything needed to build its request."""

    delivery_id: int
    tenant: str
    key: str
    sealed: SealedToken
    deadline: float
    attempt: int  # this attempt's number, starting at 1
    ambiguous: bool  # an earlier attempt may have landed
    job_json: str | None
    metadata_json: str | None
    event_id: str
    source: str
    status: str
    data: bytes
    received_at: float
    claim_check: bool = False  # send a reference, not the payload (Workato answered 413)
    blob: BlobMeta | None = None  # where the data is when it is not in ``data``

    @property
    def payload_size(self) -> int:
        return self.blob.size if self.blob is not None else len(self.data)

    @property
    def content_type(self) -> str:
        return self.blob.content_type if self.blob is not None else JSON


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one attempt."""

    state: SettleState
    reason: str | None = None
    last_status: int | None = None
    retry_at: float | None = None
    ambiguous: bool = False
    refund_attempt: bool = False
    claim_check: bool = False  # from now on, send the payload by reference


@dataclass(frozen=True, slots=True)
class Pause:
    tenant: str
    until: float
    reason: str


class ExpiredWait(NamedTuple):
    tenant: str
    key: str


class Unmatched(NamedTuple):
    tenant: str
    source: str
    event_id: str
    key: str


@dataclass(frozen=True, slots=True)
class Sweep:
    reclaimed: int
    expired_deliveries: list[Outcome]
    """Pending deliveries whose wait's deadline passed before their turn: finished like any
    other, so they are reported like any other."""
    expired_waits: list[ExpiredWait]
    """Waits whose deadline passed with no event: their jobs will not be resumed."""
    unmatched_events: list[Unmatched]
    """Buffered events whose wait never came within their TTL."""
    more: bool
    """A kind reached the sweep's limit: there may be more to sweep now."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished delivery, as reported to outcome listeners (never the token)."""

    tenant: str
    key: str
    delivery_id: int
    event_id: str
    source: str
    state: FinalState
    reason: str | None
    attempts: int
    last_status: int | None
    received_at: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class WatchClaim:
    """A leased watch: poll ``spec`` on ``connection`` for the wait ``key``."""

    id: int
    wait_id: int
    tenant: str
    key: str
    kind: str
    connection: str
    spec_json: str
    polls: int
    failures: int
    wait_state: str = "open"
    job_status: str | None = None
    """The job's status at the last poll that read it: None while it was never seen."""
    last_error: str | None = None
    """Why the last poll failed, if it did."""


@dataclass(frozen=True, slots=True)
class Polled:
    """What one poll found out about a job that is not finished yet (or could not be read)."""

    next_poll_at: float
    failures: int
    job_status: str | None
    progress: str | None
    error: str | None

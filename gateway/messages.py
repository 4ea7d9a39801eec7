"""Public message models (DESIGN 5.1-5.3); ``schemas/`` is generated from these."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
)

NO_NUL = r"^[^\x00]*$"
"""Keys and event ids never hold U+0000: SQLite's ``json_each``, which the store's batch lookups
go through, cuts a string at it (a matching event was buffered)."""
Key = Field(
    min_length=1,
    max_length=512,
    pattern=NO_NUL,
    description="Correlation key shared by wait and event.",
)
EventStatus = Literal["succeeded", "failed"]
PATH_SEGMENT = r"^(?:[^.\x00][^\x00]*|\.[^.\x00][^\x00]*|\.\.[^\x00]+)$"
"""A job system's id, which becomes a segment of the job's URL: never ``.`` or ``..`` (percent-
encoding leaves dots as they are, and the URL resolved ``/jobs/..`` to the API's root, where
a cancellation's DELETE went too)."""
JobId = Field(min_length=1, max_length=128, pattern=PATH_SEGMENT)
MANAGED_USER = r"^(?:[0-9]+|E[^\x00]+)$"
"""Seed 000's ``:managed_user_id``: a numeric id, or ``E`` and an external id."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_METADATA_DEPTH = 128
"""How deep metadata may nest. Over HTTP pydantic's parser stops near 200 levels; a Kafka
registration is decoded by the standard library's, which goes on to about 990, where encoding
it again for the store overflowed the stack and ended the consumer."""


def _json_value(value: Any) -> Any:
    """Metadata that can be stored and echoed into a resume request as JSON: no NaN or Infinity
    (pydantic's JSON parser takes them; Workato's parser would refuse the request and the
    delivery would end dead), no lone surrogate (an escape such as ``\\ud800``, which no UTF-8
    can hold: the store's write raised and took the whole batch with it), and a bounded depth."""
    _check_json(value, MAX_METADATA_DEPTH)
    return value


def _check_json(value: Any, depth: int) -> None:
    if isinstance(value, str):
        _unicode(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not JSON numbers")
    elif isinstance(value, dict | list):
        if depth == 0:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(value, dict):
            for name, item in value.items():
                _unicode(name)
                _check_json(item, depth - 1)
        else:
            for item in value:
                _check_json(item, depth - 1)


def _unicode(text: str) -> None:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate, which is not Unicode") from None


def _segment(value: int | str) -> int | str:
    if value in (".", ".."):  # as PATH_SEGMENT says of an id that is a string only
        raise ValueError("a recipe id is never '.' or '..'")
    return value


class JobRef(_Message):
    """Which Workato job is waiting; lets the gateway reconcile through the Jobs API."""

    recipe_id: Annotated[StrictInt | StrictStr, AfterValidator(_segment)]  # true is not 1
    job_id: str = JobId
    managed_user_id: str | None = Field(
        default=None,
        max_length=128,
        pattern=MANAGED_USER,
        description="An embedded customer's numeric id, or E and its external id as it is "
        "(not URL-encoded: the gateway encodes it).",
    )


class AlteryxWatch(_Message):
    """Poll an Alteryx Server job until it completes (seed 003)."""

    kind: Literal["alteryx"]
    connection: str = Field(min_length=1, max_length=64)
    job_id: str = JobId
    cancel_on_close: bool = Field(
        default=False, description="DELETE the Alteryx job if the wait expires or is cancelled."
    )


class PixxelWatch(_Message):
    """Poll a Pixxel workflow job until it is terminal (seed 004)."""

    kind: Literal["pixxel"]
    connection: str = Field(min_length=1, max_length=64)
    workflow_id: str = JobId
    job_id: str = JobId


Watch = Annotated[AlteryxWatch | PixxelWatch, Field(discriminator="kind")]


class WaitRegistration(_Message):
    """What a connector action's ``before_suspend`` sends to ``POST /v1/waits``."""

    key: str = Key
    resume_token: str = Field(min_length=1, max_length=8192)
    expires_at: AwareDatetime | None = Field(
        default=None, description="When Workato gives up on the job; capped at 60 days."
    )
    timeout_s: float | None = Field(default=None, gt=0, description="Alternative to expires_at.")
    job: JobRef | None = None
    watch: Watch | None = Field(
        default=None, description="Let the gateway poll this job and report completion itself."
    )
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_json_value)] = Field(
        default=None,
        description=(
            "Echoed back to the action in the resume data. Finite numbers only, no lone "
            "surrogate escapes, at most 128 levels deep."
        ),
    )


class CompletionEvent(_Message):
    """What ``POST /v1/events`` accepts: the third party's job finished."""

    id: str = Field(
        min_length=1, max_length=256, pattern=NO_NUL, description="Unique per source; deduplicates."
    )
    key: str = Key
    status: EventStatus
    data: Any = Field(default=None, description="Passed to the action byte-exact.")
    occurred_at: AwareDatetime | None = None


Tenant = Field(
    pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The configured tenant the message is for."
)


class KafkaWaitRegistration(WaitRegistration):
    """A registration published to ``resume.waits``: the ``POST /v1/waits`` body plus its
    tenant (Kafka has no API key to name it)."""

    tenant: str = Tenant


class KafkaCompletionEvent(CompletionEvent):
    """A completion event published to ``resume.events``; the message key should be the
    correlation key, so that one key's events stay in order on one partition."""

    tenant: str = Tenant


class OutcomeMessage(BaseModel):
    """One finished delivery, published to ``resume.outcomes`` keyed by its correlation key.
    It never carries the resume token."""

    tenant: str
    key: str
    delivery_id: int
    event_id: str
    source: str
    state: Literal["delivered", "delivered_unconfirmed", "dead", "expired", "cancelled"]
    reason: str | None
    attempts: int = Field(description="Resume requests counted against the delivery.")
    last_status: int | None = Field(description="Workato's last HTTP status, if any answer.")
    received_at: datetime = Field(description="When the gateway accepted the event.")
    finished_at: datetime
    duration_ms: float = Field(description="From the event's acceptance to the final state.")


class PayloadRef(BaseModel):
    """A claim check: the payload did not fit the resume request (or is not JSON); fetch it."""

    url: str = Field(description="Signed GET URL (supports Range); no credentials needed.")
    size: int = Field(description="Exact byte length of the payload.")
    sha256: str = Field(description="Hex SHA-256 of the payload; check it after download.")
    content_type: str = Field(description="application/json, or the type it was posted with.")
    expires_at: datetime = Field(description="The URL works until then (wait expiry + grace).")


class ResumeData(BaseModel):
    """The ``data`` the resumed action receives (non-raw tenants). ``payload`` holds the event
    data byte-exact; when the request would exceed the tenant's ``max_request_bytes`` (or the
    data is not JSON, or Workato answered 413), ``payload`` is null and ``payload_ref`` says
    where to fetch it. A raw-mode tenant receives the data itself, or ``{"payload_ref": …}``."""

    status: EventStatus
    key: str
    event_id: str
    source: str
    received_at: datetime
    metadata: dict[str, Any] | None
    payload: Any
    payload_ref: PayloadRef | None = None


class DeliveryStatus(BaseModel):
    """The outbox row of a resolved wait (``pending → sending → delivered | dead | ...``)."""

    id: int
    state: Literal[
        "pending", "sending", "delivered", "delivered_unconfirmed", "dead", "expired", "cancelled"
    ]
    attempts: int
    next_attempt_at: datetime | None
    reason: str | None
    last_status: int | None
    finished_at: datetime | None


class WatchStatus(BaseModel):
    """How polling the third party's job is going (``progress`` as the system reports it)."""

    kind: Literal["alteryx", "pixxel"]
    connection: str
    state: Literal["active", "done", "stopped"]
    job_status: str | None
    progress: str | None
    polls: int
    last_error: str | None
    updated_at: datetime


class EventRef(BaseModel):
    id: str
    source: str


class WaitStatus(BaseModel):
    """A wait as the API shows it: never the resume token."""

    outcome: Literal["created", "repeat"] | None = None
    key: str
    state: Literal["open", "resolved", "cancelled", "expired"]
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    job: JobRef | None
    metadata: dict[str, Any] | None
    event: EventRef | None
    delivery: DeliveryStatus | None
    watch: WatchStatus | None = None


class EventAccepted(BaseModel):
    """What happened to an event: matched, buffered (no wait yet), duplicate or late; or, for
    a webhook its source maps to ``ignore`` (a progress report), ignored: nothing stored."""

    outcome: Literal["matched", "buffered", "duplicate", "late", "ignored"]
    event_id: str
    key: str


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members depend on ``type``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


PUBLISHED: dict[str, type[BaseModel]] = {
    "wait-registration": WaitRegistration,
    "completion-event": CompletionEvent,
    "resume-data": ResumeData,
    "kafka-wait-registration": KafkaWaitRegistration,
    "kafka-completion-event": KafkaCompletionEvent,
    "outcome": OutcomeMessage,
}
"""Schema file name (without ``.schema.json``) → model."""

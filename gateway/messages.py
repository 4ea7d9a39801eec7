"""Public message models (DESIGN 5.1-5.3); ``schemas/`` is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Key = Field(min_length=1, max_length=512, description="Correlation key shared by wait and event.")
EventStatus = Literal["succeeded", "failed"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobRef(_Message):
    """Which Workato job is waiting; lets the gateway reconcile through the Jobs API."""

    recipe_id: int | str
    job_id: str = Field(min_length=1, max_length=128)
    managed_user_id: str | None = Field(default=None, max_length=128)


class WaitRegistration(_Message):
    """What a connector action's ``before_suspend`` sends to ``POST /v1/waits``."""

    key: str = Key
    resume_token: str = Field(min_length=1, max_length=8192)
    expires_at: AwareDatetime | None = Field(
        default=None, description="When Workato gives up on the job; capped at 60 days."
    )
    timeout_s: float | None = Field(default=None, gt=0, description="Alternative to expires_at.")
    job: JobRef | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="Echoed back to the action in the resume data."
    )


class CompletionEvent(_Message):
    """What ``POST /v1/events`` accepts: the third party's job finished."""

    id: str = Field(min_length=1, max_length=256, description="Unique per source; deduplicates.")
    key: str = Key
    status: EventStatus
    data: Any = Field(default=None, description="Passed to the action byte-exact.")
    occurred_at: AwareDatetime | None = None


class ResumeData(BaseModel):
    """The ``data`` the resumed action receives (non-raw tenants)."""

    status: EventStatus
    key: str
    event_id: str
    source: str
    received_at: datetime
    metadata: dict[str, Any] | None
    payload: Any


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


class EventAccepted(BaseModel):
    """What happened to an event: matched, buffered (no wait yet), duplicate or late."""

    outcome: Literal["matched", "buffered", "duplicate", "late"]
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
}
"""Schema file name (without ``.schema.json``) → model."""

"""Alteryx Server v3 jobs as the sandbox scripts them, and their JSON shape (seed 003).

A job follows its :class:`JobScript` on the clock: ``Queued`` for ``queued_s``, then
``Initializing`` for the first ``initializing_s`` of its ``running_s``, then ``Running``, then
``Complete`` (or the variant spelling the script asks for, e.g. ``Completed``) with the scripted
disposition, outputs and messages. Outputs and messages appear only once the job is complete.

Cancelling follows the seed: only a ``Queued`` or ``Running`` job can be cancelled; a queued job
is deleted (later reads answer 404), a running one ends ``Complete`` with disposition
``Cancelled``. Before completion the disposition reads ``None``, as Alteryx's enum does.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.sandbox.lifecycle import MAX_SCRIPTED_S, Lifecycle, Phase
from gateway.sandbox.timestamps import iso

QUEUED = "Queued"
INITIALIZING = "Initializing"
RUNNING = "Running"
COMPLETE = "Complete"
CANCELLABLE = (QUEUED, RUNNING)
DISPOSITION_PENDING = "None"
DISPOSITION_CANCELLED = "Cancelled"
# Alteryx engine message types: 1 information, 2 warning, 3 error.
MESSAGE_INFO = 1
MESSAGE_ERROR = 3
DEFAULT_QUEUED_S = 2.0
DEFAULT_RUNNING_S = 10.0
NOT_CANCELLABLE = "This job is not in 'Queued' or 'Running' state."


def new_alteryx_id() -> str:
    """A fresh id shaped like Alteryx's (24 hex digits, a MongoDB ObjectId)."""
    return secrets.token_hex(12)


class Output(BaseModel):
    """One output file of a complete job, as the seed shows it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    id: str = Field(default_factory=new_alteryx_id)
    available_formats: list[str] = Field(default_factory=lambda: ["Raw"], alias="availableFormats")
    file_name: str = Field(default="output.csv", alias="fileName")


class Message(BaseModel):
    """One engine message: ``status`` is the message type, ``toolId`` the emitting tool."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    status: int = MESSAGE_INFO
    text: str
    tool_id: int = Field(default=0, alias="toolId")


class JobScript(BaseModel):
    """Body of ``POST /_sandbox/jobs``: how the job will unfold.

    ``outputs`` / ``messages`` left out get illustrative defaults from the disposition (one
    output and an info message on ``Success``, one error message otherwise).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    queued_s: float = Field(default=DEFAULT_QUEUED_S, ge=0.0, le=MAX_SCRIPTED_S)
    initializing_s: float = Field(default=0.0, ge=0.0, le=MAX_SCRIPTED_S)
    running_s: float = Field(default=DEFAULT_RUNNING_S, ge=0.0, le=MAX_SCRIPTED_S)
    disposition: str = Field(default="Success", min_length=1)
    status_spelling: str | None = Field(default=None, min_length=1)
    outputs: list[Output] | None = None
    messages: list[Message] | None = None
    app_id: str = Field(default_factory=new_alteryx_id, min_length=1)

    @model_validator(mode="after")
    def _initializing_fits(self) -> JobScript:
        if self.initializing_s > self.running_s:
            raise ValueError("initializing_s must not exceed running_s")
        return self

    def final_outputs(self) -> list[Output]:
        """The outputs a complete job shows."""
        if self.outputs is not None:
            return self.outputs
        return [Output()] if self.disposition == "Success" else []

    def final_messages(self) -> list[Message]:
        """The messages a complete job shows."""
        if self.messages is not None:
            return self.messages
        if self.disposition == "Success":
            return [Message(text=f"Finished in {self.running_s:g} seconds", toolId=-1)]
        return [Message(status=MESSAGE_ERROR, text="Sandbox: the workflow failed", toolId=1)]


class CancelOutcome(enum.Enum):
    """What ``DELETE /v3/jobs/{jobId}`` did."""

    DELETED = "Deleted Successfully."
    CANCELLED = "Cancelled Successfully."
    NOT_CANCELLABLE = NOT_CANCELLABLE


@dataclass
class AlteryxJob:
    """One scripted job, plus what clients did to it."""

    id: str
    script: JobScript
    lifecycle: Lifecycle
    poll_count: int = 0
    cancelled_at: float | None = None
    deleted: bool = False
    outputs: list[Output] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def phase(self, now: float) -> Phase:
        """The lifecycle phase, cut short by a cancellation."""
        return Phase.TERMINAL if self.cancelled_at is not None else self.lifecycle.phase(now)

    def status(self, now: float) -> str:
        """The ``status`` field at ``now``, in the script's spelling once complete."""
        phase = self.phase(now)
        if phase is Phase.QUEUED:
            return QUEUED
        if phase is Phase.RUNNING:
            initializing = self.lifecycle.running_elapsed_s(now) < self.script.initializing_s
            return INITIALIZING if initializing else RUNNING
        return self.script.status_spelling or COMPLETE

    def disposition(self, now: float) -> str:
        """The ``disposition`` field at ``now``."""
        if self.phase(now) is not Phase.TERMINAL:
            return DISPOSITION_PENDING
        return DISPOSITION_CANCELLED if self.cancelled_at is not None else self.script.disposition

    def cancel(self, now: float) -> CancelOutcome:
        """Cancel as the seed describes: delete if queued, cancel if running, else refuse."""
        status = self.status(now)
        if status not in CANCELLABLE:
            return CancelOutcome.NOT_CANCELLABLE
        self.cancelled_at = now
        self.deleted = status == QUEUED
        return CancelOutcome.DELETED if self.deleted else CancelOutcome.CANCELLED


def new_job(script: JobScript, now: float) -> AlteryxJob:
    """A job created at ``now`` that will follow ``script``."""
    return AlteryxJob(
        id=new_alteryx_id(),
        script=script,
        lifecycle=Lifecycle(now, script.queued_s, script.running_s),
        outputs=script.final_outputs(),
        messages=script.final_messages(),
    )


def detail(job: AlteryxJob, now: float, *, include_messages: bool = True) -> dict[str, Any]:
    """``GET /v3/jobs/{jobId}``; ``includeMessages=false`` gives the reduced object."""
    complete = job.phase(now) is Phase.TERMINAL and job.cancelled_at is None
    shown: dict[str, Any] = {
        "id": job.id,
        "appId": job.script.app_id,
        "createDateTime": iso(job.lifecycle.created_at),
        "status": job.status(now),
        "disposition": job.disposition(now),
        "outputs": [o.model_dump(by_alias=True) for o in job.outputs] if complete else [],
        "messages": messages_of(job, now),
        "priority": "Default",
        "workerTag": "",
        "runWithE2": True,
    }
    if not include_messages:
        del shown["messages"]
    return shown


def messages_of(job: AlteryxJob, now: float) -> list[dict[str, Any]]:
    """The job's messages as ``GET /v3/jobs/{jobId}/messages`` lists them (none until done)."""
    if job.phase(now) is not Phase.TERMINAL or job.cancelled_at is not None:
        return []
    return [message.model_dump(by_alias=True) for message in job.messages]

"""What a polled job's answer means: validated with pydantic, mapped to a completion status.

Pure functions over the parsed answer; the clients do the I/O. The answer becomes the event's
data, so it is held to what every intake takes: strict JSON (``NaN`` is no JSON, and Workato
refuses a body holding it; ``InvalidInput`` otherwise), without the whitespace around it (a
raw-mode tenant's data must begin with ``{``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from gateway.ingest.rawjson import parse_document

Status = Literal["succeeded", "failed"]

ALTERYX_DONE = {"complete", "completed", "finished", "done"}
ALTERYX_SUCCESS = {"success", "succeeded", "completed", "complete", "ok"}
ENDED_BADLY = {"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted"}
"""A status no seed lists but a job system may give a job that ended: not one to poll on."""
PIXXEL_SUCCESS = {"completed", "complete", "succeeded", "success", "done", "finished"}


@dataclass(frozen=True, slots=True)
class JobState:
    """``status`` is None while the job runs; ``data`` is the event's data once it is done."""

    job_status: str
    status: Status | None
    progress: str | None
    data: bytes | None


class AlteryxJob(BaseModel):
    """``GET /v3/jobs/{jobId}`` (seed 003); unknown fields are kept in the raw bytes."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    disposition: str | None = None


class PixxelTask(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    name: str | None = None
    status: str | None = None
    err_msg: str | None = None
    failure_type: str | None = None


class PixxelJob(BaseModel):
    """``GET /v0/workflows/{workflow_id}/jobs/{job_id}`` (seed 004)."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    progress: str | float | int | None = None
    tasks: list[PixxelTask] | None = None
    """``null`` as an empty list (a Go service's way of writing none)."""


def alteryx_state(raw: bytes) -> JobState:
    """Complete (in any spelling seen in the wild) is terminal, and the disposition decides;
    a status that says the job failed or was cancelled is terminal too."""
    raw = _strict(raw)
    job = AlteryxJob.model_validate_json(raw)
    normal = job.status.strip().lower()
    if normal in ENDED_BADLY:
        return JobState(job.status, "failed", None, raw)
    if normal not in ALTERYX_DONE:
        return JobState(job.status, None, None, None)
    disposition = (job.disposition or "").strip().lower()
    status: Status = "succeeded" if disposition in ALTERYX_SUCCESS else "failed"
    return JobState(job.status, status, None, raw)


def pixxel_state(raw: bytes) -> JobState:
    """A finished job's data carries each failing task's ``err_msg`` and ``failure_type``."""
    raw = _strict(raw)
    job = PixxelJob.model_validate_json(raw)
    normal = job.status.strip().lower()
    progress = None if job.progress is None else str(job.progress)
    if normal in PIXXEL_SUCCESS:  # tasks may have failed in a job that completed all the same
        return JobState(job.status, "succeeded", progress, _pixxel_data(raw, _failures(job)))
    if normal in ENDED_BADLY:
        return JobState(job.status, "failed", progress, _pixxel_data(raw, _failures(job)))
    # Any other status is polled on, shown as the watch's job_status: seed 004 lists none, and
    # a running job reported failed could not be taken back (its time fields prove nothing).
    return JobState(job.status, None, progress, None)


def _strict(raw: bytes) -> bytes:
    parse_document(raw)
    return raw.strip(b" \t\r\n")


def _failures(job: PixxelJob) -> list[dict[str, Any]]:
    return [
        {"task": t.name or t.id, "err_msg": t.err_msg, "failure_type": t.failure_type}
        for t in job.tasks or ()
        if t.err_msg or t.failure_type or (t.status or "").lower() in ENDED_BADLY
    ]


def _pixxel_data(raw: bytes, failures: list[dict[str, Any]]) -> bytes:
    """``{"job": <the answer, byte-exact>, "failed_tasks": [...]}``."""
    summary = json.dumps(failures, ensure_ascii=False).encode()
    return b'{"job":' + raw + b',"failed_tasks":' + summary + b"}"

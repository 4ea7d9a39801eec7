"""Workato jobs as the emulator keeps them, and their JSON shapes in the Jobs API.

Shapes follow the seed documentation (list items of ``GET /api/recipes/:id/jobs``, the single-job
form of ``GET .../jobs/:job_id``). Listing is newest first; paging is relative to a job id.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.sandbox.timestamps import iso

JobStatus = Literal["pending", "succeeded", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "succeeded", "failed")

_ID_ALPHABET = string.ascii_letters + string.digits


def new_job_id() -> str:
    """A fresh id shaped like Workato's, e.g. ``j-AJTAt8w6-wdAgWM``."""
    head = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"j-{head}-{tail}"


@dataclass(frozen=True)
class Owner:
    """Who a job belongs to: nobody (the workspace itself) or one managed (embedded) user."""

    managed_user_id: int | None = None
    external_id: str | None = None


WORKSPACE = Owner()


@dataclass
class ResumeState:
    """The job's wait: its token, and what the one successful resume (if any) delivered: its
    body as sent (its ``data`` is decoded when asked for: a 40 MB body was held twice)."""

    token: str
    count: int = 0
    rejected: int = 0
    body: bytes | None = None
    at: float | None = None

    @property
    def data(self) -> Any:
        """The resumed ``data``, decoded from the body each time it is asked for."""
        return None if self.body is None else json.loads(self.body).get("data")

    @property
    def attempts(self) -> int:
        """Every resume request that named this token: the one that resumed it, and the
        refused ones after it (``rejected``)."""
        return self.count + self.rejected


@dataclass
class Job:
    """One job. A job created by the control API is suspended (``pending``) on its wait."""

    id: str
    seq: int
    recipe_id: int
    title: str
    started_at: float
    master_job_id: str
    resume: ResumeState
    owner: Owner = WORKSPACE
    is_repeat: bool = False
    status: JobStatus = "pending"
    completed_at: float | None = None
    error: str | None = None
    trigger_data_expired: bool = False
    repeat_count: int = 0

    def visible_to(self, asked: Owner) -> bool:
        """True when ``asked`` (the owner named in the URL) is this job's owner."""
        if asked.managed_user_id is not None:
            return self.owner.managed_user_id == asked.managed_user_id
        if asked.external_id is not None:
            return self.owner.external_id == asked.external_id
        return self.owner == WORKSPACE

    def complete(self, status: JobStatus, at: float, error: str | None = None) -> None:
        """Move to ``status``; only finished jobs carry ``completed_at`` and an error."""
        self.status = status
        self.completed_at = None if status == "pending" else at
        self.error = (error or "Job failed") if status == "failed" else None


def list_item(job: Job) -> dict[str, Any]:
    """The job as an item of the list endpoint."""
    item: dict[str, Any] = {
        "id": job.id,
        "completed_at": iso(job.completed_at),
        "started_at": iso(job.started_at),
        "title": job.title,
        "is_poll_error": False,
        "error": job.error,
        "is_error": job.status == "failed",
        "status": job.status,
        "calling_recipe_id": None,
        "calling_job_id": None,
        "recipe_id": job.recipe_id,
        "root_recipe_id": None,
        "root_job_id": None,
        "master_job_id": job.master_job_id,
    }
    if job.status == "failed":
        item["error_parts"] = _error_parts(job)
    return item


def detail(job: Job) -> dict[str, Any]:
    """The job as returned by the get endpoint (run-time ``lines`` are never available)."""
    shown = list_item(job)
    shown.pop("error_parts", None)
    return shown | {
        "handle": job.id,
        "lines": [],
        "is_repeat": job.is_repeat,
        "is_test": False,
        "is_test_case_job": False,
        "master_job_handle": job.master_job_id,
        "calling_job_handle": None,
    }


def _error_parts(job: Job) -> dict[str, Any]:
    return {
        "adapter": "sandbox",
        "error_type": "Sandbox error",
        "message": job.error,
        "error_id": f"sandbox-{job.id}",
        "error_at": iso(job.completed_at),
        "input": "<redacted>",
        "inner_message": None,
    }


@dataclass(frozen=True)
class JobQuery:
    """Query parameters of the list endpoint."""

    status: JobStatus | None = None
    rerun_only: bool = False
    offset_job_id: str | None = None
    prev: bool = False


class UnknownOffsetError(LookupError):
    """offset_job_id names no job in this listing."""


@dataclass
class JobPage:
    """One page of a listing plus the counts the endpoint reports."""

    items: list[Job]
    scope_count: int
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The list endpoint's response body."""
        return self.counts | {
            "job_scope_count": self.scope_count,
            "items": [list_item(job) for job in self.items],
        }


def page_of(jobs: list[Job], query: JobQuery, page_size: int) -> JobPage:
    """Select one page from ``jobs`` (all jobs of one recipe and owner, newest first).

    The seeds do not define the counters; here ``job_count`` and the succeeded/failed counts
    cover the whole recipe, ``job_scope_count`` the jobs matching the filters.
    """
    matching = [job for job in jobs if _matches(job, query)]
    return JobPage(
        items=_window(matching, _offset_seq(jobs, query), query, page_size),
        scope_count=len(matching),
        counts={
            "job_succeeded_count": sum(job.status == "succeeded" for job in jobs),
            "job_failed_count": sum(job.status == "failed" for job in jobs),
            "job_count": len(jobs),
        },
    )


def _matches(job: Job, query: JobQuery) -> bool:
    if query.status is not None and job.status != query.status:
        return False
    # "Rerun jobs" are read as the repeats themselves (is_repeat), as the legacy docs word it.
    return job.is_repeat or not query.rerun_only


def _window(matching: list[Job], offset: int | None, query: JobQuery, page_size: int) -> list[Job]:
    if offset is None:
        return matching[:page_size]
    if query.prev:
        newer = [job for job in matching if job.seq > offset]
        return newer[-page_size:]  # the page right above the offset, still newest first
    return [job for job in matching if job.seq < offset][:page_size]


def _offset_seq(jobs: list[Job], query: JobQuery) -> int | None:
    if query.offset_job_id is None:
        return None
    for job in jobs:
        if job.id == query.offset_job_id:
            return job.seq
    raise UnknownOffsetError(query.offset_job_id)

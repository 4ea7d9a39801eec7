"""Control API of the Workato sandbox (``/_sandbox/...``, no auth): set up scenarios, inspect.

Tests create suspended jobs here, read back what a resume delivered, install faults, change
limits and read the request log. Never exposed by a real Workato; never put it on a network.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.sandbox.control import CommonControl, missing, parse_model
from gateway.sandbox.timestamps import iso
from gateway.sandbox.workato_jobs import Job, JobStatus, Owner
from gateway.sandbox.workato_state import WorkatoSandbox


class NewJob(BaseModel):
    """Body of ``POST /_sandbox/jobs``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    recipe_id: int = Field(default=1, ge=1)
    managed_user_id: int | None = Field(default=None, ge=1)
    external_id: str | None = Field(default=None, min_length=1)
    title: str | None = None


class JobPatch(BaseModel):
    """Body of ``PATCH /_sandbox/jobs/{job_id}``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trigger_data_expired: bool | None = None
    status: JobStatus | None = None
    error: str | None = None
    title: str | None = None


def job_state(job: Job) -> dict[str, Any]:
    """Everything a test may want to assert about a job, including what its resume delivered."""
    body = job.resume.body
    return {
        "job_id": job.id,
        "recipe_id": job.recipe_id,
        "managed_user_id": job.owner.managed_user_id,
        "external_id": job.owner.external_id,
        "title": job.title,
        "status": job.status,
        "error": job.error,
        "is_repeat": job.is_repeat,
        "master_job_id": job.master_job_id,
        "repeat_count": job.repeat_count,
        "trigger_data_expired": job.trigger_data_expired,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "resume_token": job.resume.token,
        "resume_count": job.resume.count,
        "rejected_resumes": job.resume.rejected,
        "resume_attempts": job.resume.attempts,
        "resumed_data": job.resume.data,
        "resumed_body_sha256": None if body is None else hashlib.sha256(body).hexdigest(),
        "resumed_body_size": None if body is None else len(body),
        "resumed_at": job.resume.at,
        "resumed_at_iso": iso(job.resume.at),
    }


class ControlApi:
    """Handlers of the ``/_sandbox/`` endpoints."""

    def __init__(self, sandbox: WorkatoSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table of the control API."""
        return [
            web.post("/_sandbox/jobs", self.create_job),
            web.get("/_sandbox/jobs/{job_id}/body", self.get_body),
            web.patch("/_sandbox/jobs/{job_id}", self.patch_job),
            # A Workato job's state does not depend on the clock.
            *CommonControl(self._sandbox, lambda job, _now: job_state(job)).routes(),
        ]

    async def create_job(self, request: web.Request) -> web.Response:
        """Create a suspended job; answers its id and resume token (201)."""
        new = await parse_model(request, NewJob)
        if isinstance(new, web.Response):
            return new
        owner = Owner(managed_user_id=new.managed_user_id, external_id=new.external_id)
        job = self._sandbox.create_job(new.recipe_id, owner, new.title)
        created = {
            "job_id": job.id,
            "recipe_id": job.recipe_id,
            "resume_token": job.resume.token,
            "master_job_id": job.master_job_id,
            "managed_user_id": owner.managed_user_id,
            "external_id": owner.external_id,
        }
        return web.json_response(created, status=201)

    async def get_body(self, request: web.Request) -> web.Response:
        """The exact request body of the job's successful resume."""
        job = self._sandbox.job(request.match_info["job_id"])
        if job is None or job.resume.body is None:
            return missing()
        return web.Response(body=job.resume.body, content_type="application/json")

    async def patch_job(self, request: web.Request) -> web.Response:
        """Change a job to set up list and repeat scenarios."""
        job = self._sandbox.job(request.match_info["job_id"])
        if job is None:
            return missing()
        patch = await parse_model(request, JobPatch)
        if isinstance(patch, web.Response):
            return patch
        if patch.trigger_data_expired is not None:
            job.trigger_data_expired = patch.trigger_data_expired
        if patch.title is not None:
            job.title = patch.title
        if patch.status is not None:
            self._sandbox.settle_job(job, patch.status, patch.error)
        elif patch.error is not None and job.status == "failed":
            job.error = patch.error
        return web.json_response(job_state(job))

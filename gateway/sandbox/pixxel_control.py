"""Control API of the Pixxel sandbox (``/_sandbox/...``, no auth): script jobs, inspect them.

Tests script a workflow job's lifecycle here, read back how often it was polled, change the API
keys, install faults and read the request log. Never exposed by a real Pixxel; never put it on a
network.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.sandbox.control import CommonControl, parse_model
from gateway.sandbox.pixxel_jobs import JobScript, PixxelJob, detail
from gateway.sandbox.pixxel_state import PixxelSandbox


def job_state(job: PixxelJob, now: float) -> dict[str, Any]:
    """Everything a test may want to assert about a job; ``job`` is what the API shows now."""
    life = job.lifecycle
    return {
        "job_id": job.id,
        "workflow_id": job.script.workflow_id,
        "status": job.status(now),
        "progress": job.progress(now),
        "created_at": life.created_at,
        "running_at": life.running_at,
        "finished_at": life.finished_at,
        "script": job.script.model_dump(mode="json"),
        "poll_count": job.poll_count,
        "job": detail(job, now),
    }


class PixxelControlApi:
    """Handlers of the ``/_sandbox/`` endpoints."""

    def __init__(self, sandbox: PixxelSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table of the control API."""
        return [
            web.post("/_sandbox/jobs", self.create_job),
            *CommonControl(self._sandbox, job_state).routes(),
        ]

    async def create_job(self, request: web.Request) -> web.Response:
        """Script a new job (201 with its ids); it is queued from now on."""
        script = await parse_model(request, JobScript)
        if isinstance(script, web.Response):
            return script
        job = self._sandbox.create_job(script)
        created = {"job_id": job.id, "workflow_id": script.workflow_id, "tasks": script.tasks}
        return web.json_response(created, status=201)

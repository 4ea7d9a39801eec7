"""Control API of the Alteryx sandbox (``/_sandbox/...``, no auth): script jobs, inspect them.

Tests script a job's lifecycle here, read back how often it was polled and whether it was
cancelled, revoke tokens, change the clients and token lifetime, install faults and read the
request log. Never exposed by a real Alteryx Server; never put it on a network.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.sandbox.alteryx_jobs import AlteryxJob, JobScript, detail
from gateway.sandbox.alteryx_state import AlteryxSandbox
from gateway.sandbox.control import CommonControl, parse_model


def job_state(job: AlteryxJob, now: float) -> dict[str, Any]:
    """Everything a test may want to assert about a job; ``job`` is what the API shows now
    (``null`` once a queued job was deleted by a cancel)."""
    life = job.lifecycle
    return {
        "job_id": job.id,
        "app_id": job.script.app_id,
        "status": job.status(now),
        "disposition": job.disposition(now),
        "phase": job.phase(now).value,
        "created_at": life.created_at,
        "running_at": life.running_at,
        "finished_at": life.finished_at if job.cancelled_at is None else job.cancelled_at,
        "script": job.script.model_dump(mode="json", by_alias=True),
        "poll_count": job.poll_count,
        "cancelled": job.cancelled_at is not None,
        "cancelled_at": job.cancelled_at,
        "deleted": job.deleted,
        "job": None if job.deleted else detail(job, now),
    }


class AlteryxControlApi:
    """Handlers of the ``/_sandbox/`` endpoints."""

    def __init__(self, sandbox: AlteryxSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table of the control API."""
        return [
            web.post("/_sandbox/jobs", self.create_job),
            web.delete("/_sandbox/tokens", self.revoke_tokens),
            *CommonControl(self._sandbox, job_state).routes(),
        ]

    async def create_job(self, request: web.Request) -> web.Response:
        """Script a new job (201 with its ids); it is queued from now on."""
        script = await parse_model(request, JobScript)
        if isinstance(script, web.Response):
            return script
        job = self._sandbox.create_job(script)
        return web.json_response({"job_id": job.id, "app_id": script.app_id}, status=201)

    async def revoke_tokens(self, request: web.Request) -> web.Response:
        """Invalidate every access token, so the next API call answers 401."""
        return web.json_response({"revoked": self._sandbox.tokens.revoke_all()})

"""HTTP face of the Pixxel sandbox: ``GET /v0/workflows/{workflow_id}/jobs/{job_id}`` (seed 004).

Authentication follows the seed's example, ``Authorization: YOUR_API_KEY``: the key is the whole
header value, with no scheme, so ``Bearer <key>`` is refused like a wrong key.
"""

from __future__ import annotations

from aiohttp import web

from gateway.sandbox.pixxel_jobs import detail
from gateway.sandbox.pixxel_state import PixxelSandbox
from gateway.sandbox.requestlog import credential_id, note_of
from gateway.sandbox.responses import message

JOB_PATH = "/v0/workflows/{workflow_id}/jobs/{job_id}"


class PixxelApi:
    """Handlers of the jobs endpoint."""

    def __init__(self, sandbox: PixxelSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table."""
        return [web.get(JOB_PATH, self.get_job)]

    async def get_job(self, request: web.Request) -> web.Response:
        """The job: 200, 401 without a valid key, 404 for an unknown job or workflow."""
        key = self._sandbox.authenticate(request.headers.get("Authorization", ""))
        if key is None:
            return message(401, "Unauthorized")
        note_of(request).credential_id = credential_id(key)
        info = request.match_info
        job = self._sandbox.poll(info["workflow_id"], info["job_id"])
        if job is None:
            return message(404, "job not found")
        return web.json_response(detail(job, self._sandbox.clock()))

"""HTTP face of the Workato Jobs API: resume, list, get, repeat_jobs.

Every endpoint authenticates, then takes a rate-limit slot (repeat_jobs in its own 1/s window),
then validates, in that order: a refused request never occupies a slot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.sandbox.body import receive_body
from gateway.sandbox.requestlog import credential_id, note_of
from gateway.sandbox.responses import message, not_found
from gateway.sandbox.workato_jobs import (
    JOB_STATUSES,
    WORKSPACE,
    JobQuery,
    JobStatus,
    Owner,
    UnknownOffsetError,
    detail,
)
from gateway.sandbox.workato_state import ResumeOutcome, WorkatoSandbox

_INVALID = object()  # what _json returns for a body that is not JSON
JOB_IDS_INVALID = "param is missing or the value is empty or invalid: job_ids"
MAX_ID_DIGITS = 18
"""A numeric id in a path is an integer of up to 18 ASCII digits (a 64-bit one), or no route:
a longer one raised in ``int()`` (500), and ``\\d`` matched other scripts' digits."""
ID_PATTERN = f"[0-9]{{1,{MAX_ID_DIGITS}}}"

_RESUME_REFUSALS: dict[ResumeOutcome, tuple[int, str]] = {
    ResumeOutcome.UNKNOWN_TOKEN: (404, "Resume token not found"),
    ResumeOutcome.ALREADY_RESUMED: (409, "Job has already been resumed"),
    ResumeOutcome.NOT_SUSPENDED: (409, "Job is not waiting to be resumed"),
}


@dataclass(frozen=True)
class ResumeRequest:
    """A validated resume body."""

    token: str
    data: dict[str, Any] | None


class JobsApi:
    """Handlers of the Jobs API endpoints."""

    def __init__(self, sandbox: WorkatoSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table; recipe ids are integers, anything else is a 404."""
        jobs = f"/recipes/{{recipe_id:{ID_PATTERN}}}/jobs"
        embedded = "/api/managed_users/{managed_user}" + jobs
        return [
            web.post("/api/job/resume", self.resume),
            web.get("/api" + jobs, self.list_jobs),
            web.get("/api" + jobs + "/{job_id}", self.get_job),
            web.get(embedded, self.list_jobs),
            web.get(embedded + "/{job_id}", self.get_job),
            web.post(f"/api/recipes/{{recipe_id:{ID_PATTERN}}}/repeat_jobs", self.repeat_jobs),
        ]

    async def resume(self, request: web.Request) -> web.Response:
        """``POST /api/job/resume``: 204, or 400/401/404/409/413/429."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        raw = await self._body(request)
        if isinstance(raw, web.Response):
            return raw
        if request.content_type != "application/json":  # Rails parses no params from it
            return message(400, "param is missing or the value is empty or invalid: token")
        parsed = parse_resume(raw)
        if isinstance(parsed, str):
            return message(400, parsed)
        outcome = self._sandbox.resume(parsed.token, raw)
        if outcome is ResumeOutcome.RESUMED:
            return web.Response(status=204)
        return message(*_RESUME_REFUSALS[outcome])

    async def list_jobs(self, request: web.Request) -> web.Response:
        """``GET [/api/managed_users/:id]/api/recipes/:recipe_id/jobs``."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        owner = owner_from(request)
        if owner is None:
            return not_found()
        query = parse_query(request.query)
        if isinstance(query, str):
            return message(400, query)
        try:
            page = self._sandbox.list_jobs(int(request.match_info["recipe_id"]), owner, query)
        except UnknownOffsetError:
            # The seeds do not say how an unknown offset is answered; this 400 is invented.
            return message(400, "offset_job_id does not name a job of this recipe")
        return web.json_response(page.to_json())

    async def get_job(self, request: web.Request) -> web.Response:
        """``GET [/api/managed_users/:id]/api/recipes/:recipe_id/jobs/:job_id``."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        owner = owner_from(request)
        recipe_id = int(request.match_info["recipe_id"])
        job_id = request.match_info["job_id"]
        job = None if owner is None else self._sandbox.find(recipe_id, job_id, owner)
        return not_found() if job is None else web.json_response(detail(job))

    async def repeat_jobs(self, request: web.Request) -> web.Response:
        """``POST /api/recipes/:recipe_id/repeat_jobs``: 200 with per-job results, or 400."""
        refusal = self._gate(request, repeat=True)
        if refusal is not None:
            return refusal
        raw = await self._body(request)
        if isinstance(raw, web.Response):
            return raw
        if request.content_type != "application/json":  # as for resume: no params parsed
            return message(400, JOB_IDS_INVALID)
        job_ids = parse_job_ids(raw, self._sandbox.settings.repeat_max_jobs)
        if isinstance(job_ids, str):
            return message(400, job_ids)
        recipe_id = int(request.match_info["recipe_id"])
        return web.json_response(self._sandbox.repeat(recipe_id, job_ids))

    def _gate(self, request: web.Request, *, repeat: bool = False) -> web.Response | None:
        """Authenticate and take a rate-limit slot; the refusal to send, if any."""
        credential = self._sandbox.authenticate(request.headers)
        if credential is None:
            return message(401, "Unauthorized")
        note = note_of(request)
        note.credential_id = credential_id(credential)
        note.at = self._sandbox.clock()
        admission = self._sandbox.admit(credential, note.at, repeat=repeat)
        if not admission.admitted:
            retry = str(admission.retry_after_s)
            return message(
                429, f"Too many requests. Retry after {retry} seconds.", {"Retry-After": retry}
            )
        note.counted = True
        return None

    async def _body(self, request: web.Request) -> bytes | web.Response:
        """The raw body, or the 413 to send when it exceeds ``max_body_bytes``."""
        limit = self._sandbox.settings.max_body_bytes
        received = await receive_body(request, limit)
        if received.too_large:
            return message(413, f"Request body exceeds {limit} bytes")
        return received.data


def owner_from(request: web.Request) -> Owner | None:
    """The owner named by the URL: numeric managed user id, ``E`` + external id, or none."""
    raw = request.match_info.get("managed_user")
    if raw is None:
        return WORKSPACE
    if raw.isascii() and raw.isdigit():  # "²" is a digit to isdigit(), not to int()
        return Owner(managed_user_id=int(raw)) if len(raw) <= MAX_ID_DIGITS else None
    # aiohttp has already percent-decoded the segment once: "Ecustomer%2F42" -> "Ecustomer/42".
    if raw.startswith("E") and len(raw) > 1:
        return Owner(external_id=raw[1:])
    return None


def parse_resume(raw: bytes) -> ResumeRequest | str:
    """The resume request, or the 400 message explaining why it is invalid."""
    document = _json(raw)
    if document is _INVALID:
        return "Request body is not valid JSON"
    if not isinstance(document, dict):
        return "Request body must be a JSON object"
    token = document.get("token")
    if not isinstance(token, str) or not token:
        return "param is missing or the value is empty or invalid: token"
    data = document.get("data")
    # Rails reads an explicit null as an absent optional parameter; anything else must be a hash.
    if data is not None and not isinstance(data, dict):
        return "data must be a JSON object"
    return ResumeRequest(token=token, data=data)


def parse_job_ids(raw: bytes, max_jobs: int) -> list[str] | str:
    """The job ids to repeat, or the 400 message."""
    document = _json(raw)
    job_ids = document.get("job_ids") if isinstance(document, dict) else None
    if not isinstance(job_ids, list) or not job_ids:
        return JOB_IDS_INVALID
    if not all(isinstance(job_id, str) and job_id for job_id in job_ids):
        return JOB_IDS_INVALID
    if len(job_ids) > max_jobs:
        return (
            f"Maximum {max_jobs} jobs can be repeated in a single request. Received {len(job_ids)}."
        )
    duplicates = sorted({job_id for job_id in job_ids if job_ids.count(job_id) > 1})
    if duplicates:
        # Documented as a cause of 400 without the wording; this message is invented.
        return f"Duplicate job_ids: {', '.join(duplicates)}"
    return job_ids


def parse_query(query: Mapping[str, str]) -> JobQuery | str:
    """List-endpoint query parameters, or the 400 message."""
    status = query.get("status")
    if status is not None and status not in JOB_STATUSES:
        return "status must be one of: succeeded, failed, pending"
    names = ("prev", "rerun_only", "failed", "rerun_jobs")
    flags = {name: _flag(query.get(name)) for name in names}
    if None in flags.values():
        return "prev, rerun_only, failed and rerun_jobs must be true or false"
    if flags["failed"]:  # seed 001: deprecated, "if true, returns failed jobs only"
        if status not in (None, "failed"):
            return "failed=true and status contradict each other"
        status = "failed"
    return JobQuery(
        status=_status(status),
        # seed 002 (legacy) names it rerun_jobs: "if true, returns rerun jobs only"
        rerun_only=bool(flags["rerun_only"] or flags["rerun_jobs"]),
        offset_job_id=query.get("offset_job_id") or None,
        prev=bool(flags["prev"]),
    )


def _status(value: str | None) -> JobStatus | None:
    for status in JOB_STATUSES:
        if status == value:
            return status
    return None


def _flag(value: str | None) -> bool | None:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    return True if value.lower() in ("true", "1") else None


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _INVALID

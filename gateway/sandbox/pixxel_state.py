"""State and rules of the Pixxel sandbox, independent of HTTP.

Holds the API keys, the scripted workflow jobs, the fault plan and the request log. The clock is
injected so tests move time instead of waiting.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway.sandbox.faults import FaultInjector
from gateway.sandbox.pixxel_jobs import JobScript, PixxelJob, new_job
from gateway.sandbox.requestlog import RequestLog, credential_id

DEFAULT_CREATED_BY = "sandbox-user"
DEFAULT_REQUEST_LOG_MAX = 10_000

_log = structlog.get_logger(__name__)


class PixxelSandboxSettings(BaseModel):
    """API keys and the ``created_by`` shown on jobs, changeable by ``PUT /_sandbox/settings``.

    ``request_log_max`` is read once, when the sandbox is built.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    api_keys: list[str] = Field(default_factory=list)
    created_by: str = DEFAULT_CREATED_BY
    request_log_max: int = Field(default=DEFAULT_REQUEST_LOG_MAX, ge=1)

    def updated(self, changes: Mapping[str, Any]) -> PixxelSandboxSettings:
        """A validated copy with ``changes`` applied."""
        return PixxelSandboxSettings.model_validate(self.model_dump() | dict(changes))

    def public_view(self) -> dict[str, Any]:
        """The settings without secrets: keys appear as their ids only."""
        shown = self.model_dump(exclude={"api_keys"})
        shown["api_key_ids"] = [credential_id(key) for key in self.api_keys]
        return shown


class PixxelSandbox:
    """In-memory Pixxel: API keys, workflow jobs, faults and the request log."""

    def __init__(
        self, settings: PixxelSandboxSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._initial_settings = settings
        self.settings = settings
        self.faults = FaultInjector()
        self.requests = RequestLog(settings.request_log_max)
        self._jobs: dict[str, PixxelJob] = {}

    def reset(self) -> None:
        """Back to the state right after construction (settings included)."""
        self.settings = self._initial_settings
        self.faults.clear()
        self.requests.clear()
        self._jobs.clear()

    def authenticate(self, authorization: str) -> str | None:
        """The API key presented, if valid; seed 004 sends it as the whole header value."""
        key = authorization.strip()
        presented = key.encode("utf-8", "surrogatepass")  # not UTF-8: a wrong key, no crash
        matches = [
            hmac.compare_digest(presented, k.encode("utf-8", "surrogatepass"))
            for k in self.settings.api_keys
        ]
        return key if key and any(matches) else None

    def create_job(self, script: JobScript) -> PixxelJob:
        """A new job, queued now, that will follow ``script``."""
        job = new_job(script, self.clock(), self.settings.created_by)
        self._jobs[job.id] = job
        _log.info("pixxel_sandbox.job_created", job_id=job.id, outcome=script.outcome)
        return job

    def job(self, job_id: str) -> PixxelJob | None:
        """Any job by id (for the control API)."""
        return self._jobs.get(job_id)

    def jobs(self) -> list[PixxelJob]:
        """Every job, oldest first."""
        return list(self._jobs.values())

    def poll(self, workflow_id: str, job_id: str) -> PixxelJob | None:
        """Read a job of ``workflow_id`` through the API, counting the read as a poll."""
        job = self._jobs.get(job_id)
        if job is None or job.script.workflow_id != workflow_id:
            return None
        job.poll_count += 1
        return job

    def stats(self) -> dict[str, Any]:
        """Totals for tests and dashboards."""
        now = self.clock()
        jobs = list(self._jobs.values())
        statuses = self.requests.status_counts
        by_status: dict[str, int] = {}
        for job in jobs:
            by_status[job.status(now)] = by_status.get(job.status(now), 0) + 1
        return {
            "jobs_total": len(jobs),
            "jobs_by_status": by_status,
            "polls_total": sum(job.poll_count for job in jobs),
            "requests_total": statuses.total(),
            "requests_by_status": {str(k): v for k, v in statuses.items()},
        }

"""State and rules of the Alteryx Server sandbox, independent of HTTP.

Holds the OAuth2 clients and the tokens issued to them, the scripted jobs, the fault plan and
the request log. The clock is injected so tests move time instead of waiting.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway.sandbox.alteryx_jobs import AlteryxJob, CancelOutcome, JobScript, new_job
from gateway.sandbox.alteryx_tokens import IssuedToken, TokenBook, TokenCheck
from gateway.sandbox.faults import FaultInjector
from gateway.sandbox.lifecycle import Phase
from gateway.sandbox.requestlog import RequestLog

DEFAULT_TOKEN_EXPIRES_IN_S = 3600
DEFAULT_REQUEST_LOG_MAX = 10_000

_log = structlog.get_logger(__name__)


class AlteryxSandboxSettings(BaseModel):
    """OAuth2 clients (client id -> secret) and token lifetime, changeable at run time by
    ``PUT /_sandbox/settings``. ``request_log_max`` is read once, when the sandbox is built.

    Changing ``clients`` does not revoke tokens already issued, as with a real authorization
    server; ``DELETE /_sandbox/tokens`` does.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    clients: dict[str, str] = Field(default_factory=dict)
    token_expires_in_s: int = Field(default=DEFAULT_TOKEN_EXPIRES_IN_S, ge=1)
    request_log_max: int = Field(default=DEFAULT_REQUEST_LOG_MAX, ge=1)

    def updated(self, changes: Mapping[str, Any]) -> AlteryxSandboxSettings:
        """A validated copy with ``changes`` applied."""
        return AlteryxSandboxSettings.model_validate(self.model_dump() | dict(changes))

    def public_view(self) -> dict[str, Any]:
        """The settings without secrets: client ids only."""
        shown = self.model_dump(exclude={"clients"})
        shown["client_ids"] = sorted(self.clients)
        return shown


class AlteryxSandbox:
    """In-memory Alteryx Server: clients, tokens, jobs, faults and the request log."""

    def __init__(
        self, settings: AlteryxSandboxSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._initial_settings = settings
        self.settings = settings
        self.faults = FaultInjector()
        self.requests = RequestLog(settings.request_log_max)
        self.tokens = TokenBook()
        self.token_refusals = 0
        self._jobs: dict[str, AlteryxJob] = {}

    def reset(self) -> None:
        """Back to the state right after construction (settings included)."""
        self.settings = self._initial_settings
        self.faults.clear()
        self.requests.clear()
        self.tokens.clear()
        self.token_refusals = 0
        self._jobs.clear()

    # --- OAuth2 -----------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str) -> IssuedToken | None:
        """A new access token if the client credentials are right, else None."""
        expected = self.settings.clients.get(client_id)
        if expected is None or not hmac.compare_digest(client_secret.encode(), expected.encode()):
            self.token_refusals += 1
            return None
        return self.tokens.issue(client_id, self.clock(), self.settings.token_expires_in_s)

    def check_token(self, value: str) -> TokenCheck:
        """Whether a bearer token is live now."""
        return self.tokens.check(value, self.clock())

    # --- jobs -------------------------------------------------------------------------------

    def create_job(self, script: JobScript) -> AlteryxJob:
        """A new job, queued now, that will follow ``script``."""
        job = new_job(script, self.clock())
        self._jobs[job.id] = job
        _log.info("alteryx_sandbox.job_created", job_id=job.id, disposition=script.disposition)
        return job

    def job(self, job_id: str) -> AlteryxJob | None:
        """Any job by id, deleted ones included (for the control API)."""
        return self._jobs.get(job_id)

    def jobs(self) -> list[AlteryxJob]:
        """Every job, oldest first."""
        return list(self._jobs.values())

    def visible_job(self, job_id: str) -> AlteryxJob | None:
        """The job as the API sees it: a deleted job does not exist."""
        job = self._jobs.get(job_id)
        return None if job is None or job.deleted else job

    def poll(self, job_id: str) -> AlteryxJob | None:
        """Read a job through the API, counting the read as a poll."""
        job = self.visible_job(job_id)
        if job is not None:
            job.poll_count += 1
        return job

    def cancel(self, job_id: str) -> CancelOutcome | None:
        """``DELETE /v3/jobs/{jobId}``; None when there is no such job."""
        job = self.visible_job(job_id)
        if job is None:
            return None
        outcome = job.cancel(self.clock())
        _log.info("alteryx_sandbox.job_cancel", job_id=job_id, outcome=outcome.name.lower())
        return outcome

    def stats(self) -> dict[str, Any]:
        """Totals for tests and dashboards."""
        now = self.clock()
        jobs = list(self._jobs.values())
        statuses = self.requests.status_counts
        return {
            "jobs_total": len(jobs),
            "complete_jobs": sum(job.phase(now) is Phase.TERMINAL for job in jobs),
            "cancelled_jobs": sum(job.cancelled_at is not None for job in jobs),
            "polls_total": sum(job.poll_count for job in jobs),
            "tokens_issued_total": self.tokens.issued_total,
            "tokens_live": self.tokens.live(now),
            "token_refusals_total": self.token_refusals,
            "requests_total": statuses.total(),
            "requests_by_status": {str(k): v for k, v in statuses.items()},
        }

"""State and rules of the Workato sandbox, independent of HTTP.

Holds jobs and their resume tokens, the credentials, the per-credential rate windows, the fault
plan and the request log. The clock is injected so tests can move time instead of waiting.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway.sandbox.faults import FaultInjector
from gateway.sandbox.lifecycle import MAX_SCRIPTED_S
from gateway.sandbox.requestlog import RequestLog, credential_id
from gateway.sandbox.window import Admission, SlidingWindow
from gateway.sandbox.workato_jobs import (
    WORKSPACE,
    Job,
    JobPage,
    JobQuery,
    JobStatus,
    Owner,
    ResumeState,
    new_job_id,
    page_of,
)

DEFAULT_RATE_LIMIT_PER_MINUTE = 60
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_BODY_BYTES = 50_000_000
DEFAULT_REPEAT_MAX_JOBS = 25
DEFAULT_REPEAT_PER_SECOND = 1
DEFAULT_PAGE_SIZE = 100
# The seeds say a job can be repeated at most 100 times.
DEFAULT_REPEAT_LIMIT_PER_JOB = 100
DEFAULT_REQUEST_LOG_MAX = 10_000

_log = structlog.get_logger(__name__)


class WorkatoSandboxSettings(BaseModel):
    """Credentials and limits, changeable at run time by ``PUT /_sandbox/settings``.

    ``request_log_max`` is the exception: it is read once, when the sandbox is built.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    api_tokens: list[str] = Field(default_factory=list)
    legacy_users: dict[str, str] = Field(default_factory=dict)
    rate_limit_per_minute: int = Field(default=DEFAULT_RATE_LIMIT_PER_MINUTE, ge=1)
    window_s: float = Field(default=DEFAULT_WINDOW_S, gt=0.0, le=MAX_SCRIPTED_S)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=0)
    repeat_max_jobs: int = Field(default=DEFAULT_REPEAT_MAX_JOBS, ge=1)
    repeat_per_second: int = Field(default=DEFAULT_REPEAT_PER_SECOND, ge=1)
    repeat_limit_per_job: int = Field(default=DEFAULT_REPEAT_LIMIT_PER_JOB, ge=0)
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1)
    request_log_max: int = Field(default=DEFAULT_REQUEST_LOG_MAX, ge=1)
    resume_running_s: float = Field(default=0.0, ge=0.0, le=MAX_SCRIPTED_S)
    """How long a resumed job goes on running (``pending``) before it succeeds: a real job's
    action runs on after its resume (seed 001), so a lookup right after it may see it pending."""

    def updated(self, changes: Mapping[str, Any]) -> WorkatoSandboxSettings:
        """A validated copy with ``changes`` applied."""
        return WorkatoSandboxSettings.model_validate(self.model_dump() | dict(changes))

    def public_view(self) -> dict[str, Any]:
        """The settings without secrets: credentials appear as their ids only."""
        shown = self.model_dump(exclude={"api_tokens", "legacy_users"})
        shown["api_token_ids"] = [credential_id(token) for token in self.api_tokens]
        shown["legacy_user_emails"] = sorted(self.legacy_users)
        return shown


class ResumeOutcome(enum.Enum):
    """Result of a resume attempt."""

    RESUMED = "resumed"
    UNKNOWN_TOKEN = "unknown_token"
    ALREADY_RESUMED = "already_resumed"
    NOT_SUSPENDED = "not_suspended"


class WorkatoSandbox:
    """In-memory Workato: jobs, waits, credentials, rate windows, faults and the request log."""

    def __init__(
        self, settings: WorkatoSandboxSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._initial_settings = settings
        self.settings = settings
        self.faults = FaultInjector()
        self.requests = RequestLog(settings.request_log_max)
        self._jobs: dict[str, Job] = {}
        self._tokens: dict[str, str] = {}
        self._windows: dict[str, SlidingWindow] = {}
        self._repeat_windows: dict[str, SlidingWindow] = {}
        self._running: dict[str, float] = {}
        """Resumed jobs still running: job id → when they succeed."""
        self._seq = 0

    def reset(self) -> None:
        """Back to the state right after construction (settings included)."""
        self.settings = self._initial_settings
        self.faults.clear()
        self.requests.clear()
        for store in (self._jobs, self._tokens, self._windows, self._repeat_windows):
            store.clear()
        self._running.clear()

    # --- credentials and limits -------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The credential presented (bearer token or legacy user token), if it is valid."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _known(token.strip(), self.settings.api_tokens):
            return token.strip()
        email = headers.get("x-user-email", "").strip().lower()
        user_token = headers.get("x-user-token", "")
        expected = {k.lower(): v for k, v in self.settings.legacy_users.items()}.get(email)
        if expected and user_token and _same(user_token, expected):
            return user_token
        return None

    def admit(self, credential: str, now: float, *, repeat: bool = False) -> Admission:
        """Take a rate-limit slot: repeat_jobs has its own per-second window."""
        if repeat:
            window = self._repeat_windows.setdefault(credential, SlidingWindow())
            return window.admit(now, self.settings.repeat_per_second, 1.0)
        window = self._windows.setdefault(credential, SlidingWindow())
        return window.admit(now, self.settings.rate_limit_per_minute, self.settings.window_s)

    # --- jobs -------------------------------------------------------------------------------

    def create_job(
        self, recipe_id: int = 1, owner: Owner = WORKSPACE, title: str | None = None
    ) -> Job:
        """A new job suspended on a wait with a fresh resume token."""
        job_id = new_job_id()
        return self._add(
            Job(
                id=job_id,
                seq=self._next_seq(),
                recipe_id=recipe_id,
                title=title or f"Sandbox job {job_id}",
                started_at=self.clock(),
                master_job_id=job_id,
                resume=ResumeState(token=secrets.token_urlsafe(32)),
                owner=owner,
            )
        )

    def job(self, job_id: str) -> Job | None:
        """Any job by id, whatever its recipe or owner."""
        self._finish_resumed()
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        self._finish_resumed()
        return sorted(self._jobs.values(), key=lambda job: job.seq, reverse=True)

    def find(self, recipe_id: int, job_id: str, owner: Owner) -> Job | None:
        """The job if it belongs to ``recipe_id`` and ``owner``; otherwise None, like a 404."""
        self._finish_resumed()
        job = self._jobs.get(job_id)
        if job is None or job.recipe_id != recipe_id or not job.visible_to(owner):
            return None
        return job

    def list_jobs(self, recipe_id: int, owner: Owner, query: JobQuery) -> JobPage:
        """One page of the recipe's jobs as ``owner`` sees them."""
        scope = [j for j in self.jobs() if j.recipe_id == recipe_id and j.visible_to(owner)]
        return page_of(scope, query, self.settings.page_size)

    def resume(self, token: str, body: bytes) -> ResumeOutcome:
        """Resume the job waiting on ``token``; a wait is resumed at most once."""
        job_id = self._tokens.get(token)
        if job_id is None:
            return ResumeOutcome.UNKNOWN_TOKEN
        job = self._jobs[job_id]
        if job.resume.count > 0 or job.status != "pending":
            job.resume.rejected += 1
            return (
                ResumeOutcome.ALREADY_RESUMED if job.resume.count else ResumeOutcome.NOT_SUSPENDED
            )
        now = self.clock()
        job.resume.count, job.resume.body, job.resume.at = 1, body, now
        if self.settings.resume_running_s == 0:
            job.complete("succeeded", now)
        else:
            self._running[job.id] = now + self.settings.resume_running_s
        _log.info("workato_sandbox.job_resumed", job_id=job.id, body_bytes=len(body))
        return ResumeOutcome.RESUMED

    def repeat(self, recipe_id: int, job_ids: list[str]) -> dict[str, Any]:
        """Repeat master jobs; the body of a 200 answer from repeat_jobs."""
        results = [self._repeat_one(recipe_id, job_id) for job_id in job_ids]
        enqueued = sum(result["status"] == "enqueued" for result in results)
        return {
            "results": results,
            "summary": {
                "total_requested": len(results),
                "total_enqueued": enqueued,
                "total_failed": len(results) - enqueued,
            },
        }

    def stats(self) -> dict[str, Any]:
        """Totals for tests and dashboards."""
        jobs = self.jobs()
        statuses = self.requests.status_counts
        return {
            "jobs_total": len(jobs),
            "pending_jobs": sum(job.status == "pending" for job in jobs),
            "resumed_jobs": sum(job.resume.count > 0 for job in jobs),
            "resumes_total": sum(job.resume.count for job in jobs),
            "max_resume_count": max((job.resume.count for job in jobs), default=0),
            "rejected_resumes_total": sum(job.resume.rejected for job in jobs),
            "max_resume_attempts": max((job.resume.attempts for job in jobs), default=0),
            "repeats_total": sum(job.is_repeat for job in jobs),
            "requests_total": statuses.total(),
            "rate_limited_total": statuses[429],
            "requests_by_status": {str(k): v for k, v in statuses.items()},
        }

    def settle_job(self, job: Job, status: JobStatus, error: str | None) -> None:
        """End ``job`` as ``status`` now (the control API): a resumed job that was still
        running no longer succeeds on its own later."""
        self._running.pop(job.id, None)
        job.complete(status, self.clock(), error)

    # --- internals --------------------------------------------------------------------------

    def _finish_resumed(self) -> None:
        """Resumed jobs whose ``resume_running_s`` is over succeed, as they are looked at."""
        now = self.clock()
        for job_id, at in [(i, at) for i, at in self._running.items() if at <= now]:
            del self._running[job_id]
            self._jobs[job_id].complete("succeeded", at)

    def _repeat_one(self, recipe_id: int, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        # repeat_jobs has no managed_users form in the seeds, so every job of the recipe counts.
        if job is None or job.recipe_id != recipe_id:
            return _repeat_failed(job_id, "err.item.not_found", "Job not found")
        refusal = self._repeat_refusal(job)
        if refusal is not None:
            return _repeat_failed(job_id, *refusal)
        repeat = self._repeat_of(job)
        return {"requested_job_id": job_id, "status": "enqueued", "job": {"id": repeat.id}}

    def _repeat_refusal(self, job: Job) -> tuple[str, str] | None:
        if job.is_repeat:
            return "err.job.repeat.invalid_id", f"Non-master job handle specified: {job.id}"
        if job.trigger_data_expired:
            return (
                "err.job.repeat.trigger_data_unavailable.expired",
                f"Can not repeat job {job.id}. It has been erased due to retention policy.",
            )
        limit = self.settings.repeat_limit_per_job
        if job.repeat_count >= limit:
            # The seeds state the 100-repeat limit but not its error; this type_id is invented.
            return (
                "err.job.repeat.limit_exceeded",
                f"Job {job.id} has been repeated the maximum of {limit} times.",
            )
        return None

    def _repeat_of(self, master: Job) -> Job:
        # A repeat re-runs the recipe from its trigger, so it suspends again on a new wait.
        repeat = self.create_job(master.recipe_id, master.owner, master.title)
        repeat.is_repeat = True
        repeat.master_job_id = master.id
        master.repeat_count += 1
        return repeat

    def _add(self, job: Job) -> Job:
        self._jobs[job.id] = job
        self._tokens[job.resume.token] = job.id
        return job

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _repeat_failed(job_id: str, type_id: str, message: str) -> dict[str, Any]:
    error = {"type_id": type_id, "message": message}
    return {"requested_job_id": job_id, "status": "failed", "error": error}


def _known(token: str, tokens: list[str]) -> bool:
    matches = [_same(token, known) for known in tokens]
    return bool(token) and any(matches)


def _same(presented: str, known: str) -> bool:
    """A constant-time comparison; a header's bytes that are not UTF-8 (aiohttp hands them over
    as surrogates) are a wrong credential, not a crash."""
    as_bytes = presented.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(as_bytes, known.encode("utf-8", "surrogatepass"))

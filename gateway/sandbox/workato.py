"""The Workato sandbox: an emulator of the Workato Jobs API (seeds 000-002) for tests and demos.

``create_app`` assembles the HTTP application around a :class:`WorkatoSandbox`; ``serve`` runs
one until cancelled. Middlewares, outermost first: request log, fault injection, JSON errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from gateway.sandbox.control import sandbox_app
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato_api import JobsApi
from gateway.sandbox.workato_control import ControlApi
from gateway.sandbox.workato_state import ResumeOutcome, WorkatoSandbox, WorkatoSandboxSettings

__all__ = [
    "ResumeOutcome",
    "WorkatoSandbox",
    "WorkatoSandboxSettings",
    "create_app",
    "serve",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8901

JOBS_ENDPOINTS = (
    "POST /api/job/resume",
    "GET  /api/recipes/{recipe_id}/jobs[/{job_id}]",
    "GET  /api/managed_users/{id | E<external id>}/recipes/{recipe_id}/jobs[/{job_id}]",
    "POST /api/recipes/{recipe_id}/repeat_jobs",
)
CONTROL_ENDPOINTS = (
    "POST /_sandbox/jobs                 create a suspended job -> job_id, resume_token",
    "GET  /_sandbox/jobs[/{job_id}]      job state (resume_count, resumed_data, ...)",
    "GET  /_sandbox/jobs/{job_id}/body   exact body of the successful resume",
    "PATCH /_sandbox/jobs/{job_id}       status, error, trigger_data_expired, title",
    "GET  /_sandbox/requests             request log",
    "GET  /_sandbox/stats                totals",
    "GET|PUT|DELETE /_sandbox/faults     fault plan",
    "GET|PUT /_sandbox/settings          limits and credentials",
    "POST /_sandbox/reset                back to the initial state",
)


def create_app(sandbox: WorkatoSandbox) -> web.Application:
    """The aiohttp application serving ``sandbox``'s Jobs API and control API."""
    # Resume bodies are read as a stream with their own limit (max_body_bytes), so aiohttp's
    # buffered-read limit only concerns the small control-API bodies.
    return sandbox_app(sandbox, JobsApi(sandbox).routes(), ControlApi(sandbox).routes())


async def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_tokens: Sequence[str] = (),
    *,
    legacy_users: Mapping[str, str] | None = None,
    settings: WorkatoSandboxSettings | None = None,
    clock: Callable[[], float] = time.time,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run a Workato sandbox until cancelled, announcing its URL and endpoints first.

    ``api_tokens`` and ``legacy_users`` are added to the credentials of ``settings``.
    """
    sandbox = WorkatoSandbox(_with_credentials(settings, api_tokens, legacy_users), clock=clock)
    async with SandboxServer(create_app(sandbox), host, port) as server:
        for line in describe(server.url, sandbox.settings):
            (announce or _print_now)(line)
        await asyncio.Event().wait()


def describe(url: str, settings: WorkatoSandboxSettings) -> list[str]:
    """Human-readable summary printed at start-up (credentials as ids, never the secrets)."""
    view = settings.public_view()
    lines = [f"Workato sandbox listening on {url}", "Jobs API:"]
    lines += [f"  {endpoint}" for endpoint in JOBS_ENDPOINTS]
    lines += ["Control API (no auth):"] + [f"  {endpoint}" for endpoint in CONTROL_ENDPOINTS]
    lines.append(
        f"Credentials: api tokens {view['api_token_ids'] or 'none'}, "
        f"legacy users {view['legacy_user_emails'] or 'none'}; "
        f"{settings.rate_limit_per_minute} requests per {settings.window_s:g} s"
    )
    if not settings.api_tokens and not settings.legacy_users:
        lines.append("Warning: no credentials configured, every Jobs API request gets 401")
    return lines


def _with_credentials(
    settings: WorkatoSandboxSettings | None,
    api_tokens: Sequence[str],
    legacy_users: Mapping[str, str] | None,
) -> WorkatoSandboxSettings:
    base = settings or WorkatoSandboxSettings()
    return base.updated(
        {
            "api_tokens": [*base.api_tokens, *api_tokens],
            "legacy_users": {**base.legacy_users, **(legacy_users or {})},
        }
    )


def _print_now(line: str) -> None:
    print(line, flush=True)

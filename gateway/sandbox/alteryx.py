"""The Alteryx Server sandbox: an emulator of the v3 jobs API (seed 003) for tests and demos.

``create_app`` assembles the HTTP application around an :class:`AlteryxSandbox`; ``serve`` runs
one until cancelled. Middlewares, outermost first: request log, fault injection, JSON errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from gateway.sandbox.alteryx_api import AlteryxApi
from gateway.sandbox.alteryx_control import AlteryxControlApi
from gateway.sandbox.alteryx_jobs import JobScript
from gateway.sandbox.alteryx_state import AlteryxSandbox, AlteryxSandboxSettings
from gateway.sandbox.control import sandbox_app
from gateway.sandbox.server import SandboxServer

__all__ = [
    "AlteryxSandbox",
    "AlteryxSandboxSettings",
    "JobScript",
    "create_app",
    "serve",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8902

API_ENDPOINTS = (
    "POST   /webapi/oauth2/token                 client credentials (HTTP Basic) -> bearer token",
    "GET    /webapi/v3/jobs/{jobId}[?includeMessages=true|false]",
    "GET    /webapi/v3/jobs/{jobId}/messages",
    "DELETE /webapi/v3/jobs/{jobId}              cancel a Queued or Running job",
    "(the jobs paths also answer without the /webapi prefix)",
)
CONTROL_ENDPOINTS = (
    "POST /_sandbox/jobs                 script a job -> job_id",
    "GET  /_sandbox/jobs[/{job_id}]      job state (status, poll_count, cancelled, ...)",
    "DELETE /_sandbox/tokens             revoke every access token",
    "GET  /_sandbox/requests             request log",
    "GET  /_sandbox/stats                totals",
    "GET|PUT|DELETE /_sandbox/faults     fault plan",
    "GET|PUT /_sandbox/settings          clients and token lifetime",
    "POST /_sandbox/reset                back to the initial state",
)


def create_app(sandbox: AlteryxSandbox) -> web.Application:
    """The aiohttp application serving ``sandbox``'s API and control API."""
    return sandbox_app(sandbox, AlteryxApi(sandbox).routes(), AlteryxControlApi(sandbox).routes())


async def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    clients: Mapping[str, str] | None = None,
    *,
    settings: AlteryxSandboxSettings | None = None,
    clock: Callable[[], float] = time.time,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run an Alteryx sandbox until cancelled, announcing its URL and endpoints first.

    ``clients`` (client id -> secret) are added to the clients of ``settings``.
    """
    base = settings or AlteryxSandboxSettings()
    merged = base.updated({"clients": {**base.clients, **(clients or {})}})
    sandbox = AlteryxSandbox(merged, clock=clock)
    async with SandboxServer(create_app(sandbox), host, port) as server:
        for line in describe(server.url, sandbox.settings):
            (announce or _print_now)(line)
        await asyncio.Event().wait()


def describe(url: str, settings: AlteryxSandboxSettings) -> list[str]:
    """Human-readable summary printed at start-up (client ids, never the secrets)."""
    lines = [f"Alteryx Server sandbox listening on {url}", f"API (baseURL {url}/webapi):"]
    lines += [f"  {endpoint}" for endpoint in API_ENDPOINTS]
    lines += ["Control API (no auth):"] + [f"  {endpoint}" for endpoint in CONTROL_ENDPOINTS]
    clients = sorted(settings.clients) or "none"
    lines.append(f"Clients: {clients}; tokens expire after {settings.token_expires_in_s} s")
    if not settings.clients:
        lines.append("Warning: no clients configured, every token request gets 401")
    return lines


def _print_now(line: str) -> None:
    print(line, flush=True)

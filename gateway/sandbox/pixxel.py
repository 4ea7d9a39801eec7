"""The Pixxel sandbox: an emulator of Pixxel's workflow jobs API (seed 004) for tests and demos.

``create_app`` assembles the HTTP application around a :class:`PixxelSandbox`; ``serve`` runs
one until cancelled. Middlewares, outermost first: request log, fault injection, JSON errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from gateway.sandbox.control import sandbox_app
from gateway.sandbox.pixxel_api import PixxelApi
from gateway.sandbox.pixxel_control import PixxelControlApi
from gateway.sandbox.pixxel_jobs import JobScript
from gateway.sandbox.pixxel_state import PixxelSandbox, PixxelSandboxSettings
from gateway.sandbox.server import SandboxServer

__all__ = [
    "JobScript",
    "PixxelSandbox",
    "PixxelSandboxSettings",
    "create_app",
    "serve",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8903

API_ENDPOINTS = (
    "GET  /v0/workflows/{workflow_id}/jobs/{job_id}   header  Authorization: <api key>",
)
CONTROL_ENDPOINTS = (
    "POST /_sandbox/jobs                 script a job -> job_id, workflow_id",
    "GET  /_sandbox/jobs[/{job_id}]      job state (status, progress, poll_count, ...)",
    "GET  /_sandbox/requests             request log",
    "GET  /_sandbox/stats                totals",
    "GET|PUT|DELETE /_sandbox/faults     fault plan",
    "GET|PUT /_sandbox/settings          API keys",
    "POST /_sandbox/reset                back to the initial state",
)


def create_app(sandbox: PixxelSandbox) -> web.Application:
    """The aiohttp application serving ``sandbox``'s API and control API."""
    return sandbox_app(sandbox, PixxelApi(sandbox).routes(), PixxelControlApi(sandbox).routes())


async def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_keys: Sequence[str] = (),
    *,
    settings: PixxelSandboxSettings | None = None,
    clock: Callable[[], float] = time.time,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run a Pixxel sandbox until cancelled, announcing its URL and endpoints first.

    ``api_keys`` are added to the keys of ``settings``.
    """
    base = settings or PixxelSandboxSettings()
    sandbox = PixxelSandbox(base.updated({"api_keys": [*base.api_keys, *api_keys]}), clock=clock)
    async with SandboxServer(create_app(sandbox), host, port) as server:
        for line in describe(server.url, sandbox.settings):
            (announce or _print_now)(line)
        await asyncio.Event().wait()


def describe(url: str, settings: PixxelSandboxSettings) -> list[str]:
    """Human-readable summary printed at start-up (key ids, never the keys)."""
    lines = [f"Pixxel sandbox listening on {url}", "API:"]
    lines += [f"  {endpoint}" for endpoint in API_ENDPOINTS]
    lines += ["Control API (no auth):"] + [f"  {endpoint}" for endpoint in CONTROL_ENDPOINTS]
    lines.append(f"API keys: {settings.public_view()['api_key_ids'] or 'none'}")
    if not settings.api_keys:
        lines.append("Warning: no API keys configured, every API request gets 401")
    return lines


def _print_now(line: str) -> None:
    print(line, flush=True)

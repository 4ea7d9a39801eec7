"""What the sandbox tests share: a fake clock, a client of one served sandbox, and the runners of
``serve`` and of the CLI, so each test module holds only its emulator's own calls.

Every HTTP call is bounded by the session timeout, every wait by asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.children import die_with_parent
from gateway.sandbox.server import SandboxServer

T0 = 1_700_000_000.0
STEP_TIMEOUT_S = 10.0


class FakeClock:
    """The sandbox's clock; tests move it instead of sleeping."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class SandboxClient:
    """Calls to a served sandbox; each test module's ``Harness`` adds its API's calls."""

    url: str
    http: aiohttp.ClientSession
    clock: FakeClock

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Reply:
        async with self.http.request(
            method, self.url + path, headers=headers or {}, **kwargs
        ) as response:
            raw = await response.read()
            return Reply(response.status, json.loads(raw) if raw else None, response.headers)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """A control API call (no credentials) that must succeed; its body."""
        reply = await self.call(method, "/_sandbox" + path, headers={}, json=body)
        assert reply.status < 300, (reply.status, reply.body)
        return reply.body

    async def job_state(self, job_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self.control("GET", f"/jobs/{job_id}")
        return state

    async def faults(self, **plan: Any) -> None:
        await self.control("PUT", "/faults", plan)

    async def requests_log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self.control("GET", "/requests")
        return entries


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """``app`` on a free loopback port: its URL and a client session, both closed on exit."""
    server = SandboxServer(app)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await server.start()
    try:
        timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield server.url, http
    finally:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await server.stop()


@asynccontextmanager
async def serving(
    serve: Callable[..., Coroutine[Any, Any, None]], *args: Any
) -> AsyncIterator[list[str]]:
    """Run ``serve(*args, announce=...)`` until the block ends; yields the lines announced so far
    (the URL last on the first) once there is one. On exit, cancelling must end it."""
    lines: list[str] = []
    announced = asyncio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        announced.set()

    task = asyncio.create_task(serve(*args, announce=announce))
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await announced.wait()
            yield lines
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, STEP_TIMEOUT_S)


@asynccontextmanager
async def sandbox_process(*args: str) -> AsyncIterator[str]:
    """``python -m gateway sandbox *args`` until the block ends; yields its first output line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "sandbox",
        *args,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S * 2):
            assert process.stdout is not None
            yield (await process.stdout.readline()).decode()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), STEP_TIMEOUT_S)


async def raw_status(url: str, request: bytes) -> int:
    """The status of a request sent as bytes: aiohttp's client writes header values as UTF-8,
    and these tests need bytes that are not."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        status_line = await asyncio.wait_for(reader.readline(), STEP_TIMEOUT_S)
        return int(status_line.split()[1])
    finally:
        writer.close()

"""The latency baseline: a non-durable forwarder with the gateway's HTTP surface.

``POST /v1/waits`` keeps ``key -> resume_token`` in a dict; ``POST /v1/events`` looks the key
up, answers 202 at once and forwards ``POST /api/job/resume`` to Workato (the sandbox) in a
background task. Nothing is written to disk, nothing is retried: it shows how fast a resume can
follow an event when durability costs nothing, which is the floor the gateway is measured
against. Run as ``python -m bench.forwarder --port P --workato URL --api-token T --api-key K``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from aiohttp import web

RESUME_PATH = "/api/job/resume"
REQUEST_TIMEOUT_S = 20.0


class Forwarder:
    """Waits in memory, events forwarded as soon as they match."""

    def __init__(self, workato_url: str, api_token: str, api_key: str) -> None:
        self._resume_url = workato_url.rstrip("/") + RESUME_PATH
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._auth = f"Bearer {api_key}"
        self._tokens: dict[str, str] = {}
        self._early: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.counts = {"forwarded": 0, "failed": 0}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/waits", self.register),
            web.post("/v1/events", self.post_event),
            web.get("/healthz", self.healthz),
        ]

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: one client session; in-flight forwards finish on exit."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    async def register(self, request: web.Request) -> web.Response:
        self._authorize(request)
        wait = json.loads(await request.read())
        self._tokens[wait["key"]] = wait["resume_token"]
        event = self._early.pop(wait["key"], None)
        if event is not None:
            self._forward(wait["key"], event)
        return web.json_response({"outcome": "created", "key": wait["key"]}, status=201)

    async def post_event(self, request: web.Request) -> web.Response:
        self._authorize(request)
        event = json.loads(await request.read())
        key = event["key"]
        if key in self._tokens:
            self._forward(key, event)
            outcome = "matched"
        else:
            self._early[key] = event
            outcome = "buffered"
        return web.json_response(
            {"outcome": outcome, "event_id": event["id"], "key": key}, status=202
        )

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.counts})

    def _authorize(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != self._auth:
            raise web.HTTPUnauthorized()

    def _forward(self, key: str, event: dict[str, Any]) -> None:
        token = self._tokens.pop(key)
        body = {"token": token, "data": {"status": event["status"], "payload": event["data"]}}
        task = asyncio.create_task(self._resume(body), name=f"resume-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume(self, body: dict[str, Any]) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with self._session.post(
                self._resume_url, json=body, headers=self._headers, timeout=timeout
            ) as response:
                await response.read()
                ok = response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.counts["forwarded" if ok else "failed"] += 1


def create_app(forwarder: Forwarder) -> web.Application:
    app = web.Application()
    app.add_routes(forwarder.routes())
    app.cleanup_ctx.append(forwarder.lifecycle)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workato", required=True, help="base URL of Workato (the sandbox)")
    parser.add_argument("--api-token", required=True, help="Workato API token")
    parser.add_argument("--api-key", required=True, help="key callers present as Bearer")
    args = parser.parse_args(argv)
    forwarder = Forwarder(args.workato, args.api_token, args.api_key)
    web.run_app(create_app(forwarder), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

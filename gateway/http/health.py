"""Liveness, readiness and metrics for the platform."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import web

from gateway.errors import StoreError
from gateway.http.openapi import openapi_document
from gateway.http.problems import problem
from gateway.metrics import Metrics
from gateway.store.base import Store

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[str]]
"""A dependency's readiness: ``"up"``, or a word saying what is wrong."""


class Health:
    def __init__(
        self, store: Store, metrics: Metrics, checks: Mapping[str, Check] | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._checks = dict(checks or {})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
            web.get("/openapi.json", self.openapi),
        ]

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        checks = {"store": await self._store_state()}
        checks |= {name: await check() for name, check in self._checks.items()}
        down = sorted(name for name, state in checks.items() if state != "up")
        if down:
            detail = f"not ready: {', '.join(f'{name} is {checks[name]}' for name in down)}"
            return problem(503, "/problems/not-ready", "Not ready", detail, checks=checks)
        return web.json_response({"status": "ready", "checks": checks})

    async def _store_state(self) -> str:
        try:
            await self._store.ping()
        except StoreError:
            return "down"
        return "up"

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def metrics(self, _request: web.Request) -> web.Response:
        """The counters, and the rows by state when the store answers: a failing store took
        every counter out of the scrape, when they matter most."""
        try:
            counts = await self._store.counts()
        except StoreError:
            log.warning("metrics.rows_unavailable")
        else:
            for kind, states in counts.items():
                for state, n in states.items():
                    self._metrics.rows.labels(kind, state).set(n)
        return web.Response(body=self._metrics.render(), content_type="text/plain")

"""Liveness, readiness and metrics for the platform."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import StoreError
from gateway.http.openapi import openapi_document
from gateway.http.problems import problem
from gateway.metrics import Metrics
from gateway.store.base import Store


class Health:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

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
        try:
            await self._store.ping()
        except StoreError:
            return problem(
                503,
                "/problems/not-ready",
                "Not ready",
                "the store does not answer",
                checks={"store": "down"},
            )
        return web.json_response({"status": "ready", "checks": {"store": "up"}})

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def metrics(self, _request: web.Request) -> web.Response:
        for kind, states in (await self._store.counts()).items():
            for state, n in states.items():
                self._metrics.rows.labels(kind, state).set(n)
        return web.Response(body=self._metrics.render(), content_type="text/plain")

"""The composition root: builds every part from settings and owns their lifecycles.

Start order: store → delivery → HTTP. Stop order is the reverse and written down in ``stop``:
stop intake, finish or release in-flight work (bounded), close the store.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.deliver.deliverer import Deliverer
from gateway.http.api import Api
from gateway.http.auth import ApiKeys
from gateway.http.health import Health
from gateway.http.problems import problem_middleware
from gateway.ingest.service import Ingest
from gateway.metrics import Metrics
from gateway.security.tokens import TokenCipher
from gateway.store import open_store

log = structlog.get_logger(__name__)


class Gateway:
    """One gateway process: ``await start()``, ``await stop()``, or ``async with``."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        self.settings = settings
        cipher = TokenCipher([(k.id, k.key_bytes) for k in settings.security.token_keys])
        self.metrics = Metrics()
        self.store = open_store(settings.store)
        self.deliverer = Deliverer(
            self.store, cipher, settings.tenants, settings.delivery, clock, self.metrics
        )
        self.ingest = Ingest(
            self.store,
            cipher,
            settings.ingest,
            clock,
            self.metrics,
            on_match=self.deliverer.notify,
            raw_mode_tenants=frozenset(t.name for t in settings.tenants if t.raw_mode),
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[problem_middleware], client_max_size=self.settings.server.max_body_bytes
        )
        app.add_routes(Api(self.ingest, ApiKeys(self.settings.tenants)).routes())
        app.add_routes(Health(self.store, self.metrics).routes())
        return app

    async def start(self) -> None:
        await self.store.open()
        await self.deliverer.start()
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=self.settings.server.shutdown_timeout_s,
        )
        await self._runner.setup()
        server = self.settings.server
        self._site = web.TCPSite(self._runner, server.host, server.port, reuse_address=True)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        log.info(
            "gateway.started",
            host=server.host,
            port=self.port,
            tenants=[t.name for t in self.settings.tenants],
        )

    async def stop(self) -> None:
        """Stop intake, drain deliveries, close the store. Safe to call twice."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()  # stops accepting, lets in-flight HTTP requests finish
        await self.deliverer.stop(self.settings.server.shutdown_timeout_s)
        await self.store.close()
        log.info("gateway.stopped")

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or a supervised task dies (then raise its error)."""
        waiters = [asyncio.create_task(e.wait()) for e in (stop, self.deliverer.failed)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.deliverer.failure is not None:
            raise self.deliverer.failure

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

"""The composition root: builds every part from settings and owns their lifecycles.

Start order: store → outcomes publisher → delivery → pollers → Kafka consumer → HTTP. Stop
order is written down in ``stop``: stop intake (HTTP, Kafka), finish or release in-flight work
(bounded), flush outcomes, close the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.blobs.collector import BlobCollector
from gateway.blobs.factory import blob_store
from gateway.blobs.signing import UrlSigner
from gateway.clock import Budget, Clock, system_clock
from gateway.config.settings import Settings
from gateway.deliver.claimcheck import ClaimChecks
from gateway.deliver.deliverer import Deliverer
from gateway.deliver.outcomes import OutcomePublisher
from gateway.errors import GatewayError, listen_error
from gateway.http.api import Api
from gateway.http.auth import ApiKeys
from gateway.http.blobs import BlobDownloads
from gateway.http.health import Health
from gateway.http.hooks import Hooks
from gateway.http.problems import answered
from gateway.ingest.bodies import Bodies
from gateway.ingest.kafka import KafkaIngest
from gateway.ingest.service import Ingest
from gateway.metrics import Metrics
from gateway.poll.poller import Poller
from gateway.security.tokens import TokenCipher
from gateway.security.urlkeys import url_signing_keys
from gateway.store import open_store

log = structlog.get_logger(__name__)

STOP_PART_MIN_S = 0.1
"""What each part of the stop gets however little of its time is left: enough to hand back."""


class Gateway:
    """One gateway process: ``await start()``, ``await stop()``, or ``async with``."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        self.settings = settings
        self.clock = clock
        cipher = TokenCipher([(k.id, k.key_bytes) for k in settings.security.token_keys])
        self.metrics = Metrics()
        self.store = open_store(settings.store)
        self.blobs = blob_store(settings.blobs)
        self._signer = UrlSigner(url_signing_keys(settings.security), base_url="")
        claim_checks = ClaimChecks(
            self.blobs,
            self.store,
            self._signer,
            clock,
            self.public_base_url,
            grace_s=settings.blobs.url_grace_s,
            presign=settings.blobs.presign,
        )
        self.collector = BlobCollector(
            self.store, self.blobs, clock, self.metrics, settings.blobs.gc_interval_s
        )
        kafka = settings.kafka
        publish = kafka.enabled and kafka.outcomes_topic is not None
        self.outcomes = OutcomePublisher(kafka, self.metrics) if publish else None
        self.deliverer = Deliverer(
            self.store,
            cipher,
            settings.tenants,
            settings.delivery,
            clock,
            self.metrics,
            self.blobs,
            claim_checks,
            on_outcome=self.outcomes.offer if self.outcomes else None,
        )
        self.ingest = Ingest(
            self.store,
            cipher,
            settings.ingest,
            clock,
            self.metrics,
            on_match=self.deliverer.notify,
            on_finished=self.deliverer.finished,
            raw_mode_tenants=frozenset(t.name for t in settings.tenants if t.raw_mode),
            connections=settings.connections,
        )
        self.bodies = Bodies(self.ingest, self.blobs, settings.ingest)
        tenant_names = frozenset(t.name for t in settings.tenants)
        self.kafka = (
            KafkaIngest(kafka, self.ingest, tenant_names, clock, self.metrics)
            if kafka.enabled
            else None
        )
        self.poller = Poller(
            self.store, self.ingest, settings.connections, settings.polling, clock, self.metrics
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._collecting: asyncio.Task[None] | None = None
        self.port: int | None = None

    def public_base_url(self) -> str:
        """Where Workato reaches this gateway's ``/v1/blobs``: configured, or where it listens."""
        configured = self.settings.blobs.public_base_url
        if configured is not None:
            return configured
        return f"http://{self.settings.server.host}:{self.port or self.settings.server.port}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_body_bytes)
        hooks = Hooks(self.ingest, self.bodies, self.settings.sources, self.clock, self.metrics)
        checks = {"kafka": self.kafka.check} if self.kafka else None
        routes = [
            *Api(self.ingest, self.bodies, ApiKeys(self.settings.tenants)).routes(),
            *hooks.routes(),
            *BlobDownloads(self.blobs, self._signer, self.clock).routes(),
            *Health(self.store, self.metrics, checks).routes(),
        ]
        app.add_routes(answered(routes, self._refused))
        return app

    async def start(self) -> None:
        server = self.settings.server
        await can_listen(server.host, server.port)  # before any worker claims or sends
        await self.store.open()
        await self.blobs.start()
        if removed := self.bodies.remove_leftovers(time.time()):
            log.info("spool.leftovers_removed", count=removed)
        self._collecting = asyncio.create_task(self.collector.run(), name="blob-collector")
        if self.outcomes:
            await self.outcomes.start()
        await self.deliverer.start()
        await self.poller.start()
        if self.kafka:
            await self.kafka.start()
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=self.settings.server.shutdown_timeout_s,
            auto_decompress=False,  # a compressed body is refused (bodies.refuse_encoded)
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, server.host, server.port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:  # taken since the check (``async with`` stops what started)
            raise listen_error(server.host, server.port, exc) from exc
        self.port = self._runner.addresses[0][1]
        log.info(
            "gateway.started",
            host=server.host,
            port=self.port,
            tenants=[t.name for t in self.settings.tenants],
        )
        if self.settings.env == "prod" and self.settings.blobs.public_base_url is None:
            log.warning(
                "blobs.public_base_url_unset",
                claim_check_urls=self.public_base_url(),
                hint="set [blobs] public_base_url to the address Workato can reach",
            )

    async def stop(self) -> None:
        """Stop intake, drain deliveries, close the store. Safe to call twice."""
        if self._runner is not None:
            log.info("gateway.stopping", drain_s=self.settings.server.shutdown_timeout_s)
            runner, self._runner = self._runner, None
            await runner.cleanup()  # stops accepting, lets in-flight HTTP requests finish
        # The parts after the HTTP server share one more shutdown_timeout_s, each given what
        # is left of it: each with its own, the stop could outlast a container's grace period.
        # The intakes and the deliveries stop side by side (none waits for another: a broker
        # that is gone must not take the deliveries' time), then what they report to, then
        # the stores. One failing part still lets the others stop.
        budget = Budget(self.settings.server.shutdown_timeout_s, least=STOP_PART_MIN_S)
        side_by_side: list[tuple[str, Callable[[float], Awaitable[None]]]] = []
        if self.kafka:  # finishes the batch in hand, commits, leaves the group
            side_by_side.append(("kafka", self.kafka.stop))
        side_by_side += [("poller", self.poller.stop), ("deliverer", self.deliverer.stop)]
        await asyncio.gather(*(_stop_part(name, step, budget) for name, step in side_by_side))
        if self.outcomes:
            await _stop_part("outcomes", self.outcomes.stop, budget)
        await _stop_part("blob_collector", lambda _: self._stop_collecting(), budget)
        await _stop_part("blobs", lambda _: self.blobs.close(), budget)
        await _stop_part("store", lambda _: self.store.close(), budget)
        log.info("gateway.stopped")

    def _refused(self, route: str, status: int, named: dict[str, object]) -> None:
        self.metrics.refused.labels(route, str(status)).inc()
        log.info("http.refused", route=route, status=status, **named)

    async def _stop_collecting(self) -> None:
        if self._collecting is not None:
            collecting, self._collecting = self._collecting, None
            collecting.cancel()
            await asyncio.gather(collecting, return_exceptions=True)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or a supervised task dies (then raise its error)."""
        watched = [stop, self.deliverer.failed, self.poller.failed]
        watched += [side.failed for side in (self.kafka, self.outcomes) if side]
        waiters = [asyncio.create_task(e.wait()) for e in watched]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.deliverer.failure is not None:
            raise self.deliverer.failure
        if self.poller.failed.is_set():
            raise GatewayError("the poller died; see the log")
        for side in (self.kafka, self.outcomes):
            if side and side.failure is not None:
                raise side.failure

    async def __aenter__(self) -> Gateway:
        try:
            await self.start()
        except BaseException:  # e.g. Kafka unreachable: close what did start, then say why
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def can_listen(host: str, port: int) -> None:
    """Bind, as the server will (every address the host resolves to, all interfaces for
    ``""``), and let go: a taken port is known before the workers start (they claimed
    deliveries, and could send one, from a process about to fail)."""
    loop = asyncio.get_running_loop()
    try:
        trial = await loop.create_server(
            asyncio.Protocol, host or None, port, reuse_address=True, start_serving=False
        )
    except OSError as exc:  # the port is taken, the host is not this machine's
        raise listen_error(host, port, exc) from exc
    trial.close()
    await trial.wait_closed()


async def _stop_part(name: str, stop: Callable[[float], Awaitable[None]], budget: Budget) -> None:
    try:
        await stop(budget.left())
    except Exception:
        log.exception("gateway.stop_failed", part=name)

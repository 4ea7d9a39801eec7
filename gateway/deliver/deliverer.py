"""The delivery service: one lane per tenant plus the sweeper, started and stopped together."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import structlog

from gateway.blobs.base import BlobStore
from gateway.clock import Budget, Clock
from gateway.config.settings import DeliverySettings, TenantSettings
from gateway.deliver.claimcheck import ClaimChecks
from gateway.deliver.classify import MAX_RETRY_AFTER_S
from gateway.deliver.lane import LEASE_MARGIN_S, Credential, Lane, LaneDeps
from gateway.deliver.limiter import SlidingWindow
from gateway.deliver.workato import WorkatoClient
from gateway.metrics import Metrics
from gateway.security.tokens import TokenCipher
from gateway.store.base import Store
from gateway.store.records import Outcome, Sweep
from gateway.wakeable import sleep_or_wake

log = structlog.get_logger(__name__)
SWEEPER = "sweeper"
SWEEP_LIMIT = 1000
"""Rows of each kind one sweep ends: after a long outage the backlog is swept in transactions
this short, ingest's batches committing in between, not in one that holds the writer."""


class Deliverer:
    """Runs the lanes and the sweeper as named, supervised tasks."""

    def __init__(
        self,
        store: Store,
        cipher: TokenCipher,
        tenants: list[TenantSettings],
        settings: DeliverySettings,
        clock: Clock,
        metrics: Metrics,
        blobs: BlobStore,
        claim_checks: ClaimChecks,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._settings = settings
        owner = f"gw-{uuid.uuid4().hex[:12]}"
        self._deps = LaneDeps(
            store,
            cipher,
            clock,
            metrics,
            settings,
            owner,
            random.Random(),
            blobs,
            claim_checks,
            on_outcome,
        )
        self._session: aiohttp.ClientSession | None = None
        self._lanes: dict[str, Lane] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.failed = asyncio.Event()
        """Set when a lane or the sweeper died; the app then stops rather than limp on."""
        self.failure: BaseException | None = None

    async def start(self) -> None:
        """Open the HTTP session, restore rate windows and pauses, start lanes and the sweeper."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        credentials = await self._credentials()
        for tenant in self._tenants:
            # the lease must outlive any request: what is left of it bounds a long upload
            longest = self._settings.lease_s - LEASE_MARGIN_S
            client = WorkatoClient(
                self._session, tenant, self._settings.request_timeout_s, longest_s=longest
            )
            lane = Lane(tenant, client, credentials[tenant.credential_id], self._deps)
            self._lanes[tenant.name] = lane
            self._spawn(lane.run(), f"lane-{tenant.name}")
        self._spawn(self._sweep_forever(), SWEEPER)

    async def _credentials(self) -> dict[str, Credential]:
        """One rate window and pause per credential (tenants sharing a credential share them),
        restored from the store: paused while any of its tenants' pauses lasts."""
        credentials: dict[str, Credential] = {}
        span = self._settings.rate_window_s + self._settings.rate_margin_s
        now = self._deps.clock()  # the sends read here outlive the sweep: sends_forgotten_before
        pauses = {p.tenant: p.until for p in await self._store.active_pauses(now)}
        limits = _shared_limits(self._tenants)
        longest_pause = max(MAX_RETRY_AFTER_S, self._settings.auth_pause_s)
        for tenant in self._tenants:
            cid = tenant.credential_id
            if cid not in credentials:
                # the store keeps when each slot was taken; its request may have reached
                # Workato until its lease ended, or the last process did
                lease = self._settings.lease_s
                sent = await self._store.recent_sends(cid, now - span - lease)
                history = [min(at + lease, now) for at in sent]
                window = SlidingWindow(limits[cid], span, history)
                credentials[cid] = Credential(window)
            credential = credentials[cid]
            # a pause stored before Retry-After was capped may reach years ahead
            until = min(pauses.get(tenant.name, 0.0), now + longest_pause)
            if until > now:  # nothing goes out for a while: say why
                log.warning("tenant.pause_restored", tenant=tenant.name, seconds=round(until - now))
            credential.paused_until = max(credential.paused_until, until)
        return credentials

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._supervise)
        self._tasks.append(task)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None and self._stopping.is_set():  # the sweeper ends its round and returns
            return
        log.critical("deliverer.task_died", task=task.get_name(), exc_info=exc)
        self.failure = exc
        self.failed.set()

    def notify(self, tenant: str) -> None:
        lane = self._lanes.get(tenant)
        if lane is not None:
            lane.notify()

    def finished(self, outcome: Outcome) -> None:
        """A delivery finished elsewhere (its wait cancelled): counted, logged and told to
        the outcome listener as the lanes' and the sweep's are."""
        self._deps.finished(outcome)

    async def stop(self, timeout_s: float) -> None:
        """Stop claiming, let in-flight requests finish (bounded), then close the session.
        The sweeper ends its round first: cancelled in its write, it expired deliveries that
        were never counted or published."""
        budget = Budget(timeout_s)
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        sweepers = [task for task in tasks if task.get_name() == SWEEPER]
        for task in tasks:  # the lanes claim no more while the sweeper ends its round
            if task not in sweepers:
                task.cancel()
        if sweepers:
            await asyncio.wait(sweepers, timeout=timeout_s)
        for task in sweepers:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        drains = [lane.drain(budget.left()) for lane in self._lanes.values()]
        drained = await asyncio.gather(*drains, return_exceptions=True)
        for tenant, result in zip(self._lanes, drained, strict=True):
            if isinstance(result, Exception):  # the other lanes drain, the session closes
                log.error("deliverer.drain_failed", tenant=tenant, exc_info=result)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            now = self._deps.clock()
            swept = await self._store.sweep(
                now, sends_forgotten_before(self._settings, now), SWEEP_LIMIT
            )
            counts = {
                "reclaimed": swept.reclaimed,
                "expired_deliveries": len(swept.expired_deliveries),
                "expired_waits": len(swept.expired_waits),
                "unmatched_events": len(swept.unmatched_events),
            }
            for kind in ("reclaimed", "expired_waits", "unmatched_events"):
                if counts[kind]:
                    self._deps.metrics.swept.labels(kind).inc(counts[kind])
            if any(counts.values()):  # a reclaimed lease: a request may have been cut short
                say = log.warning if swept.reclaimed else log.info
                say("store.swept", **counts)
            for outcome in swept.expired_deliveries:  # finished here, not by a lane
                self._deps.finished(outcome)
            _say_swept(swept)
            if swept.reclaimed:
                for lane in self._lanes.values():
                    lane.notify()
            await sleep_or_wake(
                self._stopping, 0 if swept.more else self._settings.sweep_interval_s
            )


def _say_swept(swept: Sweep) -> None:
    """One line for each wait and event the sweep ended, as for each delivery: "why was my
    job never resumed" is asked of one key, and a count does not name it."""
    for wait in swept.expired_waits:  # its job will not be resumed by this gateway
        log.warning("wait.expired", tenant=wait.tenant, key=wait.key)
    for event in swept.unmatched_events:  # no wait came for it within its TTL
        log.info(
            "event.unmatched",
            tenant=event.tenant,
            source=event.source,
            event_id=event.event_id,
            key=event.key,
        )


def _shared_limits(tenants: list[TenantSettings]) -> dict[str, int]:
    """Each credential's limit: Workato's is the credential's, so tenants that share one and
    set different limits get the lowest (the first one's was taken, by the order of the
    configuration)."""
    by_credential: dict[str, list[TenantSettings]] = {}
    for tenant in tenants:
        by_credential.setdefault(tenant.credential_id, []).append(tenant)
    limits: dict[str, int] = {}
    for cid, sharing in by_credential.items():
        limits[cid] = min(t.rate_limit_per_minute for t in sharing)
        if any(t.rate_limit_per_minute != limits[cid] for t in sharing):
            log.warning(
                "tenants.shared_credential_limits_differ",
                tenants=[t.name for t in sharing],
                limit=limits[cid],
            )
    return limits


def sends_forgotten_before(settings: DeliverySettings, now: float) -> float:
    """How old a recorded send may get before the sweep deletes it: older than any a restart
    reads back (a window and its margin, plus a lease, for a request that may have reached
    Workato as late as its lease ended), and never less than two windows. With two windows
    only, a lease over one window lost sends a restart needed, and the limit could be
    exceeded."""
    span = settings.rate_window_s + settings.rate_margin_s
    return now - span - max(span, settings.lease_s)

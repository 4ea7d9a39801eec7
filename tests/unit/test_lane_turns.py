"""The turn lanes of one credential take: what a lane waiting for it sees once it has it."""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace
from typing import Any

import structlog

from gateway.clock import FakeClock
from gateway.config.settings import DeliverySettings
from gateway.deliver.classify import Action, Verdict
from gateway.deliver.lane import Credential, Lane, LaneDeps
from gateway.deliver.limiter import SlidingWindow
from gateway.metrics import Metrics


class SlowClaims:
    """A store whose claims find nothing; tenant ``a``'s wait for ``commit`` first."""

    def __init__(self) -> None:
        self.commit = asyncio.Event()
        self.claiming = asyncio.Event()
        self.claims: list[str] = []

    async def claim(self, tenant: str, *_args: Any) -> list[Any]:
        self.claims.append(tenant)
        if tenant == "a":
            self.claiming.set()
            await self.commit.wait()
        return []


async def test_a_lane_that_waited_its_turn_does_not_claim_once_the_credential_is_paused() -> None:
    """Lane b passed the pause check, then waited while lane a's claim committed; a 429 paused
    the credential meanwhile, and b claimed (and would have sent) into the pause."""
    clock = FakeClock()
    store = SlowClaims()
    credential = Credential(SlidingWindow(60, 60.0))
    # the lanes only claim here: no cipher, blob store or claim checks are reached
    settings = DeliverySettings()
    deps: Any = LaneDeps(store, None, clock, Metrics(), settings, "o", random.Random(1), None, None)
    tenants: list[Any] = [SimpleNamespace(name=name, credential_id="c") for name in "ab"]
    lanes = [Lane(tenant, None, credential, deps) for tenant in tenants]  # type: ignore[arg-type]
    tasks = [asyncio.create_task(lane.run()) for lane in lanes]
    try:
        await store.claiming.wait()  # a holds the turn
        for _ in range(5):  # b passes the pause check and waits for the turn
            await asyncio.sleep(0)
        credential.paused_until = clock() + 30.0  # a 429 for another request of the credential
        store.commit.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.claims == ["a"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Pauses:
    """A store that takes pauses."""

    async def pause_tenant(self, pause: Any) -> None:
        return None


async def test_each_tenants_paused_gauge_falls_when_their_shared_pause_ends() -> None:
    """Tenant a paused the credential for 0.1 s, then b extended it to 0.3 s: a's timer found
    the pause still on and never looked again, and a's gauge stayed at 1."""
    credential = Credential(SlidingWindow(60, 60.0))
    metrics = Metrics()
    deps: Any = LaneDeps(
        Pauses(), None, time.time, metrics, DeliverySettings(), "o", random.Random(1), None, None
    )
    tenants: list[Any] = [SimpleNamespace(name=name, credential_id="c") for name in "ab"]
    a, b = (Lane(tenant, None, credential, deps) for tenant in tenants)  # type: ignore[arg-type]
    await a._pause(0.1, "rate_limited")
    await a._pause(0.1, "rate_limited")  # a second 429: a second timer, still one line
    await b._pause(0.3, "rate_limited")

    def gauge(tenant: str) -> float | None:
        return metrics.registry.get_sample_value("gateway_tenant_paused", {"tenant": tenant})

    assert (gauge("a"), gauge("b")) == (1, 1)
    with structlog.testing.capture_logs() as logs:
        await asyncio.sleep(0.5)
    assert (gauge("a"), gauge("b")) == (0, 0)
    assert sorted(e["tenant"] for e in logs if e["event"] == "tenant.unpaused") == ["a", "b"]


async def test_a_drained_lane_says_nothing_more_about_its_pause() -> None:
    """The timer that lowers the gauge outlived the stop: a pause ending after the drain was
    still logged (``tenant.unpaused``) by a lane that no longer ran."""
    credential = Credential(SlidingWindow(60, 60.0))
    metrics = Metrics()
    deps: Any = LaneDeps(
        Pauses(), None, time.time, metrics, DeliverySettings(), "o", random.Random(1), None, None
    )
    tenant: Any = SimpleNamespace(name="a", credential_id="c")
    lane = Lane(tenant, None, credential, deps)  # type: ignore[arg-type]
    await lane._pause(0.1, "rate_limited")
    await lane.drain(1.0)
    with structlog.testing.capture_logs() as logs:
        await asyncio.sleep(0.3)
    assert [e for e in logs if e["event"] == "tenant.unpaused"] == []


async def test_a_429_answered_during_the_drain_says_nothing_after_it() -> None:
    """The drain cancelled the timer, then waited for the requests in flight: one answered
    429 paused the credential and set a new timer, which logged ``tenant.unpaused`` for a lane
    that had stopped."""
    deps: Any = LaneDeps(
        Pauses(), None, time.time, Metrics(), DeliverySettings(), "o", random.Random(1), None, None
    )
    tenant: Any = SimpleNamespace(name="a", credential_id="c")
    lane = Lane(tenant, None, Credential(SlidingWindow(60, 60.0)), deps)  # type: ignore[arg-type]
    claim: Any = SimpleNamespace(deadline=time.time() + 3600, attempt=1)

    async def in_flight() -> None:  # what an attempt does when its request is answered 429
        await asyncio.sleep(0.05)
        await lane._delay_for(Verdict(Action.THROTTLED, "http_429", retry_after_s=0.1), claim)

    task = asyncio.create_task(in_flight())
    lane._in_flight[task] = claim
    with structlog.testing.capture_logs() as logs:
        await lane.drain(1.0)
        drained = len(logs)
        await asyncio.sleep(0.3)
    assert "tenant.unpaused" not in [e["event"] for e in logs[drained:]]

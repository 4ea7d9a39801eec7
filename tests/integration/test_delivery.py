"""Delivery against the Workato sandbox over real HTTP: exactly once, every fault kind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.blobs.base import BlobError
from gateway.deliver.lane import Lane
from gateway.deliver.workato import WorkatoClient
from gateway.errors import StoreError
from gateway.sandbox.faults import FaultPlan, ScriptedFault
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato_jobs import Job, Owner
from gateway.sandbox.workato_state import WorkatoSandbox
from gateway.store.records import Pause, Sweep
from gateway.store.sqlite import SQLiteStore
from tests.conftest import API_KEY, WORKATO_TOKEN, RunningGateway, SettingsFactory

Start = Any
TOKEN_KEY_2 = base64.b64encode(b"another-32-byte-token-key-000000").decode()


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s}s")


async def delivery_of(
    gw: RunningGateway, key: str, *final: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, wait = await gw.get(f"/v1/waits/{key}")
        delivery = wait.get("delivery")
        if delivery and delivery["state"] in final:
            return dict(delivery)
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery of {key} did not reach {final}: {wait}")


async def wait_for_job(gw: RunningGateway, workato: WorkatoSandbox, key: str, **reg: Any) -> Job:
    job = workato.create_job()
    status, _ = await gw.post("/v1/waits", {"key": key, "resume_token": job.resume.token, **reg})
    assert status == 201
    return job


async def with_the_one_slot_taken(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox, window_s: float
) -> RunningGateway:
    """A gateway allowed one resume per ``window_s``, this window's sent: what comes next
    queues until the window frees."""
    settings = make_settings(
        {"delivery": {"rate_window_s": window_s, "rate_margin_s": 0.0}}, rate_limit_per_minute=1
    )
    gw: RunningGateway = await start_gateway(settings)
    first = await wait_for_job(gw, workato, "first")
    await gw.post("/v1/events", {"id": "e0", "key": "first", "status": "succeeded"})
    await eventually(lambda: first.resume.count == 1)
    return gw


async def settled_with_a_job_reference(
    gw: RunningGateway, workato: WorkatoSandbox
) -> tuple[Job, dict[str, Any]]:
    """A job of recipe 42, its wait registered with the job's reference (so an ambiguous
    attempt is reconciled through the Jobs API), its event, and the delivery once final."""
    job = workato.create_job(recipe_id=42)
    ref = {"recipe_id": 42, "job_id": job.id}
    await gw.post("/v1/waits", {"key": "k", "resume_token": job.resume.token, "job": ref})
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    return job, await delivery_of(gw, "k", "delivered", "delivered_unconfirmed", "dead")


def faults(*scripted: ScriptedFault) -> FaultPlan:
    return FaultPlan(scripted=list(scripted))


async def test_event_resumes_the_job_once_with_the_exact_bytes(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "order-1", metadata={"order": 1})
    raw = b'{"id":"e1","key":"order-1","status":"succeeded","data":{"n":1.0000000000000001}}'
    async with gw.http.post(gw.url + "/v1/events", data=raw, headers=gw.auth) as resp:
        assert resp.status == 202
    delivery = await delivery_of(gw, "order-1", "delivered")
    assert (delivery["attempts"], delivery["last_status"]) == (1, 204)
    assert (job.resume.count, job.resume.rejected) == (1, 0)
    assert job.resume.body is not None
    assert b'"payload":{"n":1.0000000000000001}' in job.resume.body
    sent = json.loads(job.resume.body)
    assert sent["token"] == job.resume.token
    envelope = sent["data"]
    assert {k: envelope[k] for k in ("status", "key", "event_id", "source", "metadata")} == {
        "status": "succeeded",
        "key": "order-1",
        "event_id": "e1",
        "source": "api",
        "metadata": {"order": 1},
    }


async def test_event_before_its_wait_resumes_when_the_wait_registers(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    _status, body = await gw.post("/v1/events", {"id": "e", "key": "k", "status": "failed"})
    assert body["outcome"] == "buffered"
    job = await wait_for_job(gw, workato, "k")
    await delivery_of(gw, "k", "delivered")
    assert job.resume.data is not None
    assert job.resume.data["status"] == "failed"


async def test_raw_mode_passes_event_data_unwrapped(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings(raw_mode=True))
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": {"a": [1]}})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.data == {"a": [1]}
    status, problem = await gw.post(
        "/v1/events", {"id": "f", "key": "z", "status": "succeeded", "data": [1]}
    )
    assert (status, problem["field"]) == (422, "data")


async def test_5xx_is_retried_until_delivered(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="status", status=503, count=2)))
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered")
    assert delivery["attempts"] == 3
    assert (job.resume.count, job.resume.rejected) == (1, 0)


async def test_dropped_connection_is_retried(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="drop")))
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered", "delivered_unconfirmed")
    # dropped unprocessed: the retry resumed the job, nothing was refused
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)
    assert (job.resume.count, job.resume.rejected) == (1, 0)


async def test_processed_but_5xx_then_used_token_is_delivered_unconfirmed(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_error")))
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered_unconfirmed", "dead")
    assert delivery["state"] == "delivered_unconfirmed"
    assert delivery["reason"] == "http_409_after_ambiguous_attempt"
    assert (job.resume.count, job.resume.rejected) == (1, 1)


async def test_timeout_after_the_request_left_is_ambiguous(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="latency", seconds=1.0)))
    settings = make_settings({"delivery": {"request_timeout_s": 0.3, "lease_s": 2.0}})
    gw = await start_gateway(settings)
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    await eventually(lambda: job.resume.count == 1)
    delivery = await delivery_of(gw, "k", "delivered", "delivered_unconfirmed", "dead")
    # the first request resumed the job and timed out; the retry was refused as a second one
    assert (delivery["state"], delivery["attempts"]) == ("delivered_unconfirmed", 2)
    assert delivery["reason"] == "http_409_after_ambiguous_attempt"
    assert (job.resume.count, job.resume.rejected) == (1, 1)


async def test_processed_then_dropped_is_not_resumed_twice(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_drop")))
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered_unconfirmed", "dead")
    assert delivery["state"] == "delivered_unconfirmed"
    assert (job.resume.count, job.resume.rejected) == (1, 1)  # the retry met the used token


async def test_unknown_token_is_dead_with_the_reason(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    gw = await start_gateway(make_settings())
    await gw.post("/v1/waits", {"key": "k", "resume_token": "never-issued"})
    with structlog.testing.capture_logs() as logs:
        await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
        delivery = await delivery_of(gw, "k", "dead")
    assert (delivery["reason"], delivery["attempts"]) == ("http_404", 1)
    # a job that will never wake is a warning, not an info line among the deliveries
    [finished] = [e for e in logs if e["event"] == "delivery.finished"]
    assert (finished["state"], finished["log_level"]) == ("dead", "warning")


async def test_429_pauses_the_tenant_and_honours_retry_after(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.settings = workato.settings.updated({"rate_limit_per_minute": 1, "window_s": 1.0})
    gw = await start_gateway(make_settings())
    jobs = [await wait_for_job(gw, workato, f"k{i}") for i in range(2)]
    for i in range(2):
        await gw.post("/v1/events", {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"})
    for i in range(2):
        delivery = await delivery_of(gw, f"k{i}", "delivered")
        assert delivery["attempts"] == 1, "a 429 must not burn an attempt"
    throttled = [r for r in workato.requests.entries() if r.status == 429]
    assert len(throttled) == 1
    resumed_at = sorted(job.resume.at or 0 for job in jobs)
    assert resumed_at[1] - throttled[0].at >= 0.9, "the retry waited for Retry-After"


async def test_the_paused_gauge_falls_when_the_pause_ends_while_the_window_is_full(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """The 429 came with the gateway's own window full: the lane slept through the pause
    (1 s) waiting for a slot (4 s), and the gauge said paused for good after."""
    workato.settings = workato.settings.updated({"rate_limit_per_minute": 1, "window_s": 1.0})
    config = {"delivery": {"rate_window_s": 4.0, "rate_margin_s": 0.0}}
    gw = await start_gateway(make_settings(config, rate_limit_per_minute=2))
    for i in range(2):
        await wait_for_job(gw, workato, f"k{i}")
        await gw.post("/v1/events", {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"})
    for i in range(2):
        await delivery_of(gw, f"k{i}", "delivered")
    assert [r.status for r in workato.requests.entries() if r.status == 429] == [429]
    paused = gw.gateway.metrics.registry.get_sample_value(
        "gateway_tenant_paused", {"tenant": "acme"}
    )
    assert paused == 0


async def test_a_request_prepared_while_the_tenant_was_paused_waits_for_the_pause(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claimed together, one delivery met a 429 (Workato allows one a second here) while
    another's payload was being prepared: that one was sent all the same, into the pause."""
    claim = SQLiteStore.claim
    late = [0.3]

    async def first_late(self: SQLiteStore, *args: Any) -> Any:
        if late:  # so that one claim takes all three
            await asyncio.sleep(late.pop())
        return await claim(self, *args)

    slow_preparation(monkeypatch, 0.5, key="k2")
    monkeypatch.setattr(SQLiteStore, "claim", first_late)
    workato.settings = workato.settings.updated({"rate_limit_per_minute": 1, "window_s": 1.0})
    gw = await start_gateway(make_settings())
    jobs = [await wait_for_job(gw, workato, f"k{i}") for i in range(3)]
    for i in range(3):
        await gw.post("/v1/events", {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"})
    for i in range(3):
        await delivery_of(gw, f"k{i}", "delivered")
    sent = [r for r in workato.requests.entries() if r.path == "/api/job/resume"]
    refused = next(r.at for r in sent if r.status == 429)
    during = [r for r in sent if refused < r.at < refused + 0.9]
    assert during == [], "sent while the tenant was paused (Retry-After: 1)"
    assert all(job.resume.count == 1 for job in jobs)


async def test_401_pauses_the_tenant_without_burning_attempts(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.settings = workato.settings.updated({"api_tokens": ["someone-else"]})
    gw = await start_gateway(make_settings({"delivery": {"auth_pause_s": 0.5}}))
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    await eventually(lambda: any(r.status == 401 for r in workato.requests.entries()))
    pauses = await gw.gateway.store.active_pauses(time.time())
    assert [(p.tenant, p.reason) for p in pauses] == [("acme", "credential_rejected")]
    workato.settings = workato.settings.updated({"api_tokens": [WORKATO_TOKEN]})
    delivery = await delivery_of(gw, "k", "delivered")
    assert delivery["attempts"] == 1
    assert job.resume.attempts == 1


async def test_a_redirect_is_not_followed_and_pauses_the_tenant(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox, workato_url: str
) -> None:
    """aiohttp followed it: a 307 carried the token (and legacy auth headers) to another
    origin, a 302 turned the POST into a GET whose 404 made the delivery dead. A redirect
    says the base URL is wrong, as a 401 says the credential is: pause, alert, try again."""
    seen: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.method)
        raise web.HTTPTemporaryRedirect(workato_url + request.path)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", redirect)
    async with SandboxServer(app) as moved:
        tenant = {"base_url": moved.url, "api_token": WORKATO_TOKEN}
        settings = make_settings(
            {
                "tenants": [{"name": "acme", "api_keys": [API_KEY], **tenant}],
                "delivery": {"auth_pause_s": 60.0},
            }
        )
        gw = await start_gateway(settings)
        job = await wait_for_job(gw, workato, "k")
        with structlog.testing.capture_logs() as logged:
            await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
            await eventually(lambda: seen)
            deadline = time.monotonic() + 10
            while not (pauses := await gw.gateway.store.active_pauses(time.time())):
                assert time.monotonic() < deadline, "the tenant was not paused"
                await asyncio.sleep(0.02)
    assert [(p.tenant, p.reason) for p in pauses] == [("acme", "endpoint_redirected")]
    assert seen == ["POST"]
    assert workato.requests.entries() == []
    assert job.resume.count == 0
    alerts = [e for e in logged if e["event"] == "tenant.endpoint_redirected"]
    assert [(e["reason"], e["alert"]) for e in alerts] == [("http_307", True)]
    _, wait = await gw.get("/v1/waits/k")
    assert wait["delivery"]["state"] == "pending"


def slow_preparation(monkeypatch: pytest.MonkeyPatch, seconds: float, key: str = "") -> None:
    """Make a payload's preparation take ``seconds`` longer: the delivery of ``key``'s, or
    without one the first delivery's."""
    prepare = Lane._request
    untouched = {"first": True}

    async def slow(self: Lane, claim: Any, token: str) -> Any:
        due = claim.key == key if key else untouched.pop("first", False)
        if due:
            await asyncio.sleep(seconds)
        return await prepare(self, claim, token)

    monkeypatch.setattr(Lane, "_request", slow)


async def stop_while(
    start_gateway: Start,
    make_settings: SettingsFactory,
    workato: WorkatoSandbox,
    under_way: asyncio.Event,
) -> None:
    """Start a gateway, send the event for a wait ``k``, stop the deliverer once ``under_way``
    is set, and check that the delivery was handed back: pending, the attempt refunded, not
    ambiguous, no lease, nothing sent."""
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    await asyncio.wait_for(under_way.wait(), 10)
    await gw.gateway.deliverer.stop(0.1)
    with sqlite3.connect(gw.gateway.store._path) as conn:
        row = conn.execute("SELECT state, attempts, ambiguous, lease_owner FROM deliveries")
        assert row.fetchall() == [("pending", 0, 0, None)]
    assert workato.requests.entries() == []


async def test_a_delivery_stopped_before_its_request_left_is_handed_back_at_once(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled by the stop while its payload was being prepared, it kept its lease: the
    restart waited the lease out, and the sweep took the row for an ambiguous attempt, so
    an unknown token became delivered_unconfirmed instead of dead."""
    preparing = asyncio.Event()

    async def slow_request(self: Lane, claim: Any, token: str) -> Any:
        preparing.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(Lane, "_request", slow_request)
    await stop_while(start_gateway, make_settings, workato, preparing)


async def test_a_request_cut_short_by_the_stop_is_said_at_once(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """The stop gave up on a request under way without a word: the delivery read as sending
    until its lease ended, then as an ambiguous attempt, with no clue at stop time."""
    workato.faults.set_plan(faults(ScriptedFault(kind="latency", seconds=5.0)))
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    await eventually(lambda: ambiguous_or_sent(gw))
    with structlog.testing.capture_logs() as logged:
        await gw.gateway.deliverer.stop(0.2)
    (cut,) = [e for e in logged if e["event"] == "delivery.cut_short_by_stop"]
    assert (cut["log_level"], cut["key"]) == ("warning", "k")


def ambiguous_or_sent(gw: RunningGateway) -> bool:
    """Whether the one delivery's request has left (the lane holds it as sending)."""
    lanes = gw.gateway.deliverer._lanes.values()
    return any(lane._sending for lane in lanes)


async def test_a_lane_stopped_while_its_claim_commits_hands_the_claimed_rows_back(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop cancelled the lane after the writer had taken its claim: the claim committed,
    no one got its rows, and they kept their lease until the sweep took them for ambiguous
    attempts (a later unknown-token 404 read as delivered_unconfirmed)."""
    claim = SQLiteStore.claim
    committed = asyncio.Event()

    async def answered_late(self: SQLiteStore, *args: Any) -> Any:
        claims = await claim(self, *args)
        if claims:
            committed.set()
            await asyncio.sleep(0.3)  # the stop comes in here
        return claims

    monkeypatch.setattr(SQLiteStore, "claim", answered_late)
    await stop_while(start_gateway, make_settings, workato, committed)


async def test_a_request_ends_within_what_its_preparation_left_of_the_lease(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request's timeout (2 s) ran from when it started, though the claim's commit and the
    payload's preparation (here 1.5 s) had used the lease (3 s) already: the sweep handed the
    row to a second attempt while the first was still in flight, and the first's answer, a
    204 it may be, was fenced off."""
    slow_preparation(monkeypatch, 1.5)
    workato.faults.set_plan(faults(ScriptedFault(kind="latency", seconds=3.0)))
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k")
    with structlog.testing.capture_logs() as logged:
        await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
        first = await eventually(
            lambda: [e for e in logged if e["event"] == "delivery.attempted"], timeout_s=8
        )
    assert (first[0]["attempt"], first[0]["reason"], first[0]["lease_kept"]) == (
        1,
        "timeout",
        True,
    )


async def test_a_rate_slot_is_held_from_when_its_request_ended_not_from_the_claim(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One request a second. The first one's payload took 0.6 s to prepare: its slot, taken
    at the claim, freed 0.4 s after the request reached Workato, and the second one followed
    it that soon."""
    slow_preparation(monkeypatch, 0.6)
    one_a_second = {"rate_window_s": 1.0, "rate_margin_s": 0.0}
    gw = await start_gateway(make_settings({"delivery": one_a_second}, rate_limit_per_minute=1))
    jobs = [await wait_for_job(gw, workato, f"k{n}") for n in range(2)]
    for n in range(2):
        await gw.post("/v1/events", {"id": f"e{n}", "key": f"k{n}", "status": "succeeded"})
    await eventually(lambda: all(job.resume.count == 1 for job in jobs))
    arrivals = [r.at for r in workato.requests.entries() if r.path == "/api/job/resume"]
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0


async def test_a_restart_holds_the_slots_of_requests_that_may_have_been_in_flight(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """The store keeps when each slot was taken; its request may have reached Workato until
    its lease ended (3 s here), or until the process did: the slot is held from then."""
    settings = make_settings(rate_limit_per_minute=2)  # lease_s 3
    (tenant,) = settings.tenants
    now = time.time()
    store = SQLiteStore(settings.store.sqlite_path)
    await store.open()
    await store.record_send(tenant.credential_id, now - 30.0)  # long done
    await store.record_send(tenant.credential_id, now - 1.0)  # within the lease
    await store.close()
    gw = await start_gateway(settings)
    window = gw.gateway.deliverer._lanes["acme"]._window
    assert window.available(time.time()) == 0
    assert window.available(now - 30.0 + window.window_s + 0.1) == 0  # held to its lease's end
    assert window.available(now - 27.0 + window.window_s + 0.1) == 1  # then free
    assert window.available(now - 1.0 + window.window_s + 0.1) == 1  # the other: from the restart
    assert window.available(time.time() + window.window_s + 0.1) == 2


async def test_a_pause_stored_before_retry_after_was_capped_is_capped_on_restore(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    settings = make_settings()
    store = SQLiteStore(settings.store.sqlite_path)
    await store.open()
    await store.pause_tenant(Pause("acme", 253402300799.0, "rate_limited"))  # the year 9999
    await store.close()
    with structlog.testing.capture_logs() as logs:  # a restart that sends nothing says why
        gw = await start_gateway(settings)
    paused_until = gw.gateway.deliverer._lanes["acme"]._credential.paused_until
    assert time.time() < paused_until <= time.time() + 3600.0
    [restored] = [e for e in logs if e["event"] == "tenant.pause_restored"]
    assert (restored["tenant"], restored["log_level"]) == ("acme", "warning")


async def test_tenants_sharing_a_credential_get_the_lowest_of_their_limits(
    make_settings: SettingsFactory, start_gateway: Start, workato_url: str
) -> None:
    """The first tenant's limit was the credential's, whatever the others said; and the same
    Workato host in capitals was another credential, with a window of its own."""
    shouted = workato_url.replace("127.0.0.1", "LOCALHOST").replace("http://", "HTTP://")
    quiet = workato_url.replace("127.0.0.1", "localhost")
    tenants = [
        {"name": "acme", "api_keys": [API_KEY], "base_url": quiet, "rate_limit_per_minute": 60},
        {
            "name": "beta",
            "api_keys": ["beta-api-key-0123456789"],
            "base_url": shouted,
            "rate_limit_per_minute": 10,
        },
    ]
    for tenant in tenants:
        tenant["api_token"] = WORKATO_TOKEN
    gw = await start_gateway(make_settings({"tenants": tenants}))
    lanes = gw.gateway.deliverer._lanes
    assert lanes["acme"]._window is lanes["beta"]._window
    assert lanes["acme"]._window.limit == 10


async def test_a_rejected_credential_pauses_every_tenant_that_sends_with_it(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox, workato_url: str
) -> None:
    """The pause was per tenant: the credential's other tenants kept sending into the 401."""
    workato.settings = workato.settings.updated({"api_tokens": ["someone-else"]})
    tenant = {"base_url": workato_url, "api_token": WORKATO_TOKEN}
    tenants = [
        {"name": "acme", "api_keys": [API_KEY], **tenant},
        {"name": "beta", "api_keys": ["beta-api-key-0123456789"], **tenant},
    ]
    gw = await start_gateway(make_settings({"tenants": tenants, "delivery": {"auth_pause_s": 1.0}}))
    beta = {"Authorization": "Bearer beta-api-key-0123456789"}
    jobs = [workato.create_job() for _ in range(2)]
    for (i, job), headers in zip(enumerate(jobs), (gw.auth, beta), strict=True):
        registration = {"key": f"k{i}", "resume_token": job.resume.token}
        async with gw.http.post(gw.url + "/v1/waits", json=registration, headers=headers) as r:
            assert r.status == 201

    async def send(i: int, headers: dict[str, str]) -> None:
        event = {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"}
        async with gw.http.post(gw.url + "/v1/events", json=event, headers=headers) as r:
            assert r.status == 202

    def rejected() -> int:
        return sum(r.status == 401 for r in workato.requests.entries())

    await send(0, gw.auth)
    await eventually(rejected)
    await send(1, beta)
    await asyncio.sleep(0.4)  # beta's lane, not paused, would have sent by now
    assert rejected() == 1
    workato.settings = workato.settings.updated({"api_tokens": [WORKATO_TOKEN]})
    await eventually(lambda: all(job.resume.count == 1 for job in jobs))
    assert rejected() == 1


async def test_delivery_that_cannot_succeed_before_the_wait_expires_ends_expired(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="status", status=503, count=1000)))
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k", timeout_s=1.0)
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "expired")
    assert delivery["attempts"] >= 2


async def test_a_delivery_whose_wait_expires_in_the_queue_is_counted_as_finished(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """The sweep ends it, not a lane: it ended uncounted and unpublished."""
    gw = await with_the_one_slot_taken(make_settings, start_gateway, workato, window_s=5.0)
    await wait_for_job(gw, workato, "queued", timeout_s=2.0)  # the window frees after 5 s
    _, answer = await gw.post("/v1/events", {"id": "e1", "key": "queued", "status": "succeeded"})
    assert answer["outcome"] == "matched"
    delivery = await delivery_of(gw, "queued", "expired")
    assert (delivery["reason"], delivery["attempts"]) == ("wait_expired", 0)
    async with gw.http.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_deliveries_finished_total{state="expired",tenant="acme"} 1.0' in text


async def test_a_sweep_that_reaches_its_limit_sweeps_again_at_once(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sweeps end at most ``SWEEP_LIMIT`` rows of a kind each; a full one must not leave the
    rest for the next interval, or a backlog would take hours to expire."""
    monkeypatch.setattr("gateway.deliver.deliverer.SWEEP_LIMIT", 1)
    sweeps: list[tuple[float, bool]] = []  # (started, more)
    sweep = SQLiteStore.sweep

    async def recorded(store: SQLiteStore, now: float, before: float, limit: int) -> Sweep:
        started = time.monotonic()
        swept = await sweep(store, now, before, limit)
        sweeps.append((started, swept.more))
        return swept

    monkeypatch.setattr(SQLiteStore, "sweep", recorded)
    delivery = {"rate_window_s": 60.0, "rate_margin_s": 0.0, "sweep_interval_s": 4.0}
    gw = await start_gateway(make_settings({"delivery": delivery}, rate_limit_per_minute=1))
    first = await wait_for_job(gw, workato, "first")
    await gw.post("/v1/events", {"id": "e0", "key": "first", "status": "succeeded"})
    await eventually(lambda: first.resume.count == 1)  # the window's one slot is taken
    for n in range(3):  # queued behind the window until their waits expire
        await wait_for_job(gw, workato, f"queued-{n}", timeout_s=0.5)
        await gw.post(
            "/v1/events", {"id": f"e{n + 1}", "key": f"queued-{n}", "status": "succeeded"}
        )
    for n in range(3):
        await delivery_of(gw, f"queued-{n}", "expired")
    await eventually(lambda: not sweeps[-1][1])  # the sweep after the last full one
    followed = [
        (later - started) for (started, more), (later, _) in itertools.pairwise(sweeps) if more
    ]
    assert followed, "no sweep reached its limit"
    assert max(followed) < 1.0, f"a full sweep waited for the next interval: {followed}"


async def test_wait_without_event_expires_and_later_event_is_late(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k", timeout_s=0.2)

    async def state() -> str:
        return str((await gw.get("/v1/waits/k"))[1]["state"])

    deadline = time.monotonic() + 5
    while await state() != "expired":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    status, body = await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    assert (status, body["outcome"]) == (202, "late")


async def test_rate_limit_is_never_exceeded_and_backlog_drains_at_full_rate(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    limit, window = 5, 1.0
    workato.settings = workato.settings.updated(
        {"rate_limit_per_minute": limit, "window_s": window}
    )
    settings = make_settings(
        {"delivery": {"rate_window_s": window, "rate_margin_s": 0.05}}, rate_limit_per_minute=limit
    )
    gw = await start_gateway(settings)
    jobs = [await wait_for_job(gw, workato, f"k{i}") for i in range(20)]
    started = time.monotonic()
    await asyncio.gather(
        *(
            gw.post("/v1/events", {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"})
            for i in range(20)
        )
    )
    await eventually(lambda: all(job.resume.count == 1 for job in jobs), timeout_s=15)
    elapsed = time.monotonic() - started
    sent = sorted(r.at for r in workato.requests.entries() if r.path == "/api/job/resume")
    assert len(sent) == 20, "no request was refused or repeated"
    assert all(sent[i + limit] - sent[i] >= window for i in range(len(sent) - limit))
    assert elapsed < 3 * (window + 0.05) + 1.0, f"backlog drained too slowly: {elapsed:.2f}s"


async def test_tenants_sharing_a_credential_share_its_limit_without_a_lane_dying(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox, workato_url: str
) -> None:
    """Two lanes on one credential each read the free slots before their claim's commit: the
    second must not claim the slots the first takes meanwhile (its lane died on the limiter's
    check, and the gateway with it)."""
    limit, window = 5, 1.0
    workato.settings = workato.settings.updated(
        {"rate_limit_per_minute": limit, "window_s": window}
    )
    tenant = {"base_url": workato_url, "api_token": WORKATO_TOKEN, "rate_limit_per_minute": limit}
    tenants = [
        {"name": "acme", "api_keys": [API_KEY], **tenant},
        {"name": "beta", "api_keys": ["beta-api-key-0123456789"], **tenant},
    ]
    settings = make_settings(
        {"tenants": tenants, "delivery": {"rate_window_s": window, "rate_margin_s": 0.05}}
    )
    gw = await start_gateway(settings)
    beta = {"Authorization": "Bearer beta-api-key-0123456789"}

    async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        async with gw.http.post(gw.url + path, json=body, headers=headers) as resp:
            assert resp.status in (201, 202), await resp.text()

    jobs = []
    for i in range(24):
        job = workato.create_job()
        headers = gw.auth if i % 2 else beta
        await post("/v1/waits", {"key": f"k{i}", "resume_token": job.resume.token}, headers)
        jobs.append((job, headers))
    await asyncio.gather(
        *(
            post("/v1/events", {"id": f"e{i}", "key": f"k{i}", "status": "succeeded"}, headers)
            for i, (_, headers) in enumerate(jobs)
        )
    )
    await eventually(lambda: all(job.resume.count == 1 for job, _ in jobs), timeout_s=15)
    assert not gw.gateway.deliverer.failed.is_set(), gw.gateway.deliverer.failure
    sent = sorted(r.at for r in workato.requests.entries() if r.path == "/api/job/resume")
    assert len(sent) == 24, "no request was refused or repeated"
    assert all(sent[i + limit] - sent[i] >= window for i in range(len(sent) - limit))


async def test_backlog_goes_earliest_deadline_first(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await with_the_one_slot_taken(make_settings, start_gateway, workato, window_s=1.0)
    jobs = {t: await wait_for_job(gw, workato, f"t{t}", timeout_s=t) for t in (300, 100, 200)}
    for t in (300, 100, 200):  # posted while the window is full: they queue
        await gw.post("/v1/events", {"id": f"e{t}", "key": f"t{t}", "status": "succeeded"})
    await eventually(lambda: all(j.resume.count == 1 for j in jobs.values()), timeout_s=10)
    order = sorted(jobs, key=lambda t: jobs[t].resume.at or 0)
    assert order == [100, 200, 300]


async def test_a_job_that_failed_while_it_waited_proves_no_resume(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """A failed job was taken for proof that the ambiguous attempt landed: delivered, though
    the job had failed while it waited and no resume ever reached it."""
    workato.faults.set_plan(faults(ScriptedFault(kind="drop")))  # nothing processed
    gw = await start_gateway(make_settings())
    job = workato.create_job(recipe_id=42)
    workato.settle_job(job, "failed", "stopped while it waited")
    ref = {"recipe_id": 42, "job_id": job.id}
    await gw.post("/v1/waits", {"key": "k", "resume_token": job.resume.token, "job": ref})
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered", "delivered_unconfirmed", "dead")
    assert delivery["state"] == "delivered_unconfirmed"
    assert job.resume.count == 0
    assert [r.method for r in workato.requests.entries() if r.method == "GET"] == ["GET"]


async def test_a_job_reference_stored_before_its_pattern_leaves_the_delivery_unconfirmed(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """A managed_user_id that 0.2.11 refuses, stored before: re-read at reconcile, its
    ValidationError ended the task, and the resume went out again once a lease."""
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_error")))
    settings = make_settings()
    gw = await start_gateway(settings)
    job = workato.create_job(recipe_id=42)
    ref = {"recipe_id": 42, "job_id": job.id}
    await gw.post("/v1/waits", {"key": "k", "resume_token": job.resume.token, "job": ref})
    with sqlite3.connect(settings.store.sqlite_path) as conn:  # as an earlier version took it
        conn.execute("UPDATE waits SET job = ?", (json.dumps({**ref, "managed_user_id": ""}),))
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered", "delivered_unconfirmed", "dead")
    assert delivery["state"] == "delivered_unconfirmed"
    assert (job.resume.count, job.resume.rejected) == (1, 1)


async def test_ambiguous_attempt_is_reconciled_through_the_jobs_api(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_error")))
    gw = await start_gateway(make_settings())
    job, delivery = await settled_with_a_job_reference(gw, workato)
    assert (delivery["state"], delivery["reason"]) == ("delivered", "reconciled_job_succeeded")
    lookups = [r for r in workato.requests.entries() if r.method == "GET"]
    assert [r.path for r in lookups] == [f"/api/recipes/42/jobs/{job.id}"]


async def test_a_reconcile_lookup_ends_inside_the_lease(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """The second attempt's answer (the token is used) takes 1.5 s of the 3 s lease, and the
    job lookup hangs: given its whole 2.5 s timeout, it ran past the lease, the sweep handed
    the row to a third attempt, and a third resume request went out."""
    workato.faults.set_plan(
        faults(
            ScriptedFault(kind="processed_then_error", path_prefix="/api/job/resume"),
            ScriptedFault(kind="latency", seconds=1.5, path_prefix="/api/job/resume"),
            ScriptedFault(kind="latency", seconds=10.0, path_prefix="/api/recipes"),
        )
    )
    gw = await start_gateway(make_settings({"delivery": {"request_timeout_s": 2.5}}))
    _, delivery = await settled_with_a_job_reference(gw, workato)
    await asyncio.sleep(1.0)  # a reclaimed row would be claimed and sent again by now
    resumes = [r for r in workato.requests.entries() if r.path == "/api/job/resume"]
    assert (delivery["state"], delivery["attempts"], len(resumes)) == (
        "delivered_unconfirmed",
        2,
        2,
    )


async def test_a_job_still_running_after_its_resume_proves_nothing(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """Real jobs run on after their resume: the lookup sees it pending, and the delivery is
    delivered_unconfirmed, not delivered (the sandbox's jobs used to succeed at once)."""
    workato.settings = workato.settings.updated({"resume_running_s": 60.0})
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_error")))
    gw = await start_gateway(make_settings())
    _, delivery = await settled_with_a_job_reference(gw, workato)
    assert (delivery["state"], delivery["reason"]) == (
        "delivered_unconfirmed",
        "http_409_after_ambiguous_attempt",
    )
    lookups = [r for r in workato.requests.entries() if r.method == "GET"]
    assert [r.status for r in lookups] == [200]


async def test_a_token_sealed_with_a_key_not_configured_is_dead_and_said_loudly(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another process on the same store with other keys, or a key rotated out too soon: the
    job can never be resumed, and it was logged at info only."""
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    await gw.gateway.stop()
    other_key = {"security": {"token_keys": [{"id": "k9", "key": TOKEN_KEY_2}]}}
    gw = await start_gateway(make_settings(other_key))
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "dead")
    assert delivery["reason"] == "token_key_missing"
    assert job.resume.count == 0
    logged = capsys.readouterr()
    assert "delivery.token_key_missing" in logged.out + logged.err


async def test_reconcile_uses_the_managed_users_form_for_embedded_jobs(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.faults.set_plan(faults(ScriptedFault(kind="processed_then_error")))
    gw = await start_gateway(make_settings())
    job = workato.create_job(recipe_id=7, owner=Owner(managed_user_id=901, external_id="cust/9"))
    ref = {"recipe_id": 7, "job_id": job.id, "managed_user_id": "Ecust/9"}
    await gw.post("/v1/waits", {"key": "k", "resume_token": job.resume.token, "job": ref})
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    delivery = await delivery_of(gw, "k", "delivered", "delivered_unconfirmed", "dead")
    assert (delivery["state"], delivery["reason"]) == ("delivered", "reconciled_job_succeeded")
    (lookup,) = [r for r in workato.requests.entries() if r.method == "GET"]
    assert lookup.status == 200


async def test_a_dead_lane_stops_the_gateway_instead_of_limping(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    gw = await start_gateway(make_settings())
    await gw.gateway.poller.stop(1.0)  # the lanes alone find the store closed, not the poller
    await gw.gateway.store.close()  # every claim now fails
    with pytest.raises(StoreError):
        await asyncio.wait_for(gw.gateway.run_until(asyncio.Event()), timeout=5)


async def test_a_resume_request_ends_when_its_lease_says_not_at_the_next_whole_second(
    make_settings: SettingsFactory,
) -> None:
    """aiohttp rounds a timeout of 5 s or more up to the next whole second of the loop's
    clock: a request given 5.x s of its lease ran up to a second longer, into the second the
    lease keeps for the settle. Here the rounding would add 0.99 s."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # takes the request, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tenant = make_settings(base_url=f"http://127.0.0.1:{port}").tenants[0]
    try:
        async with aiohttp.ClientSession() as session:
            client = WorkatoClient(session, tenant, timeout_s=20.0)
            now = asyncio.get_running_loop().time()
            within = 6.01 - (now % 1.0)  # its deadline just past a whole second
            attempt = await client.resume(b"{}", 2, within_s=within)
            late = asyncio.get_running_loop().time() - now - within
    finally:
        server.close()
        await server.wait_closed()
    assert attempt.error == "timeout"
    assert late < 0.3


async def test_a_part_that_fails_to_stop_does_not_keep_the_others_running(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop raised out of its first failing part: the deliveries, blob store and store
    after it were never stopped, and the store's last commits never synced."""
    gw = await start_gateway(make_settings())
    gateway = gw.gateway

    async def failing(timeout_s: float) -> None:
        raise RuntimeError("a bug in the poller's stop")

    monkeypatch.setattr(gateway.poller, "stop", failing)
    with structlog.testing.capture_logs() as logs:
        await gateway.stop()
    assert any(e["event"] == "gateway.stop_failed" and e["part"] == "poller" for e in logs)
    assert gateway.deliverer._session is None  # stopped after the poller
    with pytest.raises(StoreError, match="not open"):
        await gateway.store.ping()


async def test_a_lane_that_fails_to_drain_still_lets_the_deliverer_close(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await start_gateway(make_settings())

    async def failing(self: Lane, timeout_s: float) -> None:
        raise RuntimeError("a bug in a lane's drain")

    monkeypatch.setattr(Lane, "drain", failing)
    with structlog.testing.capture_logs() as logs:
        await gw.gateway.deliverer.stop(1.0)
    assert [e["tenant"] for e in logs if e["event"] == "deliverer.drain_failed"] == ["acme"]
    assert gw.gateway.deliverer._session is None


async def test_a_sweep_under_way_at_the_stop_still_reports_what_it_expired(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop cancelled the sweeper in its write: the deliveries it expired were committed
    but never counted or published (one outcome per finished delivery, DESIGN 5.2)."""
    gw = await start_gateway(make_settings())
    deliverer, store = gw.gateway.deliverer, gw.gateway.store
    deliverer._lanes["acme"]._credential.paused_until = time.time() + 3600  # nothing is sent
    await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "timeout_s": 1800})
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    sweeping = asyncio.Event()
    real_sweep = store.sweep

    async def slow_sweep(now: float, before: float, limit: int) -> Sweep:
        sweeping.set()
        await asyncio.sleep(0.3)
        return await real_sweep(now + 3600, before, limit)  # an hour on: the wait has expired

    monkeypatch.setattr(store, "sweep", slow_sweep)
    await asyncio.wait_for(sweeping.wait(), 5)  # the next round (sweep_interval_s 0.2)
    with structlog.testing.capture_logs() as logs:
        await deliverer.stop(5.0)
    assert not deliverer.failed.is_set()  # a sweeper that returns at the stop has not died
    assert [e for e in logs if e["event"] == "deliverer.task_died"] == []
    finished = gw.gateway.metrics.registry.get_sample_value(
        "gateway_deliveries_finished_total", {"tenant": "acme", "state": "expired"}
    )
    assert finished == 1


async def test_a_settle_cut_short_by_the_stop_still_reports_the_finished_delivery(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drain's timeout cancelled a task waiting for its 204's settle: the settle committed
    all the same (or not at all, the store closed under it), and the delivery was never
    counted or published."""
    gw = await start_gateway(make_settings({"server": {"shutdown_timeout_s": 0.1}}))
    job = await wait_for_job(gw, workato, "k")
    store = gw.gateway.store
    real_settle = store.settle

    async def slow_settle(*args: Any) -> bool:
        await asyncio.sleep(0.5)
        return await real_settle(*args)

    monkeypatch.setattr(store, "settle", slow_settle)
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded"})
    await eventually(lambda: job.resume.count == 1)  # its settle is under way
    with structlog.testing.capture_logs() as logs:
        await gw.gateway.stop()  # the drain's time (0.1 s) is out before the settle is done
    finished = gw.gateway.metrics.registry.get_sample_value(
        "gateway_deliveries_finished_total", {"tenant": "acme", "state": "delivered"}
    )
    assert finished == 1
    assert [e["reason"] for e in logs if e["event"] == "delivery.attempted"] == ["http_204"]
    with sqlite3.connect(gw.gateway.settings.store.url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT state FROM deliveries").fetchall() == [("delivered",)]


async def test_a_stale_attempt_ending_does_not_unmark_the_next_attempt_of_its_row(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attempt A's claim check took longer than its lease; the sweep handed the row to attempt
    B, whose request left. A then ended, and, by the delivery id they share, erased B's mark
    that its request had left: the stop handed B back as never sent (its attempt refunded,
    the row due again at once) while its request was still with Workato."""
    workato.faults.set_plan(faults(ScriptedFault(kind="latency", seconds=5.0)))
    gw = await start_gateway(make_settings(max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k")
    claim_checks = gw.gateway.deliverer._deps.claim_checks
    real_reference = claim_checks.reference
    calls = 0

    async def slow_once(claim: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(3.5)  # past the lease (3 s)
        return await real_reference(claim)

    monkeypatch.setattr(claim_checks, "reference", slow_once)
    event = {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900}
    await gw.post("/v1/events", event)
    await eventually(lambda: job.resume.count == 1, timeout_s=10)  # B's request arrived
    lane = gw.gateway.deliverer._lanes["acme"]
    await eventually(lambda: calls == 2 and len(lane._in_flight) == 1)  # A has ended, B not
    # (B's answer is held back for 5 s)
    with structlog.testing.capture_logs() as logs:
        await gw.gateway.deliverer.stop(0.1)
    said = [e["event"] for e in logs]
    assert "delivery.cut_short_by_stop" in said
    assert not [e for e in logs if e.get("reason") == "stopped_before_sending"]


async def test_a_slot_given_back_is_used_at_once_not_a_window_later(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One resume a minute: while the only slot was reserved by a delivery whose claim check
    then failed, the lane slept until the window's next free slot, a minute away; the slot
    given back stood unused that long."""
    gw = await start_gateway(make_settings(max_request_bytes=800, rate_limit_per_minute=1))
    job = await wait_for_job(gw, workato, "k")
    claim_checks = gw.gateway.deliverer._deps.claim_checks
    real_reference = claim_checks.reference
    failed = False

    async def failing_once(claim: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            await asyncio.sleep(0.3)  # the lane meanwhile finds the window full
            raise BlobError("the blob store is briefly unavailable")
        return await real_reference(claim)

    monkeypatch.setattr(claim_checks, "reference", failing_once)
    started = time.monotonic()
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900})
    await delivery_of(gw, "k", "delivered")
    assert failed
    assert job.resume.attempts == 1
    assert time.monotonic() - started < 5


async def test_the_parts_of_the_stop_share_one_shutdown_timeout(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part had the whole shutdown_timeout_s of its own, one after the other: with
    Kafka, a sweeper, lanes and the outcomes each taking theirs, a stop could outlast a
    container's grace period. The intakes and the deliveries now stop side by side, within
    the one timeout."""
    gw = await start_gateway(make_settings({"server": {"shutdown_timeout_s": 2.0}}))
    given: dict[str, float] = {}

    def taking_all_it_is_given(name: str, stop: Any) -> Any:
        async def stopped(timeout_s: float) -> None:
            given[name] = timeout_s
            started = time.monotonic()
            await stop(timeout_s)
            await asyncio.sleep(max(0.0, timeout_s - (time.monotonic() - started)))

        return stopped

    for name in ("poller", "deliverer"):
        part = getattr(gw.gateway, name)
        monkeypatch.setattr(part, "stop", taking_all_it_is_given(name, part.stop))
    started = time.monotonic()
    await gw.gateway.stop()
    assert time.monotonic() - started < 3.0  # one after the other: 4 s
    assert given["poller"] > 1.5
    assert given["deliverer"] > 1.5


async def test_what_the_sweep_ends_is_counted(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """A wait that expired (its job will not be resumed) and a completion dropped unmatched
    were an info line of counts, and in no metric."""
    gw = await start_gateway(make_settings({"ingest": {"event_buffer_ttl_s": 0.3}}))
    await gw.post("/v1/waits", {"key": "w", "resume_token": "t", "timeout_s": 0.3})
    await gw.post("/v1/events", {"id": "e", "key": "nobody-waits", "status": "succeeded"})
    swept = gw.gateway.metrics.registry.get_sample_value

    def counted() -> bool:
        kinds = ("expired_waits", "unmatched_events")
        return all(swept("gateway_swept_total", {"kind": kind}) == 1 for kind in kinds)

    with structlog.testing.capture_logs() as logs:
        await eventually(counted, timeout_s=5)
    said = [
        (e["event"], e["key"]) for e in logs if e["event"] in ("wait.expired", "event.unmatched")
    ]
    assert said == [("wait.expired", "w"), ("event.unmatched", "nobody-waits")]  # which ones


async def test_a_job_lookup_refused_is_said_not_taken_for_a_running_job() -> None:
    """Seed 000: the API client's role needs Jobs read access. A 403 on the reconcile's
    lookup read as a job still running, with no line and no alert: the delivery stayed
    delivered_unconfirmed though the job had succeeded."""
    from gateway.config.settings import TenantSettings
    from gateway.messages import JobRef

    async def forbidden(_request: web.Request) -> web.Response:
        return web.json_response({"message": "Forbidden"}, status=403)

    app = web.Application()
    app.router.add_get("/api/recipes/{recipe}/jobs/{job}", forbidden)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        tenant = TenantSettings(name="acme", base_url=server.url, api_token="t")  # type: ignore[arg-type]
        client = WorkatoClient(session, tenant, 5.0)
        with structlog.testing.capture_logs() as logs:
            assert await client.job_status(JobRef(recipe_id=42, job_id="j-1")) is None
    (line,) = [e for e in logs if e["event"] == "reconcile.lookup_refused"]
    assert (line["tenant"], line["status"], line["alert"], line["log_level"]) == (
        "acme",
        403,
        True,
        "warning",
    )


async def test_a_payload_missing_from_the_blob_store_is_retried_not_ended(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    """A restart on a mistyped bucket or root found no payload, and ended its delivery dead
    (payload_missing) for good: put right minutes later, the bytes were there and the job
    never woke."""
    gw = await start_gateway(make_settings({"ingest": {"spool_threshold_bytes": 1024}}))
    data = b'{"rows": "' + b"x" * 4000 + b'"}'
    body = b'{"id": "e1", "key": "k", "status": "succeeded", "data": ' + data + b"}"
    async with gw.http.post(gw.url + "/v1/events", data=body, headers=gw.auth) as resp:
        assert resp.status == 202  # buffered, its data in the blob store
    sha256 = hashlib.sha256(data).hexdigest()
    assert await gw.gateway.blobs.stat(sha256) is not None
    await gw.gateway.blobs.delete(sha256)  # as a store that is not the one written to
    with structlog.testing.capture_logs() as logs:
        job = await wait_for_job(gw, workato, "k")

        await eventually(lambda: any(e["event"] == "payload.missing" for e in logs))
    _, wait = await gw.get("/v1/waits/k")
    assert (wait["delivery"]["state"], wait["delivery"]["reason"]) == ("pending", "payload_missing")
    await gw.gateway.blobs.put_bytes(data, "application/json")  # the right store again
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    assert b'"payload":' + data in job.resume.body

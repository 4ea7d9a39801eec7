"""Watches over real HTTP: the gateway polls the Alteryx and Pixxel sandboxes and resumes the
Workato sandbox job once the polled job is terminal."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.config.connections import AlteryxConnection, PixxelConnection
from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.poll import poller as poller_module
from gateway.poll.clients import AlteryxClient, PixxelClient, PollError
from gateway.sandbox.alteryx import AlteryxSandbox, AlteryxSandboxSettings
from gateway.sandbox.alteryx import JobScript as AlteryxScript
from gateway.sandbox.alteryx import create_app as alteryx_app
from gateway.sandbox.faults import FaultPlan, ScriptedFault
from gateway.sandbox.pixxel import JobScript as PixxelScript
from gateway.sandbox.pixxel import PixxelSandbox, PixxelSandboxSettings
from gateway.sandbox.pixxel import create_app as pixxel_app
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato_state import WorkatoSandbox
from tests.conftest import RunningGateway, SettingsFactory

Start = Any
CLIENT_ID, CLIENT_SECRET, PIXXEL_KEY = "gw-client", "alteryx-secret-9f8e", "pixxel-key-71c3"


@pytest.fixture
def alteryx() -> AlteryxSandbox:
    return AlteryxSandbox(AlteryxSandboxSettings(clients={CLIENT_ID: CLIENT_SECRET}))


@pytest.fixture
def pixxel() -> PixxelSandbox:
    return PixxelSandbox(PixxelSandboxSettings(api_keys=[PIXXEL_KEY]))


@pytest.fixture
async def urls(alteryx: AlteryxSandbox, pixxel: PixxelSandbox) -> AsyncIterator[dict[str, str]]:
    async with SandboxServer(alteryx_app(alteryx)) as a, SandboxServer(pixxel_app(pixxel)) as p:
        yield {"alteryx": a.url, "pixxel": p.url}


@pytest.fixture
def settings(make_settings: SettingsFactory, urls: dict[str, str]) -> Settings:
    """The gateway's settings: one connection to each sandbox, polling fast."""
    return make_settings(watching(urls))


def watching(urls: dict[str, str], lease_s: float = 1.0, timeout_s: float = 0.5) -> dict[str, Any]:
    """Settings with one connection to each sandbox, polling fast."""
    return {
        "polling": {"tick_s": 0.05, "lease_s": lease_s},
        "connections": [
            {
                "name": "ayx",
                "kind": "alteryx",
                "base_url": urls["alteryx"],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "poll_interval_s": 0.1,
                "max_backoff_s": 0.3,
                "request_timeout_s": timeout_s,
            },
            {
                "name": "px",
                "kind": "pixxel",
                "base_url": urls["pixxel"],
                "api_key": PIXXEL_KEY,
                "poll_interval_s": 0.1,
                "max_backoff_s": 0.3,
                "request_timeout_s": timeout_s,
            },
        ],
    }


async def eventually(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout_s}s")


async def settled(gw: RunningGateway, key: str) -> dict[str, Any] | None:
    """The wait once its delivery has left ``pending``/``sending``, else None."""
    _, wait = await gw.get(f"/v1/waits/{key}")
    delivery = wait.get("delivery")
    return None if not delivery or delivery["state"] in ("pending", "sending") else dict(wait)


@pytest.fixture
async def gw(settings: Settings, start_gateway: Start) -> RunningGateway:
    """The gateway, started after the sandboxes and so stopped before them."""
    started: RunningGateway = await start_gateway(settings)
    return started


def alteryx_watch(job_id: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "alteryx", "connection": "ayx", "job_id": job_id, **extra}


def pixxel_watch(workflow_id: str, job_id: str) -> dict[str, Any]:
    return {"kind": "pixxel", "connection": "px", "workflow_id": workflow_id, "job_id": job_id}


async def watch_of(gw: RunningGateway, key: str = "k") -> Any:
    """The wait's ``watch`` as the API shows it."""
    return (await gw.get(f"/v1/waits/{key}"))[1]["watch"]


async def register(
    gw: RunningGateway, workato: WorkatoSandbox, key: str, watch: dict[str, Any], **extra: Any
) -> Any:
    job = workato.create_job()
    status, body = await gw.post(
        "/v1/waits", {"key": key, "resume_token": job.resume.token, "watch": watch, **extra}
    )
    assert status == 201, body
    return job


async def test_alteryx_job_is_polled_to_completion_and_resumes_once(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.1, running_s=0.3))
    job = await register(gw, workato, "k", alteryx_watch(ayx.id))
    await eventually(lambda: job.resume.count == 1)
    assert job.resume.data is not None
    assert job.resume.data["status"] == "succeeded"
    assert job.resume.data["source"] == "poll:ayx"
    payload = job.resume.data["payload"]
    assert (payload["id"], payload["disposition"]) == (ayx.id, "Success")
    assert payload["messages"], "the job is read with includeMessages=true"
    wait = await eventually(lambda: settled(gw, "k"))  # the resume counts before it settles
    assert (wait["watch"]["state"], wait["delivery"]["state"]) == ("done", "delivered")
    assert wait["watch"]["polls"] >= 2
    await asyncio.sleep(0.3)
    assert job.resume.attempts == 1


async def test_two_waits_watching_one_job_are_both_resumed(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    """The event id was the job's: the second watch's report was a duplicate, its watch done
    and its wait never resumed (so too a Pixxel job id in a second workflow)."""
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.1, running_s=0.3))
    jobs = [await register(gw, workato, key, alteryx_watch(ayx.id)) for key in ("k1", "k2")]
    await eventually(lambda: all(job.resume.count == 1 for job in jobs))
    for key in ("k1", "k2"):
        wait = await eventually(lambda key=key: settled(gw, key))
        assert (wait["watch"]["state"], wait["delivery"]["state"]) == ("done", "delivered")


async def test_a_poll_answered_after_its_wait_was_replaced_resumes_neither_wait(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
    alteryx: AlteryxSandbox,
) -> None:
    """The watched wait is cancelled and its key registered again, for another job, while a
    poll of the first job is in flight: that job's result belongs to no open wait. It was
    recorded under the key and resumed the new wait with the other job's data."""
    gw = await start_gateway(make_settings(watching(urls, lease_s=10.0, timeout_s=5.0)))
    done = alteryx.create_job(AlteryxScript(queued_s=0, running_s=0))
    slow = ScriptedFault(kind="latency", seconds=2.0, path_prefix="/webapi/v3/jobs")
    alteryx.faults.set_plan(FaultPlan(scripted=[slow]))
    first = await register(gw, workato, "k", alteryx_watch(done.id))
    await asyncio.sleep(0.5)  # its first poll is under way, answered at 2 s
    assert (await gw.delete("/v1/waits/k"))[0] == 200
    running = alteryx.create_job(AlteryxScript(queued_s=100, running_s=100))
    second = await register(gw, workato, "k", alteryx_watch(running.id))
    await eventually(lambda: any(r.fault == "latency" for r in alteryx.requests.entries()))
    await asyncio.sleep(1.0)  # the answer recorded, and a resume it made would have left
    assert (first.resume.count, second.resume.count) == (0, 0)
    wait = (await gw.get("/v1/waits/k"))[1]
    assert (wait["state"], wait["event"]) == ("open", None)


async def test_a_token_answer_without_a_token_is_a_poll_error(
    settings: Settings,
) -> None:
    """A login page answered 200: its ValidationError escaped the cancel path and the poller
    died, and the gateway with it (on every restart, while the watch stayed active)."""

    async def login_page(_request: web.Request) -> web.Response:
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", login_page)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (ayx,) = [c for c in settings.connections if isinstance(c, AlteryxConnection)]
        client = AlteryxClient(session, ayx.model_copy(update={"base_url": server.url}))
        for call in (client.cancel, client.job):
            with pytest.raises(PollError, match="without a usable access_token"):
                await call({"job_id": "j-1"})


async def test_a_token_that_cannot_be_a_header_is_a_poll_error(settings: Settings) -> None:
    """A line break in the token made every request raise ValueError in aiohttp, which no
    poll caught: the poller died, and the gateway with it, at every restart."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "abc\ndef", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (ayx,) = [c for c in settings.connections if isinstance(c, AlteryxConnection)]
        client = AlteryxClient(session, ayx.model_copy(update={"base_url": server.url}))
        with pytest.raises(PollError, match="without a usable access_token"):
            await client.job({"job_id": "j-1"})


async def test_a_token_valid_for_less_than_the_refresh_margin_is_used(settings: Settings) -> None:
    """A token living 60 s or less was past its refresh time when it came: every request
    fetched a new one first."""
    fetched: list[str] = []

    async def token(_request: web.Request) -> web.Response:
        fetched.append("t")
        return web.json_response({"access_token": "t", "expires_in": 30})

    async def job(_request: web.Request) -> web.Response:
        return web.json_response({"id": "j-1", "status": "Running"})

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    app.router.add_get("/webapi/v3/jobs/{job}", job)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (ayx,) = [c for c in settings.connections if isinstance(c, AlteryxConnection)]
        client = AlteryxClient(session, ayx.model_copy(update={"base_url": server.url}))
        for _ in range(3):
            await client.job({"job_id": "j-1"})
    assert fetched == ["t"]


async def test_polls_waiting_for_a_failing_token_fetch_all_get_its_error(
    settings: Settings,
) -> None:
    """Behind a lock, only the first poll got the fetch's error; each after it fetched again
    in turn (up to a request timeout each), and lost its poll's time budget waiting."""
    fetched: list[str] = []

    async def token(_request: web.Request) -> web.Response:
        fetched.append("t")
        await asyncio.sleep(0.2)
        return web.json_response({"message": "maintenance"}, status=500)

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (ayx,) = [c for c in settings.connections if isinstance(c, AlteryxConnection)]
        client = AlteryxClient(session, ayx.model_copy(update={"base_url": server.url}))
        polls = [client.job({"job_id": f"j-{n}"}) for n in range(3)]
        errors = await asyncio.gather(*polls, return_exceptions=True)
    assert [str(e) for e in errors] == ["alteryx token endpoint answered 500"] * 3
    assert fetched == ["t"]


async def test_a_refused_cancellation_is_told_apart_by_its_answer(settings: Settings) -> None:
    """A 400 for want of permission is final; one whose job then reads as a login page is a
    PollError (its ValidationError escaped, and the cancellation was tried every tick); one
    whose job is then gone (404) is over."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def refuse(request: web.Request) -> web.Response:
        message = "You do not have permission to cancel this job."
        if request.match_info["job"] in ("busy", "gone"):
            message = "This job is not in 'Queued' or 'Running' state."
        return web.json_response({"message": message}, status=400)

    async def login_page_or_gone(request: web.Request) -> web.Response:
        if request.match_info["job"] == "gone":  # deleted between the DELETE and the GET
            return web.json_response({"message": "Not found"}, status=404)
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    app.router.add_delete("/webapi/v3/jobs/{job}", refuse)
    app.router.add_get("/webapi/v3/jobs/{job}", login_page_or_gone)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (ayx,) = [c for c in settings.connections if isinstance(c, AlteryxConnection)]
        client = AlteryxClient(session, ayx.model_copy(update={"base_url": server.url}))
        assert await client.cancel({"job_id": "theirs"}) == "not_permitted"
        with pytest.raises(PollError, match="unexpectedly"):
            await client.cancel({"job_id": "busy"})
        assert await client.cancel({"job_id": "gone"}) == "already_over"  # was retried


async def test_a_job_answer_over_max_answer_bytes_is_a_poll_error(settings: Settings) -> None:
    """It is held in memory whole: it was read whatever its size."""
    big = b'{"id": "job-9", "status": "running", "spec": [' + b"1," * 2_000 + b"1]}"

    async def sized(_request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to go by
        await response.prepare(request)
        for at in range(0, len(big), 500):
            await response.write(big[at : at + 500])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v0/workflows/sized/jobs/job-9", sized)
    app.router.add_get("/v0/workflows/streamed/jobs/job-9", streamed)
    async with SandboxServer(app) as server, aiohttp.ClientSession() as session:
        (px,) = [c for c in settings.connections if isinstance(c, PixxelConnection)]
        capped = px.model_copy(update={"base_url": server.url, "max_answer_bytes": 1024})
        client = PixxelClient(session, capped)
        for workflow in ("sized", "streamed"):
            with pytest.raises(PollError, match="max_answer_bytes 1024"):
                await client.job({"workflow_id": workflow, "job_id": "job-9"})
        roomy = PixxelClient(session, px.model_copy(update={"base_url": server.url}))
        assert await roomy.job({"workflow_id": "streamed", "job_id": "job-9"}) == big


async def test_alteryx_spelling_variant_and_error_disposition_fail_the_job(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    ayx = alteryx.create_job(
        AlteryxScript(queued_s=0, running_s=0.1, disposition="Error", status_spelling="Completed")
    )
    job = await register(gw, workato, "k", alteryx_watch(ayx.id))
    await eventually(lambda: job.resume.count == 1)
    assert job.resume.data is not None
    assert (job.resume.data["status"], job.resume.data["payload"]["status"]) == (
        "failed",
        "Completed",
    )


async def test_alteryx_revoked_token_is_refreshed(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox, urls: dict[str, str]
) -> None:
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.2, running_s=0.6))
    job = await register(gw, workato, "k", alteryx_watch(ayx.id))
    await eventually(lambda: alteryx.job(ayx.id) is not None and alteryx.job(ayx.id).poll_count)
    async with gw.http.delete(urls["alteryx"] + "/_sandbox/tokens") as resp:
        assert resp.status < 300
    await eventually(lambda: job.resume.count == 1)
    statuses = [r.status for r in alteryx.requests.entries() if "/v3/jobs/" in r.path]
    assert 401 in statuses, "the revoked token was used once, then replaced"
    token_calls = [r for r in alteryx.requests.entries() if r.path.endswith("/oauth2/token")]
    assert len(token_calls) == 2


async def test_alteryx_polls_waiting_for_a_token_share_one_fetch(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    """Each poll that found no token fetched its own: at a refresh, one per poll in flight."""
    slow = ScriptedFault(kind="latency", seconds=0.3, path_prefix="/webapi/oauth2/token")
    alteryx.faults.set_plan(FaultPlan(scripted=[slow]))
    jobs = []
    for n in range(4):
        ayx = alteryx.create_job(AlteryxScript(queued_s=0, running_s=0.2))
        jobs.append(await register(gw, workato, f"k{n}", alteryx_watch(ayx.id)))
    await eventually(lambda: all(job.resume.count == 1 for job in jobs))
    token_calls = [r for r in alteryx.requests.entries() if r.path.endswith("/oauth2/token")]
    assert len(token_calls) == 1


async def test_pixxel_progress_is_visible_and_failed_tasks_reach_the_action(
    gw: RunningGateway, workato: WorkatoSandbox, pixxel: PixxelSandbox
) -> None:
    px = pixxel.create_job(
        PixxelScript(
            workflow_id="wf-1",
            queued_s=0.1,
            running_s=1.5,
            outcome="failed",
            failing_tasks=[{"name": "classify", "err_msg": "cloud cover", "failure_type": "data"}],
        )
    )
    job = await register(gw, workato, "k", pixxel_watch("wf-1", px.id))

    async def progressing() -> bool:
        watch = await watch_of(gw)
        return bool(
            watch and watch["job_status"] == "running" and watch["progress"] not in (None, "0")
        )

    await eventually(progressing)
    await eventually(lambda: job.resume.count == 1)
    assert job.resume.data is not None
    data = job.resume.data
    assert data["status"] == "failed"
    assert data["payload"]["failed_tasks"] == [
        {"task": "classify", "err_msg": "cloud cover", "failure_type": "data"}
    ]
    assert data["payload"]["job"]["id"] == px.id


async def test_poll_failures_back_off_and_recover(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, pixxel: PixxelSandbox
) -> None:
    pixxel.faults.set_plan(FaultPlan(scripted=[ScriptedFault(kind="status", status=503, count=3)]))
    gw = await start_gateway(settings)
    px = pixxel.create_job(PixxelScript(workflow_id="wf", queued_s=0, running_s=0.1))

    async def failing() -> bool:
        watch = await watch_of(gw)
        return bool(watch and watch["last_error"])

    job = await register(gw, workato, "k", pixxel_watch("wf", px.id))
    await eventually(failing)
    await eventually(lambda: job.resume.count == 1)
    assert [r.status for r in pixxel.requests.entries()][:3] == [503, 503, 503]


async def test_a_429_holds_every_poll_of_its_connection_for_its_retry_after(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    """A 429 was one watch's failure: it backed off alone while the connection's other
    watches went on polling at full rate (37 requests in 6 s against a Retry-After of 60)."""
    started: list[float] = []

    async def job(request: web.Request) -> web.Response:
        now = time.monotonic()
        started.append(now)
        if now - started[0] < 1.0:  # busy for a second, and says so
            return web.Response(status=429, headers={"Retry-After": "1"})
        job_id = request.match_info["job"]
        return web.json_response({"id": job_id, "status": "completed", "tasks": []})

    app = web.Application()
    app.router.add_get("/v0/workflows/{wf}/jobs/{job}", job)
    async with SandboxServer(app) as server:
        config = watching({**urls, "pixxel": server.url})
        gw = await start_gateway(make_settings(config))
        jobs = [await register(gw, workato, f"k{n}", pixxel_watch("wf", f"j{n}")) for n in range(3)]
        await eventually(lambda: all(j.resume.count == 1 for j in jobs))
    first = started[0]
    during = [t for t in started if t - first < 0.95]
    assert len(during) <= 3, f"{len(during)} polls while the connection was throttled"


async def test_a_throttled_connection_holds_its_cancellations_too(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    """Cancellations went on during the pause, and a 429 to one was an attempt retried at the
    poll backoff: eight DELETEs in 1.4 s against a Retry-After of 30, then given up."""
    requests: list[str] = []

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "tok", "expires_in": 3600})

    async def busy(request: web.Request) -> web.Response:
        requests.append(request.method)
        return web.Response(status=429, headers={"Retry-After": "30"})

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    app.router.add_get("/webapi/v3/jobs/{id}", busy)
    app.router.add_delete("/webapi/v3/jobs/{id}", busy)
    async with SandboxServer(app) as server:
        gw = await start_gateway(make_settings(watching({**urls, "alteryx": server.url})))
        await register(gw, workato, "k", alteryx_watch("j1", cancel_on_close=True))
        await eventually(lambda: requests)  # the poll's 429: 30 s of pause
        assert (await gw.delete("/v1/waits/k"))[0] == 200
        await asyncio.sleep(1.5)
    assert requests == ["GET"]


async def test_a_poll_that_would_outlive_its_lease_fails_as_such_and_is_retried(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, pixxel: PixxelSandbox
) -> None:
    """An answer slower than the lease (1 s; the connection allows 3 s a request): the watch
    was claimed and polled again while the first poll still ran. Now a poll ends within 80 %
    of its lease, as failed."""
    connections = [
        c.model_copy(update={"request_timeout_s": 3.0}) if c.name == "px" else c
        for c in settings.connections
    ]
    slow = ScriptedFault(kind="latency", seconds=1.5, path_prefix="/v0/workflows")
    pixxel.faults.set_plan(FaultPlan(scripted=[slow]))
    gw = await start_gateway(settings.model_copy(update={"connections": connections}))
    px = pixxel.create_job(PixxelScript(workflow_id="wf", queued_s=0, running_s=0.1))

    async def last_error() -> str:
        watch = await watch_of(gw)
        return str(watch["last_error"] or "") if watch else ""

    job = await register(gw, workato, "k", pixxel_watch("wf", px.id))
    assert "took longer than 0.8 s" in await eventually(last_error)
    await eventually(lambda: job.resume.count == 1)


async def test_watch_on_unknown_connection_is_refused(gw: RunningGateway) -> None:
    status, problem = await gw.post(
        "/v1/waits",
        {
            "key": "k",
            "resume_token": "t",
            "watch": {"kind": "pixxel", "connection": "nope", "workflow_id": "w", "job_id": "j"},
        },
    )
    assert (status, problem["field"]) == (422, "watch.connection")
    status, problem = await gw.post(
        "/v1/waits",
        {
            "key": "k",
            "resume_token": "t",
            "watch": {"kind": "alteryx", "connection": "px", "job_id": "j"},
        },
    )
    assert (status, problem["field"]) == (422, "watch.kind")


async def test_a_connection_serves_only_its_tenants(
    make_settings: SettingsFactory, urls: dict[str, str], start_gateway: Start
) -> None:
    """Any tenant's key could watch, and so read and (cancel_on_close) cancel, any job the
    connection's credential reaches: connections were not scoped to tenants."""
    config = watching(urls)
    config["tenants"] = [
        {"name": "acme", "data_center": "us", "api_token": "t1", "api_keys": ["acme-key-1"]},
        {"name": "other", "data_center": "us", "api_token": "t2", "api_keys": ["other-key-1"]},
    ]
    config["connections"][0]["tenants"] = ["acme"]
    gw = await start_gateway(make_settings(config))
    wait = {"key": "k", "resume_token": "t", "watch": alteryx_watch("j-1", cancel_on_close=True)}
    other = {"Authorization": "Bearer other-key-1"}
    async with gw.http.post(gw.url + "/v1/waits", json=wait, headers=other) as resp:
        problem = await resp.json(content_type=None)
    assert (resp.status, problem["field"]) == (422, "watch.connection")
    acme = {"Authorization": "Bearer acme-key-1"}
    async with gw.http.post(gw.url + "/v1/waits", json=wait, headers=acme) as resp:
        assert resp.status == 201


def test_a_connection_naming_an_unknown_tenant_is_a_config_error(
    make_settings: SettingsFactory, urls: dict[str, str]
) -> None:
    config = watching(urls)
    config["connections"][1]["tenants"] = ["nobody"]
    with pytest.raises(ConfigError, match=r"connections\.1\.tenants: no tenant is named 'nobody'"):
        make_settings(config)


@pytest.mark.parametrize(
    ("watch", "field"),
    [
        (alteryx_watch(".."), "watch.alteryx.job_id"),
        (pixxel_watch("..", "j"), "watch.pixxel.workflow_id"),
        (pixxel_watch("w", "."), "watch.pixxel.job_id"),
    ],
)
async def test_an_id_that_is_a_dot_segment_is_refused(
    gw: RunningGateway, watch: dict[str, Any], field: str
) -> None:
    """Percent-encoding leaves dots as they are, and the URL resolved them: Alteryx's
    ``/v3/jobs/..`` was polled (and, with cancel_on_close, deleted) as ``/webapi/v3/``."""
    status, problem = await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "watch": watch})
    assert (status, [e["field"] for e in problem["errors"]]) == (422, [field])


async def test_cancelling_the_wait_stops_polling_and_cancels_the_alteryx_job(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.1, running_s=30))
    await register(gw, workato, "k", alteryx_watch(ayx.id, cancel_on_close=True))
    await eventually(lambda: alteryx.job(ayx.id).poll_count >= 1)  # type: ignore[union-attr]
    cancelled = await cancel_the_wait(gw, alteryx, ayx.id)
    polls = cancelled.poll_count
    await asyncio.sleep(0.4)
    assert cancelled.poll_count == polls, "no polling after the wait closed"


async def cancel_the_wait(gw: RunningGateway, alteryx: AlteryxSandbox, job_id: str) -> Any:
    """``DELETE`` the wait ``k``; once its watch has stopped, its Alteryx job, cancelled."""
    status, _ = await gw.delete("/v1/waits/k")
    assert status == 200

    async def stopped() -> bool:
        return bool((await watch_of(gw))["state"] == "stopped")

    await eventually(stopped)
    cancelled = alteryx.job(job_id)
    assert cancelled is not None
    assert cancelled.cancelled_at is not None
    return cancelled


async def test_a_job_that_cannot_be_cancelled_yet_is_cancelled_once_it_can(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    """Only a Queued or Running job can be cancelled (seed 003): an Initializing one answered
    400, taken for 'already over', and the watch stopped with the job left running."""
    # a backoff that cannot spend its 8 attempts within the 1 s the job initializes
    slower = [
        c.model_copy(update={"poll_interval_s": 0.2, "max_backoff_s": 2.0})
        if isinstance(c, AlteryxConnection)
        else c
        for c in settings.connections
    ]
    gw = await start_gateway(settings.model_copy(update={"connections": slower}))
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.05, initializing_s=1.0, running_s=30))
    await register(gw, workato, "k", alteryx_watch(ayx.id, cancel_on_close=True))

    async def initializing() -> bool:
        return bool((await watch_of(gw))["job_status"] == "Initializing")

    await eventually(initializing)
    await cancel_the_wait(gw, alteryx, ayx.id)
    refused = [r for r in alteryx.requests.entries() if r.method == "DELETE" and r.status == 400]
    assert refused, "the first cancellation came while it was Initializing"


async def test_a_cancellation_that_would_outlive_its_lease_is_cut_short_and_tried_again(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    """Each request had its timeout (here 3 s), but a cancellation, which may make several,
    had none as a whole, and held one of the poller's slots while it ran. Now it ends within
    80 % of the lease (1 s), as a poll does, and is tried again."""
    connections = [
        c.model_copy(update={"request_timeout_s": 3.0}) if c.name == "ayx" else c
        for c in settings.connections
    ]
    gw = await start_gateway(settings.model_copy(update={"connections": connections}))
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.1, running_s=30))
    await register(gw, workato, "k", alteryx_watch(ayx.id, cancel_on_close=True))
    await eventually(lambda: alteryx.job(ayx.id).poll_count >= 1)  # type: ignore[union-attr]
    # a poll under way may take one of them; the cancellation gets the others
    slow = ScriptedFault(kind="latency", seconds=1.5, count=3, path_prefix="/webapi/v3/jobs/")
    alteryx.faults.set_plan(FaultPlan(scripted=[slow]))
    with structlog.testing.capture_logs() as logged:
        await cancel_the_wait(gw, alteryx, ayx.id)
    failed = [e["error"] for e in logged if e["event"] == "watch.job_cancel_failed"]
    assert failed[:1] == ["the cancellation took longer than 0.8 s"]


async def test_a_job_deleted_after_it_was_seen_fails_the_wait_instead_of_polling_on(
    gw: RunningGateway, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    """Alteryx deletes a queued job it cancels (seed 003): it answered 404, polled as a
    passing error until the wait expired, up to 60 days. The first 404 is such an error (and
    the watch keeps the status it last saw); the second in a row reports the job failed."""
    ayx = alteryx.create_job(AlteryxScript(queued_s=60, running_s=1))
    job = await register(gw, workato, "k", alteryx_watch(ayx.id))

    async def seen_queued() -> bool:
        return bool((await watch_of(gw))["job_status"] == "Queued")

    await eventually(seen_queued)
    alteryx.cancel(ayx.id)  # by someone else, in Alteryx
    await eventually(lambda: job.resume.count == 1)
    assert job.resume.data is not None
    assert job.resume.data["status"] == "failed"
    assert job.resume.data["payload"] == {
        "error": "job_not_found",
        "job_id": ayx.id,
        "last_status": "Queued",
    }


async def test_a_job_never_seen_that_answers_404_is_polled_on(
    gw: RunningGateway, workato: WorkatoSandbox
) -> None:
    """A wrong id or URL is a passing error until it is fixed or the wait expires."""
    await register(gw, workato, "k", alteryx_watch("no-such-job"))

    async def failing() -> bool:
        watch = await watch_of(gw)
        return bool(watch["last_error"] and "404" in watch["last_error"])

    await eventually(failing)
    assert (await watch_of(gw))["state"] == "active"


async def test_a_restart_in_the_middle_of_a_watch_resumes_it(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, alteryx: AlteryxSandbox
) -> None:
    first = await start_gateway(settings)
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.2, running_s=2.0))
    job = await register(first, workato, "k", alteryx_watch(ayx.id))
    await eventually(lambda: alteryx.job(ayx.id).poll_count >= 1)  # type: ignore[union-attr]
    await first.gateway.stop()
    assert job.resume.count == 0
    second = await start_gateway(settings)
    await eventually(lambda: job.resume.count == 1, timeout_s=15)
    _, wait = await second.get("/v1/waits/k")
    assert wait["watch"]["state"] == "done"
    assert json.loads(job.resume.body or b"{}")["data"]["payload"]["id"] == ayx.id


async def test_a_watch_whose_connection_changed_kind_fails_its_polls_not_the_gateway(
    settings: Settings,
    start_gateway: Start,
    workato: WorkatoSandbox,
    alteryx: AlteryxSandbox,
    urls: dict[str, str],
) -> None:
    """An Alteryx watch read by a Pixxel client raised KeyError: the poller died, and the
    gateway stopped, on every start, until the watch's wait expired."""
    first = await start_gateway(settings)
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.2, running_s=30.0))
    await register(first, workato, "k", alteryx_watch(ayx.id))
    await first.gateway.stop()
    renamed = [
        PixxelConnection.model_validate(
            {"name": "ayx", "kind": "pixxel", "base_url": urls["pixxel"], "api_key": PIXXEL_KEY}
        ),
        *[c for c in settings.connections if c.name != "ayx"],
    ]
    second = await start_gateway(settings.model_copy(update={"connections": renamed}))

    async def last_error() -> str:
        watch = await watch_of(second)
        return str(watch["last_error"] or "") if watch else ""

    assert await eventually(last_error) == "connection 'ayx' is a pixxel connection, not alteryx"
    assert not second.gateway.poller.failed.is_set()


async def test_a_cancellation_given_up_is_a_warning(
    settings: Settings,
    start_gateway: Start,
    workato: WorkatoSandbox,
    alteryx: AlteryxSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given up, the job may still run upstream: it was an info line like a done one."""
    monkeypatch.setattr(poller_module, "CANCEL_ATTEMPTS", 1)
    gw = await start_gateway(settings)
    ayx = alteryx.create_job(AlteryxScript(queued_s=0.05, initializing_s=30.0, running_s=30))
    await register(gw, workato, "k", alteryx_watch(ayx.id, cancel_on_close=True))

    async def initializing() -> bool:  # an Initializing job refuses to be cancelled
        return bool((await watch_of(gw))["job_status"] == "Initializing")

    await eventually(initializing)
    with structlog.testing.capture_logs() as logs:
        assert (await gw.delete("/v1/waits/k"))[0] == 200

        async def stopped() -> bool:
            return bool((await watch_of(gw))["state"] == "stopped")

        await eventually(stopped)
    [given_up] = [e for e in logs if e["event"] == "watch.job_cancel"]
    assert given_up["result"].startswith("gave up after 1 attempts")
    assert given_up["log_level"] == "warning"


async def test_a_watch_its_connection_no_longer_serves_is_not_counted_as_a_poll(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    """gateway_polls_total counts polls made: a watch failed without one (its connection
    now serves other tenants only) was counted as a poll error at every turn."""
    config = watching(urls)
    first = await start_gateway(make_settings(config))
    await register(first, workato, "k", alteryx_watch("j-1"))
    await first.gateway.stop()
    config["tenants"] = [
        {"name": "acme", "data_center": "us", "api_token": "t1", "api_keys": ["acme-key-1"]},
        {"name": "other", "data_center": "us", "api_token": "t2", "api_keys": ["other-key-1"]},
    ]
    config["connections"][0]["tenants"] = ["other"]
    gw = await start_gateway(make_settings(config))
    acme = {"Authorization": "Bearer acme-key-1"}

    async def failed() -> bool:
        async with gw.http.get(gw.url + "/v1/waits/k", headers=acme) as resp:
            watch = (await resp.json())["watch"]
        return "does not serve tenant" in (watch.get("last_error") or "")

    await eventually(failed)
    polls = gw.gateway.metrics.registry.get_sample_value
    assert polls("gateway_polls_total", {"connection": "ayx", "result": "error"}) is None


async def test_a_pixxel_job_that_answers_404_twice_is_polled_on_until_it_ends(
    settings: Settings, start_gateway: Start, workato: WorkatoSandbox, pixxel: PixxelSandbox
) -> None:
    """Two 404s in a row reported any job seen before as failed (job_not_found); seed 004
    says nothing of deleting jobs, and a passing proxy error made a job that then completed
    resume its wait as failed, for good. Only an Alteryx job seen queued may vanish."""
    gw = await start_gateway(settings)
    px = pixxel.create_job(PixxelScript(workflow_id="wf", queued_s=0, running_s=3.0))
    job = await register(gw, workato, "k", pixxel_watch("wf", px.id))

    async def running() -> bool:
        return bool((await watch_of(gw))["job_status"] == "running")

    await eventually(running)
    pixxel.faults.set_plan(FaultPlan(scripted=[ScriptedFault(kind="status", status=404, count=2)]))
    await eventually(lambda: job.resume.count == 1)
    assert job.resume.data is not None
    assert job.resume.data["status"] == "succeeded"


async def test_a_throttled_connection_does_not_hold_up_another_connections_cancellations(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
    alteryx: AlteryxSandbox,
) -> None:
    """A hundred closed watches of a throttled connection filled every page of the query,
    each skipped: another connection's job was not cancelled until the 429's Retry-After
    (up to an hour) ran out."""
    config = watching(urls)
    config["connections"].append(dict(config["connections"][0], name="ayx2"))
    gw = await start_gateway(make_settings(config))
    poller = gw.gateway.poller
    held = [alteryx.create_job(AlteryxScript(queued_s=600, running_s=600)) for _ in range(100)]
    for n, ayx in enumerate(held):
        await register(gw, workato, f"a{n}", alteryx_watch(ayx.id, cancel_on_close=True))
    other = alteryx.create_job(AlteryxScript(queued_s=600, running_s=600))
    watch = {**alteryx_watch(other.id, cancel_on_close=True), "connection": "ayx2"}
    await register(gw, workato, "b", watch)
    poller._throttled["ayx"] = poller._clock() + 3600  # as after a 429 with Retry-After: 3600
    for n in range(100):
        assert (await gw.delete(f"/v1/waits/a{n}"))[0] == 200
    assert (await gw.delete("/v1/waits/b"))[0] == 200
    await eventually(lambda: alteryx.job(other.id).cancelled_at is not None)  # type: ignore[union-attr]
    assert all(alteryx.job(a.id).cancelled_at is None for a in held)  # type: ignore[union-attr]


async def test_an_answer_of_the_wrong_shape_says_which_field(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    """The poll's error said "1 validation errors", in the log and on the wait."""

    async def job(_request: web.Request) -> web.Response:
        tasks = [{"id": 7, "name": "ndvi", "status": "completed"}]  # a task id is a string
        return web.json_response(
            {"id": "j1", "status": "completed", "progress": "100", "tasks": tasks}
        )

    app = web.Application()
    app.router.add_get("/v0/workflows/{wf}/jobs/{job}", job)
    async with SandboxServer(app) as server:
        gw = await start_gateway(make_settings(watching({**urls, "pixxel": server.url})))
        await register(gw, workato, "k", pixxel_watch("wf", "j1"))

        async def failed() -> bool:
            return bool((await watch_of(gw))["last_error"])

        await eventually(failed)
        assert (await watch_of(gw))["last_error"] == "unexpected answer: tasks.0.id: string_type"


async def test_a_cancellation_refused_for_want_of_permission_is_a_warning(
    make_settings: SettingsFactory,
    urls: dict[str, str],
    start_gateway: Start,
    workato: WorkatoSandbox,
) -> None:
    """The job runs on upstream, as after giving up (a warning), but it was an info line."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def job(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["job"], "status": "Running"})

    async def refuse(_request: web.Request) -> web.Response:
        message = "You do not have permission to cancel this job."
        return web.json_response({"message": message}, status=400)

    app = web.Application()
    app.router.add_post("/webapi/oauth2/token", token)
    app.router.add_get("/webapi/v3/jobs/{job}", job)
    app.router.add_delete("/webapi/v3/jobs/{job}", refuse)
    async with SandboxServer(app) as server:
        gw = await start_gateway(make_settings(watching({**urls, "alteryx": server.url})))
        await register(gw, workato, "k", alteryx_watch("j1", cancel_on_close=True))

        async def polled() -> bool:
            return bool((await watch_of(gw))["job_status"] == "Running")

        await eventually(polled)
        with structlog.testing.capture_logs() as logs:
            assert (await gw.delete("/v1/waits/k"))[0] == 200

            async def said() -> bool:
                return any(e["event"] == "watch.job_cancel" for e in logs)

            await eventually(said)
    (line,) = [e for e in logs if e["event"] == "watch.job_cancel"]
    assert (line["log_level"], line["result"]) == ("warning", "not_permitted")


async def test_a_poll_that_raises_what_no_client_foresaw_fails_its_watch_not_the_poller(
    settings: Settings,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Such an error (the HTTP client's ValueError for a URL with credentials, a secret it
    could not encode) ended the poller, and the gateway, at every start while the watch was
    active. Logged by its type only: its message may quote a credential."""

    async def broken(_self: Any, _spec: Any) -> Any:
        raise ValueError("Cannot combine AUTHORIZATION header with AUTH argument (s3cr3t)")

    monkeypatch.setattr(PixxelClient, "job", broken)
    gw = await start_gateway(settings)
    with structlog.testing.capture_logs() as logs:
        await register(gw, workato, "k", pixxel_watch("wf", "j1"))

        async def failed() -> bool:
            return bool((await watch_of(gw))["last_error"])

        await eventually(failed)
    assert (await watch_of(gw))["last_error"] == "the poll failed (ValueError)"
    assert not gw.gateway.poller.failed.is_set()
    assert "s3cr3t" not in repr(logs)

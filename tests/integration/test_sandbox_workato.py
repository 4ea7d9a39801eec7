"""Integration tests of the Workato sandbox over real HTTP on loopback.

The sandbox's clock is a fake one the tests move, so rate-limit windows are exercised in
milliseconds. Every HTTP call is bounded by the session timeout, every wait by asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato import WorkatoSandbox, WorkatoSandboxSettings, create_app, serve
from tests.integration.sandbox_harness import (
    STEP_TIMEOUT_S,
    T0,
    FakeClock,
    Reply,
    SandboxClient,
    raw_status,
    served,
    serving,
)

TOKEN = "sandbox-api-token-1"
OTHER_TOKEN = "sandbox-api-token-2"
LEGACY_EMAIL = "ops@example.com"
LEGACY_TOKEN = "legacy-user-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEGACY_AUTH = {"x-user-email": LEGACY_EMAIL, "x-user-token": LEGACY_TOKEN}
JOB_ID = re.compile(r"^j-[A-Za-z0-9]{8}-[A-Za-z0-9]{6}$")
JOB_IDS_INVALID = "param is missing or the value is empty or invalid: job_ids"


class Harness(SandboxClient):
    async def call(
        self,
        method: str,
        path: str | URL,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> Reply:
        """One request; ``headers=None`` means the valid bearer token."""
        url = path if isinstance(path, URL) else URL(self.url + path, encoded=True)
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        async with self.http.request(
            method, url, headers=AUTH if headers is None else headers, timeout=timeout, **kwargs
        ) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
            return Reply(response.status, body, response.headers)

    async def new_job(self, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = await self.control("POST", "/jobs", fields)
        return created

    async def resume(self, token: str, data: Any = None, **kwargs: Any) -> Reply:
        body = {"token": token} if data is None else {"token": token, "data": data}
        return await self.call("POST", "/api/job/resume", json=body, **kwargs)

    async def settings(self, **changes: Any) -> None:
        await self.control("PUT", "/settings", changes)

    async def repeat(self, recipe_id: int, body: Any, **kwargs: Any) -> Reply:
        """repeat_jobs one second after the previous call, so its 1/s limit never interferes."""
        self.clock.advance(1.0)
        return await self.call("POST", f"/api/recipes/{recipe_id}/repeat_jobs", json=body, **kwargs)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    settings = WorkatoSandboxSettings(
        api_tokens=[TOKEN, OTHER_TOKEN],
        legacy_users={LEGACY_EMAIL: LEGACY_TOKEN},
        rate_limit_per_minute=10_000,  # tests of the limit lower it through the control API
    )
    sandbox = WorkatoSandbox(settings, clock=clock)
    async with served(create_app(sandbox)) as (url, http):
        yield Harness(url, http, clock)


async def wait_for_status(harness: Harness, job_id: str, status: str) -> dict[str, Any]:
    """Poll the control API until the job reaches ``status`` (bounded)."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            state = await harness.job_state(job_id)
            if state["status"] == status:
                return state
            await asyncio.sleep(0.02)


# --- server --------------------------------------------------------------------------------


async def test_server_reports_the_real_port_and_stops_idempotently() -> None:
    server = SandboxServer(create_app(WorkatoSandbox(WorkatoSandboxSettings())))
    with pytest.raises(RuntimeError):
        _ = server.url
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with server:
            port = URL(server.url).port
            assert port is not None
            assert port > 0
            async with (
                aiohttp.ClientSession() as http,
                http.get(server.url + "/_sandbox/stats") as r,
            ):
                assert r.status == 200
        await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url


async def test_serve_announces_its_url_and_runs_until_cancelled() -> None:
    async with serving(serve, "127.0.0.1", 0, [TOKEN]) as lines:
        url = lines[0].rsplit(" ", 1)[-1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/api/recipes/1/jobs", headers=AUTH) as r,
        ):
            assert r.status == 200
    assert any("/_sandbox/faults" in line for line in lines)
    assert all(TOKEN not in line for line in lines)


# --- auth ----------------------------------------------------------------------------------


async def test_bearer_token_is_accepted(harness: Harness) -> None:
    reply = await harness.call("GET", "/api/recipes/1/jobs", headers=AUTH)
    assert reply.status == 200


async def test_legacy_email_and_token_are_accepted(harness: Harness) -> None:
    reply = await harness.call("GET", "/api/recipes/1/jobs", headers=LEGACY_AUTH)
    assert reply.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"x-user-email": LEGACY_EMAIL, "x-user-token": "wrong"},
        {"x-user-email": "someone@example.com", "x-user-token": LEGACY_TOKEN},
        {"x-user-email": LEGACY_EMAIL},
    ],
)
async def test_missing_or_wrong_credentials_get_401(
    harness: Harness, headers: dict[str, str]
) -> None:
    job = await harness.new_job()
    reply = await harness.resume(job["resume_token"], {"x": 1}, headers=headers)
    assert reply.status == 401
    assert reply.body == {"message": "Unauthorized"}
    assert (await harness.job_state(job["job_id"]))["status"] == "pending"


@pytest.mark.parametrize(
    "credentials",
    [
        b"Authorization: Bearer \xff\xfe",
        b"x-user-email: " + LEGACY_EMAIL.encode() + b"\r\nx-user-token: \xff",
    ],
)
async def test_a_credential_that_is_not_utf8_gets_401_not_500(
    harness: Harness, credentials: bytes
) -> None:
    request = b"GET /api/recipes/1/jobs HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n"
    assert await raw_status(harness.url, request % credentials) == 401


async def test_a_legacy_user_configured_without_a_token_is_never_authenticated() -> None:
    sandbox = WorkatoSandbox(WorkatoSandboxSettings(legacy_users={LEGACY_EMAIL: ""}))
    assert sandbox.authenticate({"x-user-email": LEGACY_EMAIL}) is None
    assert sandbox.authenticate({"x-user-email": LEGACY_EMAIL, "x-user-token": ""}) is None


# --- resume --------------------------------------------------------------------------------


async def test_resume_answers_204_and_stores_the_exact_body(harness: Harness) -> None:
    job = await harness.new_job(recipe_id=5, title="waits for a report")
    assert JOB_ID.match(job["job_id"])
    raw = (
        '{ "data" : {"z": 1.10, "a": "\\u00e9t\\u00e9", "nested": {"k": [1, 2.0, null]}},'
        f'\n  "token":"{job["resume_token"]}" }}'
    ).encode()
    harness.clock.advance(42.0)
    reply = await harness.call(
        "POST", "/api/job/resume", data=raw, headers=AUTH | {"Content-Type": "application/json"}
    )
    assert reply.status == 204
    assert reply.body is None
    state = await harness.job_state(job["job_id"])
    assert state["status"] == "succeeded"
    assert state["resume_count"] == 1
    assert state["completed_at"] == state["resumed_at"] == T0 + 42.0
    assert state["resumed_data"] == {"z": 1.1, "a": "été", "nested": {"k": [1, 2.0, None]}}
    assert state["resumed_body_size"] == len(raw)
    assert state["resumed_body_sha256"] == hashlib.sha256(raw).hexdigest()
    async with harness.http.get(f"{harness.url}/_sandbox/jobs/{job['job_id']}/body") as r:
        assert await r.read() == raw


async def test_resume_without_data_is_accepted(harness: Harness) -> None:
    job = await harness.new_job()
    assert (await harness.resume(job["resume_token"])).status == 204
    state = await harness.job_state(job["job_id"])
    assert state["resume_count"] == 1
    assert state["resumed_data"] is None


async def test_unknown_token_gets_404(harness: Harness) -> None:
    reply = await harness.resume("no-such-token", {"a": 1})
    assert reply.status == 404
    assert reply.body == {"message": "Resume token not found"}


async def test_second_resume_gets_409_and_resume_count_stays_1(harness: Harness) -> None:
    job = await harness.new_job()
    assert (await harness.resume(job["resume_token"], {"n": 1})).status == 204
    second = await harness.resume(job["resume_token"], {"n": 2})
    assert second.status == 409
    assert second.body == {"message": "Job has already been resumed"}
    state = await harness.job_state(job["job_id"])
    assert (state["resume_count"], state["rejected_resumes"]) == (1, 1)
    assert state["resume_attempts"] == 2  # every request counts: "exactly once" is 1
    assert state["resumed_data"] == {"n": 1}
    stats = await harness.control("GET", "/stats")
    assert (stats["max_resume_count"], stats["resumes_total"]) == (1, 1)
    assert (stats["rejected_resumes_total"], stats["max_resume_attempts"]) == (1, 2)


async def test_a_running_resumed_job_ended_by_the_control_api_stays_ended(
    harness: Harness,
) -> None:
    await harness.settings(resume_running_s=30.0)
    job = await harness.new_job()
    assert (await harness.resume(job["resume_token"], {"n": 1})).status == 204
    await harness.control("PATCH", f"/jobs/{job['job_id']}", {"status": "failed"})
    harness.clock.advance(31.0)
    assert (await harness.job_state(job["job_id"]))["status"] == "failed"


async def test_a_resumed_job_can_run_on_before_it_succeeds(harness: Harness) -> None:
    """A real job's action runs on after its resume (seed 001): a lookup right after it may see
    it pending, which must not read as proof either way."""
    await harness.settings(resume_running_s=30.0)
    job = await harness.new_job(recipe_id=5)
    assert (await harness.resume(job["resume_token"], {"n": 1})).status == 204
    running = await harness.call("GET", f"/api/recipes/5/jobs/{job['job_id']}", headers=AUTH)
    assert running.body["status"] == "pending"
    assert (await harness.resume(job["resume_token"], {"n": 2})).status == 409
    harness.clock.advance(30.0)
    done = await harness.call("GET", f"/api/recipes/5/jobs/{job['job_id']}", headers=AUTH)
    assert done.body["status"] == "succeeded"
    assert (await harness.job_state(job["job_id"]))["completed_at"] == T0 + 30.0


def padded_body(token: str, size: int) -> bytes:
    """A resume body of exactly ``size`` bytes."""
    empty = json.dumps({"token": token, "data": {"pad": ""}}).encode()
    return json.dumps({"token": token, "data": {"pad": "x" * (size - len(empty))}}).encode()


async def test_body_at_the_limit_is_accepted(harness: Harness) -> None:
    await harness.settings(max_body_bytes=1000)
    job = await harness.new_job()
    body = padded_body(job["resume_token"], 1000)
    assert len(body) == 1000
    json_body = {"Content-Type": "application/json"}
    assert (
        await harness.call("POST", "/api/job/resume", data=body, headers=AUTH | json_body)
    ).status == 204


async def test_a_resume_that_is_not_declared_json_is_refused(harness: Harness) -> None:
    """Rails parses params only from a JSON body it was told is JSON (seed 001's request sets
    the header): a gateway that dropped it would pass every test against a lax sandbox."""
    job = await harness.new_job()
    body = json.dumps({"token": job["resume_token"]}).encode()
    reply = await harness.call("POST", "/api/job/resume", data=body, headers=AUTH)
    assert reply.status == 400
    assert (await harness.job_state(job["job_id"]))["resume_count"] == 0


async def test_deprecated_and_legacy_list_filters_are_honoured(harness: Harness) -> None:
    """failed=true (seed 001, deprecated) and rerun_jobs=true (seed 002) were ignored."""
    for _ in range(2):
        await harness.new_job(recipe_id=9)
    failed = await harness.new_job(recipe_id=9)
    await harness.control("PATCH", f"/jobs/{failed['job_id']}", {"status": "failed"})
    listed = await harness.call("GET", "/api/recipes/9/jobs?failed=true", headers=AUTH)
    assert [j["id"] for j in listed.body["items"]] == [failed["job_id"]]
    reruns = await harness.call("GET", "/api/recipes/9/jobs?rerun_jobs=true", headers=AUTH)
    assert reruns.body["items"] == []


async def test_a_managed_user_id_of_non_ascii_digits_is_404_not_500(harness: Harness) -> None:
    reply = await harness.call("GET", "/api/managed_users/%C2%B2/recipes/5/jobs", headers=AUTH)
    assert reply.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/recipes/" + "9" * 4301 + "/jobs",  # int() refuses more than 4,300 digits: 500
        "/api/recipes/" + "9" * 4301 + "/jobs/j-1",
        "/api/managed_users/" + "9" * 4301 + "/recipes/5/jobs",
        "/api/recipes/%D9%A5/jobs",  # an Arabic-Indic 5 was recipe 5
    ],
)
async def test_a_numeric_id_that_is_no_64_bit_integer_is_404(harness: Harness, path: str) -> None:
    assert (await harness.call("GET", path, headers=AUTH)).status == 404
    repeat = path.replace("/jobs/j-1", "/jobs").replace("/jobs", "/repeat_jobs")
    if path.startswith("/api/recipes/"):
        assert (await harness.call("POST", repeat, headers=AUTH, json={})).status == 404


async def test_repeat_jobs_not_declared_json_is_400_as_resume_is(harness: Harness) -> None:
    job = await harness.new_job(recipe_id=5)
    body = json.dumps({"job_ids": [job["job_id"]]})
    headers = {**AUTH, "Content-Type": "text/plain"}
    reply = await harness.call("POST", "/api/recipes/5/repeat_jobs", headers=headers, data=body)
    assert reply.status == 400
    assert reply.body == {"message": "param is missing or the value is empty or invalid: job_ids"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/settings", '{"window_s": Infinity}'),
        ("/settings", '{"resume_running_s": 1e400}'),
        ("/faults", '{"random": {"latency_s": 3601}}'),
        ("/faults", '{"scripted": [{"kind": "latency", "seconds": Infinity}]}'),
    ],
)
async def test_control_values_that_are_not_finite_or_too_long_are_refused(
    harness: Harness, path: str, body: str
) -> None:
    """``Infinity`` was taken: the next 429 answered 500, or a latency held its handler for
    ever."""
    headers = {"Content-Type": "application/json"}
    method = "PUT"
    reply = await harness.call(method, "/_sandbox" + path, headers=headers, data=body)
    assert reply.status in (400, 422), reply.body


async def test_body_over_the_limit_gets_413_with_or_without_content_length(
    harness: Harness,
) -> None:
    await harness.settings(max_body_bytes=1000)
    job = await harness.new_job()
    body = padded_body(job["resume_token"], 1001)
    declared = await harness.call("POST", "/api/job/resume", data=body)
    assert declared.status == 413
    assert "message" in declared.body

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    streamed = await harness.call("POST", "/api/job/resume", data=chunks())
    assert streamed.status == 413
    assert (await harness.job_state(job["job_id"]))["status"] == "pending"


@pytest.mark.parametrize(
    "template",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"data": {}}',
        b'{"token": 5}',
        b'{"token": ""}',
        b'{"token": "TOKEN", "data": [1]}',
        b'{"token": "TOKEN", "data": "text"}',
        b'{"token": "TOKEN", "data": 3}',
    ],
)
async def test_invalid_resume_bodies_get_400(harness: Harness, template: bytes) -> None:
    job = await harness.new_job()
    body = template.replace(b"TOKEN", job["resume_token"].encode())
    json_body = AUTH | {"Content-Type": "application/json"}  # or the header alone refuses it
    reply = await harness.call("POST", "/api/job/resume", data=body, headers=json_body)
    assert reply.status == 400
    assert isinstance(reply.body["message"], str)
    assert (await harness.job_state(job["job_id"]))["status"] == "pending"


# --- rate limit ----------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_and_rejections_do_not_count(
    harness: Harness,
) -> None:
    await harness.settings(rate_limit_per_minute=3)

    async def status_at(offset_s: float) -> Reply:
        harness.clock.now = T0 + offset_s
        return await harness.call("GET", "/api/recipes/1/jobs")

    assert [(await status_at(t)).status for t in (0, 10, 20)] == [200, 200, 200]
    rejected = await status_at(30)
    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "30"
    assert "message" in rejected.body
    assert (await status_at(59.5)).headers["Retry-After"] == "1"
    # Had the rejections at 30 and 59.5 taken slots, this would still be refused.
    assert (await status_at(60)).status == 200
    refused = await status_at(60)
    assert (refused.status, refused.headers["Retry-After"]) == (429, "10")
    assert (await status_at(70)).status == 200


async def test_rate_limit_is_per_credential_and_shared_by_endpoints(harness: Harness) -> None:
    await harness.settings(rate_limit_per_minute=2)
    job = await harness.new_job()
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 200
    assert (await harness.call("GET", f"/api/recipes/1/jobs/{job['job_id']}")).status == 200
    assert (await harness.resume(job["resume_token"])).status == 429
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert (await harness.resume(job["resume_token"], headers=other)).status == 204
    assert (await harness.call("GET", "/api/recipes/1/jobs", headers=LEGACY_AUTH)).status == 200


async def test_request_log_proves_the_window_is_never_exceeded(harness: Harness) -> None:
    await harness.settings(rate_limit_per_minute=3)
    statuses = []
    for _ in range(30):
        harness.clock.advance(7.0)
        statuses.append((await harness.call("GET", "/api/recipes/1/jobs")).status)
    assert statuses.count(429) > 0
    log = await harness.requests_log()
    assert len(log) == 30
    assert {entry["credential_id"] for entry in log} == {
        hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    }
    admitted = sorted(entry["at"] for entry in log if entry["counted"])
    assert all(entry["status"] == 429 for entry in log if not entry["counted"])
    for start in admitted:
        assert sum(start <= at < start + 60.0 for at in admitted) <= 3
    assert len(admitted) == statuses.count(200)


# --- list and get --------------------------------------------------------------------------


async def make_recipe_history(harness: Harness) -> list[str]:
    """Four jobs of recipe 7, oldest first: succeeded, pending, failed, pending."""
    ids = []
    for _ in range(4):
        harness.clock.advance(1.0)
        ids.append((await harness.new_job(recipe_id=7))["job_id"])
    first = await harness.job_state(ids[0])
    assert (await harness.resume(first["resume_token"], {"ok": True})).status == 204
    await harness.control("PATCH", f"/jobs/{ids[2]}", {"status": "failed", "error": "boom"})
    await harness.new_job(recipe_id=8)
    await harness.new_job(recipe_id=7, managed_user_id=99)
    return ids


async def test_list_is_newest_first_with_counts_and_item_fields(harness: Harness) -> None:
    ids = await make_recipe_history(harness)
    reply = await harness.call("GET", "/api/recipes/7/jobs")
    assert reply.status == 200
    assert [item["id"] for item in reply.body["items"]] == ids[::-1]
    counts = {k: v for k, v in reply.body.items() if k != "items"}
    assert counts == {
        "job_succeeded_count": 1,
        "job_failed_count": 1,
        "job_count": 4,
        "job_scope_count": 4,
    }
    failed = reply.body["items"][1]
    assert (failed["status"], failed["is_error"], failed["error"]) == ("failed", True, "boom")
    assert failed["error_parts"]["message"] == "boom"
    succeeded = reply.body["items"][3]
    assert succeeded["completed_at"].endswith("Z")
    assert succeeded["master_job_id"] == succeeded["id"]
    assert succeeded["recipe_id"] == 7
    expected = {"id", "completed_at", "started_at", "title", "is_poll_error", "error", "is_error"}
    assert expected <= set(succeeded)
    pending = reply.body["items"][0]
    assert (pending["status"], pending["completed_at"]) == ("pending", None)


@pytest.mark.parametrize(
    ("status", "positions"),
    [("pending", [3, 1]), ("succeeded", [0]), ("failed", [2])],
)
async def test_list_filters_by_status(harness: Harness, status: str, positions: list[int]) -> None:
    ids = await make_recipe_history(harness)
    reply = await harness.call("GET", f"/api/recipes/7/jobs?status={status}")
    assert [item["id"] for item in reply.body["items"]] == [ids[i] for i in positions]
    assert reply.body["job_scope_count"] == len(positions)
    assert reply.body["job_count"] == 4


async def test_list_pages_backwards_and_forwards_from_an_offset(harness: Harness) -> None:
    ids = await make_recipe_history(harness)
    await harness.settings(page_size=2)
    first = await harness.call("GET", "/api/recipes/7/jobs")
    assert [item["id"] for item in first.body["items"]] == [ids[3], ids[2]]
    older = await harness.call("GET", f"/api/recipes/7/jobs?offset_job_id={ids[2]}&prev=false")
    assert [item["id"] for item in older.body["items"]] == [ids[1], ids[0]]
    newer = await harness.call("GET", f"/api/recipes/7/jobs?offset_job_id={ids[0]}&prev=true")
    assert [item["id"] for item in newer.body["items"]] == [ids[2], ids[1]]
    newest = await harness.call("GET", f"/api/recipes/7/jobs?offset_job_id={ids[2]}&prev=true")
    assert [item["id"] for item in newest.body["items"]] == [ids[3]]


async def test_list_rerun_only_returns_repeats(harness: Harness) -> None:
    ids = await make_recipe_history(harness)
    repeated = await harness.repeat(7, {"job_ids": [ids[0]]})
    repeat_id = repeated.body["results"][0]["job"]["id"]
    reply = await harness.call("GET", "/api/recipes/7/jobs?rerun_only=true")
    assert [item["id"] for item in reply.body["items"]] == [repeat_id]
    assert reply.body["items"][0]["master_job_id"] == ids[0]


@pytest.mark.parametrize(
    "query", ["status=running", "prev=maybe", "rerun_only=yes", "offset_job_id=j-nothere-000000"]
)
async def test_list_rejects_invalid_query_parameters(harness: Harness, query: str) -> None:
    await make_recipe_history(harness)
    reply = await harness.call("GET", f"/api/recipes/7/jobs?{query}")
    assert reply.status == 400
    assert "message" in reply.body


async def test_get_returns_the_single_job_shape(harness: Harness) -> None:
    ids = await make_recipe_history(harness)
    reply = await harness.call("GET", f"/api/recipes/7/jobs/{ids[0]}")
    assert reply.status == 200
    job = reply.body
    assert (job["id"], job["handle"], job["recipe_id"]) == (ids[0], ids[0], 7)
    assert (job["status"], job["lines"], job["is_repeat"], job["is_test"]) == (
        "succeeded",
        [],
        False,
        False,
    )
    assert job["master_job_id"] == job["master_job_handle"] == ids[0]
    for field in ("calling_job_handle", "is_test_case_job", "started_at", "completed_at"):
        assert field in job


@pytest.mark.parametrize(
    "path",
    ["/api/recipes/8/jobs/{job}", "/api/recipes/7/jobs/j-AAAAAAAA-BBBBBB", "/api/recipes/x/jobs"],
)
async def test_get_through_the_wrong_recipe_or_unknown_id_is_404(
    harness: Harness, path: str
) -> None:
    ids = await make_recipe_history(harness)
    reply = await harness.call("GET", path.format(job=ids[0]))
    assert reply.status == 404
    assert reply.body == {"message": "Not found"}


async def test_managed_user_jobs_by_numeric_and_external_id(harness: Harness) -> None:
    job = await harness.new_job(recipe_id=28904, managed_user_id=23456, external_id="customer/42")
    await harness.new_job(recipe_id=28904)  # the workspace's own job, not the customer's
    for owner in ("23456", "Ecustomer%2F42"):
        base = f"/api/managed_users/{owner}/recipes/28904/jobs"
        listed = await harness.call("GET", base)
        assert [item["id"] for item in listed.body["items"]] == [job["job_id"]]
        got = await harness.call("GET", f"{base}/{job['job_id']}")
        assert (got.status, got.body["id"]) == (200, job["job_id"])


async def test_external_id_alone_identifies_a_managed_user(harness: Harness) -> None:
    job = await harness.new_job(recipe_id=3, external_id="A2300")
    got = await harness.call("GET", f"/api/managed_users/EA2300/recipes/3/jobs/{job['job_id']}")
    assert got.status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/managed_users/23457/recipes/28904/jobs/{job}",
        "/api/managed_users/Ecustomer%2F43/recipes/28904/jobs/{job}",
        "/api/managed_users/Xcustomer/recipes/28904/jobs/{job}",
        "/api/managed_users/23456/recipes/28905/jobs/{job}",
        "/api/recipes/28904/jobs/{job}",
    ],
)
async def test_managed_user_job_through_the_wrong_owner_is_404(harness: Harness, path: str) -> None:
    job = await harness.new_job(recipe_id=28904, managed_user_id=23456, external_id="customer/42")
    reply = await harness.call("GET", path.format(job=job["job_id"]))
    assert reply.status == 404
    assert reply.body == {"message": "Not found"}


async def test_workspace_job_is_not_visible_through_a_managed_user(harness: Harness) -> None:
    job = await harness.new_job(recipe_id=4)
    reply = await harness.call("GET", f"/api/managed_users/1/recipes/4/jobs/{job['job_id']}")
    assert reply.status == 404
    listed = await harness.call("GET", "/api/managed_users/1/recipes/4/jobs")
    assert (listed.status, listed.body["items"]) == (200, [])


# --- repeat_jobs ---------------------------------------------------------------------------


async def test_repeat_jobs_reports_every_result_type(harness: Harness) -> None:
    master = (await harness.new_job(recipe_id=9))["job_id"]
    expired = (await harness.new_job(recipe_id=9))["job_id"]
    elsewhere = (await harness.new_job(recipe_id=10))["job_id"]
    await harness.control("PATCH", f"/jobs/{expired}", {"trigger_data_expired": True})
    first = await harness.repeat(9, {"job_ids": [master]})
    repeat_id = first.body["results"][0]["job"]["id"]
    missing = "j-AAAAAAAA-BBBBBB"
    reply = await harness.repeat(9, {"job_ids": [master, missing, repeat_id, expired, elsewhere]})
    assert reply.status == 200
    results = reply.body["results"]
    assert [r["requested_job_id"] for r in results] == [
        master,
        missing,
        repeat_id,
        expired,
        elsewhere,
    ]
    assert results[0]["status"] == "enqueued"
    assert JOB_ID.match(results[0]["job"]["id"])
    assert [r["error"]["type_id"] for r in results[1:]] == [
        "err.item.not_found",
        "err.job.repeat.invalid_id",
        "err.job.repeat.trigger_data_unavailable.expired",
        "err.item.not_found",
    ]
    assert results[2]["error"]["message"] == f"Non-master job handle specified: {repeat_id}"
    assert all(r["status"] == "failed" for r in results[1:])
    summary = {"total_requested": 5, "total_enqueued": 1, "total_failed": 4}
    assert reply.body["summary"] == summary


async def test_an_enqueued_repeat_is_a_new_repeat_job_of_the_master(harness: Harness) -> None:
    master = (await harness.new_job(recipe_id=9))["job_id"]
    reply = await harness.repeat(9, {"job_ids": [master]})
    repeat_id = reply.body["results"][0]["job"]["id"]
    assert repeat_id != master
    got = await harness.call("GET", f"/api/recipes/9/jobs/{repeat_id}")
    assert (got.body["is_repeat"], got.body["master_job_id"]) == (True, master)
    assert (await harness.job_state(master))["repeat_count"] == 1


async def test_a_job_repeated_100_times_cannot_be_repeated_again(harness: Harness) -> None:
    master = (await harness.new_job(recipe_id=9))["job_id"]
    for _ in range(100):
        result = (await harness.repeat(9, {"job_ids": [master]})).body["results"][0]
        assert result["status"] == "enqueued"
    over = (await harness.repeat(9, {"job_ids": [master]})).body["results"][0]
    assert (over["status"], over["error"]["type_id"]) == ("failed", "err.job.repeat.limit_exceeded")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"job_ids": [f"j-{i:08d}-AAAAAA" for i in range(26)]}, None),
        ({"job_ids": []}, JOB_IDS_INVALID),
        ({}, JOB_IDS_INVALID),
        ({"job_ids": "j-AAAAAAAA-BBBBBB"}, JOB_IDS_INVALID),
        ({"job_ids": [1, 2]}, JOB_IDS_INVALID),
        ([], JOB_IDS_INVALID),
    ],
)
async def test_repeat_jobs_rejects_invalid_requests(
    harness: Harness, body: Any, expected: str | None
) -> None:
    reply = await harness.repeat(9, body)
    assert reply.status == 400
    message = expected or "Maximum 25 jobs can be repeated in a single request. Received 26."
    assert reply.body == {"message": message}


async def test_repeat_jobs_rejects_duplicates(harness: Harness) -> None:
    master = (await harness.new_job(recipe_id=9))["job_id"]
    reply = await harness.repeat(9, {"job_ids": [master, master]})
    assert reply.status == 400
    assert master in reply.body["message"]
    assert (await harness.job_state(master))["repeat_count"] == 0


async def test_repeat_jobs_allows_one_request_per_second_outside_the_minute_window(
    harness: Harness,
) -> None:
    await harness.settings(rate_limit_per_minute=1)
    assert (await harness.call("GET", "/api/recipes/9/jobs")).status == 200
    master = (await harness.new_job(recipe_id=9))["job_id"]
    assert (await harness.repeat(9, {"job_ids": [master]})).status == 200
    path = "/api/recipes/9/repeat_jobs"
    refused = await harness.call("POST", path, json={"job_ids": [master]})
    assert (refused.status, refused.headers["Retry-After"]) == (429, "1")
    harness.clock.advance(0.5)
    assert (await harness.call("POST", path, json={"job_ids": [master]})).status == 429
    harness.clock.advance(0.5)
    assert (await harness.call("POST", path, json={"job_ids": [master]})).status == 200
    assert (await harness.job_state(master))["repeat_count"] == 2


# --- faults --------------------------------------------------------------------------------


async def test_status_fault_answers_without_processing(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(
        scripted=[{"kind": "status"}, {"kind": "status", "status": 502, "count": 2}]
    )
    statuses = [(await harness.resume(job["resume_token"])).status for _ in range(4)]
    assert statuses == [503, 502, 502, 204]
    state = await harness.job_state(job["job_id"])
    assert (state["resume_count"], state["rejected_resumes"]) == (1, 0)


async def test_scripted_fault_applies_only_to_its_path_prefix(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(scripted=[{"kind": "status", "path_prefix": "/api/recipes/"}])
    assert (await harness.resume(job["resume_token"])).status == 204
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 503
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 200


async def test_latency_fault_resumes_the_job_though_the_client_gave_up(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(scripted=[{"kind": "latency", "seconds": 0.5}])
    with pytest.raises(TimeoutError):
        await harness.resume(job["resume_token"], {"late": True}, timeout_s=0.1)
    state = await wait_for_status(harness, job["job_id"], "succeeded")
    assert (state["resume_count"], state["resumed_data"]) == (1, {"late": True})
    deadline = time.monotonic() + 5
    while not (log := await harness.requests_log()):  # written once the late answer is sent
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert (log[-1]["fault"], log[-1]["status"], log[-1]["counted"]) == ("latency", 204, True)


async def test_drop_fault_closes_the_connection_without_processing(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(scripted=[{"kind": "drop"}])
    with pytest.raises(aiohttp.ClientConnectionError):
        await harness.resume(job["resume_token"])
    assert (await harness.job_state(job["job_id"]))["status"] == "pending"
    entry = (await harness.requests_log())[-1]
    assert (entry["fault"], entry["status"], entry["processed_status"]) == ("drop", None, None)
    assert (await harness.resume(job["resume_token"])).status == 204


async def test_processed_then_error_resumes_once_and_answers_500(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(scripted=[{"kind": "processed_then_error"}])
    assert (await harness.resume(job["resume_token"], {"v": 1})).status == 500
    state = await harness.job_state(job["job_id"])
    assert (state["status"], state["resume_count"]) == ("succeeded", 1)
    assert (await harness.resume(job["resume_token"], {"v": 1})).status == 409
    assert (await harness.job_state(job["job_id"]))["resume_count"] == 1
    entry = (await harness.requests_log())[-2]
    assert (entry["fault"], entry["status"], entry["processed_status"]) == (
        "processed_then_error",
        500,
        204,
    )


async def test_processed_then_drop_resumes_and_drops_the_answer(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.faults(scripted=[{"kind": "processed_then_drop"}])
    with pytest.raises(aiohttp.ClientConnectionError):
        await harness.resume(job["resume_token"], {"v": 2})
    state = await harness.job_state(job["job_id"])
    assert (state["status"], state["resume_count"], state["resumed_data"]) == (
        "succeeded",
        1,
        {"v": 2},
    )
    entry = (await harness.requests_log())[-1]
    assert (entry["status"], entry["processed_status"]) == (None, 204)


async def observe_random_faults(harness: Harness, plan: dict[str, Any]) -> list[str]:
    await harness.faults(random=plan)
    outcomes = []
    for _ in range(40):
        try:
            outcomes.append(str((await harness.resume("unknown-token")).status))
        except aiohttp.ClientConnectionError:
            outcomes.append("drop")
    return outcomes


async def test_random_faults_follow_the_seed(harness: Harness) -> None:
    plan = {"error_rate": 0.3, "drop_rate": 0.2, "latency_s": 0.01, "seed": 7}
    first = await observe_random_faults(harness, plan)
    again = await observe_random_faults(harness, plan)
    other = await observe_random_faults(harness, plan | {"seed": 8})
    assert first == again
    assert first != other
    assert {"404", "503", "drop"} <= set(first)
    logged = [entry["fault"] for entry in (await harness.requests_log())[:40]]
    assert logged.count("drop") == first.count("drop")
    assert logged.count("status") == first.count("503")


async def test_random_faults_can_process_then_answer_500(harness: Harness) -> None:
    """The case that matters most to exactly-once: it was only ever scripted."""
    await harness.faults(random={"processed_error_rate": 1.0, "seed": 1})
    job = await harness.new_job()
    assert (await harness.resume(job["resume_token"], {"n": 1})).status == 500
    state = await harness.job_state(job["job_id"])
    assert (state["status"], state["resume_count"]) == ("succeeded", 1)


async def test_fault_plan_can_be_read_and_cleared(harness: Harness) -> None:
    await harness.faults(scripted=[{"kind": "status", "count": 3}])
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 503
    plan = await harness.control("GET", "/faults")
    assert plan["scripted"][0]["count"] == 2
    await harness.control("DELETE", "/faults")
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 200
    invalid = await harness.call("PUT", "/_sandbox/faults", headers={}, json={"scripted": [{}]})
    assert invalid.status == 422


# --- control API ---------------------------------------------------------------------------


async def test_request_log_records_every_jobs_api_request(harness: Harness) -> None:
    job = await harness.new_job()
    harness.clock.advance(5.0)
    await harness.resume(job["resume_token"])
    await harness.call("GET", "/api/recipes/1/jobs", headers={})
    await harness.call("GET", "/api/recipes/1/jobs", headers=LEGACY_AUTH)
    log = await harness.requests_log()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/api/job/resume", 204),
        ("GET", "/api/recipes/1/jobs", 401),
        ("GET", "/api/recipes/1/jobs", 200),
    ]
    assert log[0]["at"] == T0 + 5.0
    assert log[0]["credential_id"] == hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert (log[1]["credential_id"], log[1]["counted"]) == (None, False)
    assert log[2]["credential_id"] == hashlib.sha256(LEGACY_TOKEN.encode()).hexdigest()[:8]
    assert all(job["resume_token"] not in json.dumps(entry) for entry in log)


async def test_settings_hide_credentials_and_reject_invalid_values(harness: Harness) -> None:
    shown = await harness.control("GET", "/settings")
    assert TOKEN not in json.dumps(shown)
    assert len(shown["api_token_ids"]) == 2
    for bad in ({"rate_limit_per_minute": 0}, {"no_such_setting": 1}):
        reply = await harness.call("PUT", "/_sandbox/settings", headers={}, json=bad)
        assert reply.status == 422


async def test_settings_can_revoke_a_credential(harness: Harness) -> None:
    await harness.settings(api_tokens=[OTHER_TOKEN])
    assert (await harness.call("GET", "/api/recipes/1/jobs")).status == 401


async def test_reset_forgets_everything_and_restores_settings(harness: Harness) -> None:
    job = await harness.new_job()
    await harness.settings(rate_limit_per_minute=1)
    await harness.resume(job["resume_token"])
    await harness.faults(scripted=[{"kind": "drop"}])
    await harness.control("POST", "/reset")
    stats = await harness.control("GET", "/stats")
    assert (stats["jobs_total"], stats["requests_total"]) == (0, 0)
    assert await harness.requests_log() == []
    assert (await harness.control("GET", "/settings"))["rate_limit_per_minute"] == 10_000
    assert (await harness.resume(job["resume_token"])).status == 404


async def test_stats_count_jobs_resumes_and_requests(harness: Harness) -> None:
    jobs = [await harness.new_job() for _ in range(3)]
    await harness.resume(jobs[0]["resume_token"])
    await harness.resume(jobs[0]["resume_token"])
    await harness.resume(jobs[1]["resume_token"])
    stats = await harness.control("GET", "/stats")
    assert stats["jobs_total"] == 3
    assert stats["pending_jobs"] == 1
    assert (stats["resumed_jobs"], stats["resumes_total"], stats["max_resume_count"]) == (2, 2, 1)
    assert stats["requests_total"] == 3
    assert stats["requests_by_status"] == {"204": 2, "409": 1}


async def test_unknown_routes_answer_json_404(harness: Harness) -> None:
    reply = await harness.call("GET", "/api/nothing-here")
    assert (reply.status, reply.body) == (404, {"message": "Not found"})
    wrong_method = await harness.call("DELETE", "/api/job/resume")
    assert wrong_method.status == 405
    assert "message" in wrong_method.body

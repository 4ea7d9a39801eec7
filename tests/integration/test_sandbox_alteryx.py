"""Integration tests of the Alteryx Server sandbox over real HTTP on loopback.

The sandbox's clock is a fake one the tests move, so lifecycles and token expiry are exercised
in milliseconds. Every HTTP call is bounded by the session timeout, every wait by asyncio.timeout.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.alteryx import AlteryxSandbox, AlteryxSandboxSettings, create_app, serve
from tests.integration.sandbox_harness import (
    T0,
    FakeClock,
    Reply,
    SandboxClient,
    raw_status,
    sandbox_process,
    served,
    serving,
)

CLIENT_ID = "alteryx-client"
CLIENT_SECRET = "alteryx-secret-0123"
JOBS = "/webapi/v3/jobs"
NOT_CANCELLABLE = "This job is not in 'Queued' or 'Running' state."
ALTERYX_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DENIED = {"message": "Authorization has been denied for this request."}


class Harness(SandboxClient):
    async def new_job(self, **script: Any) -> str:
        created: dict[str, Any] = await self.control("POST", "/jobs", script)
        return str(created["job_id"])

    async def request_token(
        self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET, **form: str
    ) -> Reply:
        return await self.call(
            "POST",
            "/webapi/oauth2/token",
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
            data={"grant_type": "client_credentials", **form},
        )

    async def bearer(self) -> dict[str, str]:
        reply = await self.request_token()
        assert reply.status == 200, reply.body
        return {"Authorization": f"Bearer {reply.body['access_token']}"}

    async def get_job(self, job_id: str, query: str = "?includeMessages=true") -> Reply:
        return await self.call("GET", f"{JOBS}/{job_id}{query}", headers=await self.bearer())

    async def status_at(self, job_id: str, offset_s: float) -> str:
        self.clock.now = T0 + offset_s
        reply = await self.get_job(job_id)
        assert reply.status == 200, reply.body
        return str(reply.body["status"])

    async def cancel(self, job_id: str) -> Reply:
        return await self.call("DELETE", f"{JOBS}/{job_id}", headers=await self.bearer())


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    sandbox = AlteryxSandbox(
        AlteryxSandboxSettings(clients={CLIENT_ID: CLIENT_SECRET}), clock=clock
    )
    async with served(create_app(sandbox)) as (url, http):
        yield Harness(url, http, clock)


def short_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


# --- serving -------------------------------------------------------------------------------


async def test_a_token_form_that_is_not_utf8_is_400_not_500(harness: Harness) -> None:
    form = b"grant_type=client_credentials&client_id=a&client_secret=\xed\xa0\x80"
    request = (
        b"POST /webapi/oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
    )
    assert await raw_status(harness.url, request % (len(form), form)) == 400


async def test_serve_announces_its_url_without_secrets_and_runs_until_cancelled() -> None:
    async with serving(serve, "127.0.0.1", 0, {CLIENT_ID: CLIENT_SECRET}) as lines:
        url = lines[0].rsplit(" ", 1)[-1]
        auth = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
        form = {"grant_type": "client_credentials"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/webapi/oauth2/token", headers=auth, data=form) as r,
        ):
            assert r.status == 200
    assert any("/webapi/v3/jobs/{jobId}" in line for line in lines)
    assert any(CLIENT_ID in line for line in lines)
    assert all(CLIENT_SECRET not in line for line in lines)


@pytest.mark.e2e
async def test_cli_runs_the_alteryx_sandbox_with_the_given_client() -> None:
    args = ["--port", "0", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
    async with sandbox_process("alteryx", *args) as first:
        assert first.startswith("Alteryx Server sandbox listening on http://127.0.0.1:")
        url = first.split()[-1]
        auth = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/webapi/oauth2/token",
                headers=auth,
                data={"grant_type": "client_credentials"},
            ) as r,
        ):
            assert r.status == 200


# --- OAuth2 token endpoint -----------------------------------------------------------------


async def test_token_for_valid_basic_credentials_is_a_bearer_token(harness: Harness) -> None:
    await harness.control("PUT", "/settings", {"token_expires_in_s": 900})
    reply = await harness.request_token()
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "token_type", "expires_in"}
    assert (reply.body["token_type"], reply.body["expires_in"]) == ("bearer", 900)
    assert len(reply.body["access_token"]) >= 32
    assert reply.headers["Cache-Control"] == "no-store"
    job_id = await harness.new_job()
    bearer = {"Authorization": f"Bearer {reply.body['access_token']}"}
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=bearer)).status == 200


async def test_a_secret_beyond_ascii_is_read_as_utf8_as_clients_send_it() -> None:
    """Read as Latin-1, a secret with an "ä" never matched what the gateway's client sent."""
    sandbox = AlteryxSandbox(AlteryxSandboxSettings(clients={CLIENT_ID: "pässwörd-42"}))
    async with served(create_app(sandbox)) as (url, http):
        auth = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, "pässwörd-42")}
        form = {"grant_type": "client_credentials"}
        async with http.post(url + "/webapi/oauth2/token", headers=auth, data=form) as r:
            assert r.status == 200


async def test_token_accepts_client_credentials_in_the_form_body(harness: Harness) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    reply = await harness.call("POST", "/webapi/oauth2/token", data=form)
    assert reply.status == 200
    assert reply.body["token_type"] == "bearer"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [(CLIENT_ID, "wrong-secret"), ("unknown-client", CLIENT_SECRET), (CLIENT_ID, "")],
)
async def test_token_for_wrong_credentials_gets_401_invalid_client(
    harness: Harness, client_id: str, secret: str
) -> None:
    reply = await harness.request_token(client_id, secret)
    assert reply.status == 401
    assert reply.body["error"] == "invalid_client"
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert (await harness.control("GET", "/stats"))["tokens_issued_total"] == 0


async def test_token_without_client_credentials_gets_401(harness: Harness) -> None:
    form = {"grant_type": "client_credentials"}
    reply = await harness.call("POST", "/webapi/oauth2/token", data=form)
    assert (reply.status, reply.body["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    ("grant_type", "error"),
    [("password", "unsupported_grant_type"), ("", "invalid_request")],
)
async def test_token_for_another_or_no_grant_type_gets_400(
    harness: Harness, grant_type: str, error: str
) -> None:
    reply = await harness.request_token(grant_type=grant_type)
    assert (reply.status, reply.body["error"]) == (400, error)


async def test_expired_token_gets_401_and_a_refreshed_token_works(harness: Harness) -> None:
    await harness.control("PUT", "/settings", {"token_expires_in_s": 60})
    job_id = await harness.new_job()
    old = await harness.bearer()
    harness.clock.advance(59.9)
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=old)).status == 200
    harness.clock.advance(0.1)
    expired = await harness.call("GET", f"{JOBS}/{job_id}", headers=old)
    assert (expired.status, expired.body) == (401, DENIED)
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    assert "expired" in expired.headers["WWW-Authenticate"]
    fresh = await harness.bearer()
    assert fresh != old
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=fresh)).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {CLIENT_ID}:{CLIENT_SECRET}"},
    ],
)
async def test_missing_or_invalid_bearer_gets_401(
    harness: Harness, headers: dict[str, str]
) -> None:
    job_id = await harness.new_job()
    for method, path in (("GET", f"{JOBS}/{job_id}"), ("DELETE", f"{JOBS}/{job_id}")):
        reply = await harness.call(method, path, headers=headers)
        assert (reply.status, reply.body) == (401, DENIED)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await harness.job_state(job_id))["cancelled"] is False


async def test_revoked_tokens_get_401_until_the_client_fetches_a_new_one(harness: Harness) -> None:
    job_id = await harness.new_job()
    old = await harness.bearer()
    assert (await harness.control("DELETE", "/tokens")) == {"revoked": 1}
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=old)).status == 401
    assert (
        await harness.call("GET", f"{JOBS}/{job_id}", headers=await harness.bearer())
    ).status == 200


async def test_settings_change_credentials_and_show_no_secret(harness: Harness) -> None:
    job_id = await harness.new_job()
    before = await harness.bearer()
    shown = await harness.control("PUT", "/settings", {"clients": {"rotated": "new-secret"}})
    assert shown == {
        "client_ids": ["rotated"],
        "token_expires_in_s": 3600,
        "request_log_max": 10_000,
    }
    assert "new-secret" not in json.dumps(await harness.control("GET", "/settings"))
    assert (await harness.request_token()).status == 401
    assert (await harness.request_token("rotated", "new-secret")).status == 200
    # Tokens issued before the change stay valid until they expire, as with a real server.
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=before)).status == 200
    invalid = await harness.call("PUT", "/_sandbox/settings", json={"token_expires_in_s": 0})
    assert invalid.status == 422


# --- job lifecycle -------------------------------------------------------------------------


async def test_job_goes_queued_initializing_running_complete_as_the_clock_moves(
    harness: Harness,
) -> None:
    job_id = await harness.new_job(queued_s=5, initializing_s=2, running_s=10)
    timeline = [(0, "Queued"), (4.9, "Queued"), (5, "Initializing"), (6.9, "Initializing")]
    timeline += [(7, "Running"), (14.9, "Running"), (15, "Complete"), (500, "Complete")]
    assert [await harness.status_at(job_id, t) for t, _ in timeline] == [s for _, s in timeline]


async def test_disposition_reads_none_until_complete_then_the_scripted_one(
    harness: Harness,
) -> None:
    job_id = await harness.new_job(queued_s=1, running_s=1, disposition="Error")
    harness.clock.now = T0 + 1.5
    assert (await harness.get_job(job_id)).body["disposition"] == "None"
    harness.clock.now = T0 + 2
    assert (await harness.get_job(job_id)).body["disposition"] == "Error"


async def test_complete_job_has_the_seed_shape_with_scripted_outputs_and_messages(
    harness: Harness,
) -> None:
    outputs = [{"id": "out-1", "availableFormats": ["Csv", "Raw"], "fileName": "report.csv"}]
    messages = [{"status": 2, "text": "Tool 4: 12 records truncated", "toolId": 4}]
    job_id = await harness.new_job(
        queued_s=0, running_s=3, outputs=outputs, messages=messages, app_id="app-42"
    )
    harness.clock.advance(3)
    job = (await harness.get_job(job_id)).body
    assert job == {
        "id": job_id,
        "appId": "app-42",
        "createDateTime": "2023-11-14T22:13:20.000Z",
        "status": "Complete",
        "disposition": "Success",
        "outputs": outputs,
        "messages": messages,
        "priority": "Default",
        "workerTag": "",
        "runWithE2": True,
    }
    assert ALTERYX_ID.match(job_id)
    assert ISO_MILLIS.match(job["createDateTime"])


async def test_outputs_and_messages_stay_empty_until_the_job_is_complete(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=1, running_s=2)
    for offset in (0, 1, 2.9):
        harness.clock.now = T0 + offset
        job = (await harness.get_job(job_id)).body
        assert (job["outputs"], job["messages"]) == ([], [])
    harness.clock.now = T0 + 3
    job = (await harness.get_job(job_id)).body
    assert len(job["outputs"]) == 1
    assert job["messages"][0]["status"] == 1


async def test_error_job_gets_a_default_error_message_and_no_outputs(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=0, disposition="Error")
    job = (await harness.get_job(job_id)).body
    assert (job["status"], job["disposition"], job["outputs"]) == ("Complete", "Error", [])
    assert [m["status"] for m in job["messages"]] == [3]


@pytest.mark.parametrize("spelling", ["Completed", "complete", "COMPLETE"])
async def test_status_spelling_variant_replaces_complete(harness: Harness, spelling: str) -> None:
    job_id = await harness.new_job(queued_s=1, running_s=1, status_spelling=spelling)
    assert await harness.status_at(job_id, 1) == "Running"
    assert await harness.status_at(job_id, 2) == spelling
    assert (await harness.job_state(job_id))["status"] == spelling


async def test_include_messages_false_returns_the_reduced_object(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=0)
    reduced = (await harness.get_job(job_id, "?includeMessages=false")).body
    assert "messages" not in reduced
    assert reduced["status"] == "Complete"
    for query in ("", "?includeMessages", "?includeMessages=true", "?includeMessages=TRUE"):
        full = (await harness.get_job(job_id, query)).body
        assert full["messages"] == reduced_messages(full)
        assert set(full) - set(reduced) == {"messages"}


def reduced_messages(job: dict[str, Any]) -> list[Any]:
    messages = job["messages"]
    assert isinstance(messages, list)
    assert len(messages) == 1
    return messages


async def test_invalid_include_messages_value_gets_400(harness: Harness) -> None:
    job_id = await harness.new_job()
    reply = await harness.get_job(job_id, "?includeMessages=maybe")
    assert reply.status == 400
    assert "includeMessages" in reply.body["message"]


async def test_messages_endpoint_lists_messages_once_complete(harness: Harness) -> None:
    messages = [{"status": 1, "text": "done", "toolId": -1}]
    job_id = await harness.new_job(queued_s=0, running_s=5, messages=messages)
    path = f"{JOBS}/{job_id}/messages"
    assert (await harness.call("GET", path, headers=await harness.bearer())).body == []
    harness.clock.advance(5)
    assert (await harness.call("GET", path, headers=await harness.bearer())).body == messages


async def test_jobs_answer_with_and_without_the_webapi_prefix(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=0)
    bearer = await harness.bearer()
    canonical = await harness.call("GET", f"/webapi/v3/jobs/{job_id}", headers=bearer)
    short = await harness.call("GET", f"/v3/jobs/{job_id}", headers=bearer)
    assert (canonical.status, short.status) == (200, 200)
    assert canonical.body == short.body


async def test_unknown_job_gets_404(harness: Harness) -> None:
    bearer = await harness.bearer()
    missing = "0123456789abcdef01234567"
    assert (await harness.call("GET", f"{JOBS}/{missing}", headers=bearer)).status == 404
    assert (await harness.call("DELETE", f"{JOBS}/{missing}", headers=bearer)).status == 404
    assert (await harness.call("GET", f"{JOBS}/{missing}/messages", headers=bearer)).status == 404


async def test_poll_count_counts_api_reads_only(harness: Harness) -> None:
    job_id = await harness.new_job()
    for _ in range(3):
        await harness.get_job(job_id)
    await harness.call("GET", f"{JOBS}/{job_id}")  # refused: no token
    await harness.job_state(job_id)
    assert (await harness.job_state(job_id))["poll_count"] == 3
    assert (await harness.control("GET", "/stats"))["polls_total"] == 3


@pytest.mark.parametrize(
    "script",
    [
        {"queued_s": -1},
        {"initializing_s": 5, "running_s": 2},
        {"disposition": ""},
        {"status_spelling": ""},
        {"no_such_field": 1},
        {"outputs": [{"fileName": "x", "bogus": True}]},
    ],
)
async def test_invalid_job_scripts_get_422(harness: Harness, script: dict[str, Any]) -> None:
    reply = await harness.call("POST", "/_sandbox/jobs", json=script)
    assert reply.status == 422
    assert reply.body["message"] == "Invalid request"


# --- cancel --------------------------------------------------------------------------------


async def test_delete_of_a_queued_job_deletes_it(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=10, running_s=10)
    reply = await harness.cancel(job_id)
    assert (reply.status, reply.body) == (200, {"message": "Deleted Successfully."})
    assert (await harness.get_job(job_id)).status == 404
    state = await harness.job_state(job_id)
    assert (state["cancelled"], state["deleted"], state["job"]) == (True, True, None)
    assert state["cancelled_at"] == T0


async def test_delete_of_a_running_job_cancels_it(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=1, running_s=10)
    harness.clock.advance(5)
    reply = await harness.cancel(job_id)
    assert (reply.status, reply.body) == (200, {"message": "Cancelled Successfully."})
    harness.clock.advance(1)
    job = (await harness.get_job(job_id)).body
    assert (job["status"], job["disposition"], job["outputs"]) == ("Complete", "Cancelled", [])
    harness.clock.advance(100)  # the script's own end does not undo the cancellation
    assert (await harness.get_job(job_id)).body["disposition"] == "Cancelled"
    state = await harness.job_state(job_id)
    assert (state["cancelled"], state["deleted"], state["finished_at"]) == (True, False, T0 + 5)


async def test_delete_of_a_complete_job_gets_400_not_in_queued_or_running_state(
    harness: Harness,
) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=1)
    harness.clock.advance(1)
    reply = await harness.cancel(job_id)
    assert (reply.status, reply.body) == (400, {"message": NOT_CANCELLABLE})
    state = await harness.job_state(job_id)
    assert (state["cancelled"], state["disposition"]) == (False, "Success")


async def test_delete_of_an_initializing_job_gets_400_as_the_seed_says(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, initializing_s=2, running_s=5)
    reply = await harness.cancel(job_id)
    assert (reply.status, reply.body) == (400, {"message": NOT_CANCELLABLE})


async def test_second_delete_of_a_cancelled_job_gets_400(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=5)
    assert (await harness.cancel(job_id)).status == 200
    reply = await harness.cancel(job_id)
    assert (reply.status, reply.body) == (400, {"message": NOT_CANCELLABLE})


# --- faults --------------------------------------------------------------------------------


async def test_status_fault_on_the_token_endpoint_then_a_token_is_issued(harness: Harness) -> None:
    await harness.faults(
        scripted=[{"kind": "status", "status": 502, "path_prefix": "/webapi/oauth2"}]
    )
    assert (await harness.request_token()).status == 502
    assert (await harness.request_token()).status == 200
    assert (await harness.control("GET", "/stats"))["tokens_issued_total"] == 1


async def test_drop_fault_on_a_job_read_closes_the_connection_without_a_poll(
    harness: Harness,
) -> None:
    job_id = await harness.new_job()
    bearer = await harness.bearer()
    # aiohttp retries an idempotent request once when the connection closes: drop both tries.
    await harness.faults(scripted=[{"kind": "drop", "count": 2, "path_prefix": JOBS}])
    with pytest.raises(aiohttp.ClientConnectionError):
        await harness.call("GET", f"{JOBS}/{job_id}", headers=bearer)
    dropped = [e for e in await harness.requests_log() if e["fault"] == "drop"]
    assert [(e["status"], e["processed_status"]) for e in dropped] == [(None, None)] * 2
    assert (await harness.job_state(job_id))["poll_count"] == 0
    await harness.control("DELETE", "/faults")
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=bearer)).status == 200


async def test_processed_then_error_cancels_the_job_and_a_retry_gets_400(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=10)
    bearer = await harness.bearer()
    await harness.faults(scripted=[{"kind": "processed_then_error"}])
    assert (await harness.call("DELETE", f"{JOBS}/{job_id}", headers=bearer)).status == 500
    assert (await harness.job_state(job_id))["cancelled"] is True
    retry = await harness.call("DELETE", f"{JOBS}/{job_id}", headers=bearer)
    assert (retry.status, retry.body) == (400, {"message": NOT_CANCELLABLE})


async def test_random_error_rate_of_one_fails_every_api_request(harness: Harness) -> None:
    await harness.faults(random={"error_rate": 1.0, "seed": 1})
    assert [(await harness.request_token()).status for _ in range(3)] == [503, 503, 503]
    await harness.control("DELETE", "/faults")
    assert (await harness.request_token()).status == 200


# --- request log, stats, reset -------------------------------------------------------------


async def test_request_log_records_api_requests_without_secrets(harness: Harness) -> None:
    job_id = await harness.new_job()
    harness.clock.advance(2)
    token = (await harness.request_token()).body["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    await harness.call("GET", f"{JOBS}/{job_id}?includeMessages=true", headers=bearer)
    await harness.call("DELETE", f"{JOBS}/{job_id}")
    log = await harness.requests_log()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/webapi/oauth2/token", 200),
        ("GET", f"{JOBS}/{job_id}", 200),
        ("DELETE", f"{JOBS}/{job_id}", 401),
    ]
    assert [e["credential_id"] for e in log] == [short_hash(CLIENT_ID), short_hash(token), None]
    assert log[0]["at"] == T0 + 2
    dumped = json.dumps(log)
    assert token not in dumped
    assert CLIENT_SECRET not in dumped


async def test_stats_count_jobs_tokens_and_requests(harness: Harness) -> None:
    done = await harness.new_job(queued_s=0, running_s=0)
    running = await harness.new_job(queued_s=0, running_s=9)
    await harness.get_job(done)
    await harness.cancel(running)
    await harness.request_token(secret="wrong")
    stats = await harness.control("GET", "/stats")
    assert (stats["jobs_total"], stats["complete_jobs"], stats["cancelled_jobs"]) == (2, 2, 1)
    assert (stats["polls_total"], stats["tokens_issued_total"]) == (1, 2)
    assert (stats["tokens_live"], stats["token_refusals_total"]) == (2, 1)
    assert stats["requests_by_status"] == {"200": 4, "401": 1}


async def test_reset_forgets_jobs_tokens_and_restores_settings(harness: Harness) -> None:
    job_id = await harness.new_job()
    bearer = await harness.bearer()
    await harness.control("PUT", "/settings", {"token_expires_in_s": 5})
    await harness.faults(scripted=[{"kind": "drop"}])
    await harness.control("POST", "/reset")
    assert (await harness.call("GET", f"{JOBS}/{job_id}", headers=bearer)).status == 401
    assert (await harness.get_job(job_id)).status == 404
    assert (await harness.control("GET", "/settings"))["token_expires_in_s"] == 3600
    assert (await harness.control("GET", "/jobs")) == []


async def test_unknown_routes_answer_json_404(harness: Harness) -> None:
    reply = await harness.call("GET", "/webapi/v3/nothing")
    assert (reply.status, reply.body) == (404, {"message": "Not found"})
    assert (await harness.call("GET", "/_sandbox/jobs/nope")).status == 404

"""The HTTP contract of DESIGN 5.1 over real HTTP: answers, problems, authentication."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from multidict import CIMultiDict

from gateway.errors import StoreError
from gateway.sandbox.workato_state import WorkatoSandbox
from tests.conftest import RunningGateway, SettingsFactory

Start = Any


@pytest.fixture
async def gw(make_settings: SettingsFactory, start_gateway: Start) -> RunningGateway:
    running: RunningGateway = await start_gateway(
        make_settings({"server": {"max_body_bytes": 4096}, "ingest": {"max_body_bytes": 4096}})
    )
    return running


async def test_register_then_repeat_then_conflict(gw: RunningGateway) -> None:
    body = {"key": "order-1", "resume_token": "tok-1", "metadata": {"order": 1}}
    status, created = await gw.post("/v1/waits", body)
    assert (status, created["outcome"], created["state"]) == (201, "created", "open")
    assert created["metadata"] == {"order": 1}
    status, again = await gw.post("/v1/waits", body)
    assert (status, again["outcome"]) == (200, "repeat")
    status, problem = await gw.post("/v1/waits", {**body, "resume_token": "tok-2"})
    assert status == 409
    assert problem["reason"] == "key_open_with_other_token"
    status, problem = await gw.post("/v1/waits", {**body, "metadata": {"order": 2}})
    assert status == 409
    assert problem["reason"] == "repeat_with_other_fields"


async def test_empty_metadata_stays_an_empty_object(
    gw: RunningGateway, workato: WorkatoSandbox
) -> None:
    """{} was stored as none and reached the action as null, where reading a member fails."""
    job = workato.create_job()
    body = {"key": "m", "resume_token": job.resume.token, "metadata": {}}
    status, created = await gw.post("/v1/waits", body)
    assert (status, created["metadata"]) == (201, {})
    assert (await gw.post("/v1/waits", {**body, "metadata": None}))[1]["outcome"] == "repeat"
    await gw.post("/v1/events", {"id": "e", "key": "m", "status": "succeeded"})
    for _ in range(100):
        if job.resume.data is not None:
            break
        await asyncio.sleep(0.05)
    assert job.resume.data is not None
    assert job.resume.data["metadata"] == {}


async def test_a_problem_naming_one_field_names_it_at_the_top_too(gw: RunningGateway) -> None:
    """``field`` was at the top for some refusals (expires_at in the past) and only inside
    ``errors`` for others (a missing member): one field, named both ways, always."""
    for body in (
        {"key": "k"},
        {"key": "k", "resume_token": "t", "expires_at": "2001-01-01T00:00:00Z"},
    ):
        status, problem = await gw.post("/v1/waits", body)
        assert status == 422
        assert [e["field"] for e in problem["errors"]] == [problem["field"]]


async def test_invalid_registration_names_the_field(gw: RunningGateway) -> None:
    async with gw.http.post(
        gw.url + "/v1/waits",
        json={"key": "", "resume_token": "t", "job": {"recipe_id": 1}},
        headers=gw.auth,
    ) as resp:
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"
        problem = await resp.json(content_type=None)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"key", "job.job_id"}
    assert problem["type"] == "/problems/invalid-input"


@pytest.mark.parametrize("managed_user_id", ["", " ", "E", "cust/9", "9a"])
async def test_a_managed_user_id_is_a_number_or_an_external_id(
    gw: RunningGateway, managed_user_id: str
) -> None:
    """Seed 000's forms only: anything else was stored and looked up in vain (and "" read as
    none, which skipped the tenant's own managed user)."""
    job = {"recipe_id": 7, "job_id": "j-1", "managed_user_id": managed_user_id}
    status, problem = await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "job": job})
    assert (status, [e["field"] for e in problem["errors"]]) == (422, ["job.managed_user_id"])


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"recipe_id": 7, "job_id": ".."}, "job.job_id"),
        ({"recipe_id": "..", "job_id": "j"}, "job.recipe_id"),
    ],
)
async def test_a_job_reference_that_is_a_dot_segment_is_refused(
    gw: RunningGateway, job: dict[str, Any], field: str
) -> None:
    """The reconcile's URL resolved it: /api/recipes/7/jobs/.. read /api/recipes/7/."""
    status, problem = await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "job": job})
    assert status == 422
    assert field in [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize("managed_user_id", ["901", "Ecust/9", "E 42"])
async def test_a_managed_user_id_in_either_form_is_taken(
    gw: RunningGateway, managed_user_id: str
) -> None:
    job = {"recipe_id": 7, "job_id": "j-1", "managed_user_id": managed_user_id}
    status, created = await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "job": job})
    assert (status, created["job"]["managed_user_id"]) == (201, managed_user_id)


async def test_nan_or_infinity_in_metadata_is_refused(gw: RunningGateway) -> None:
    """Not JSON: echoed in the resume request, Workato's parser would refuse it."""
    for number in (b"NaN", b"-Infinity"):
        body = b'{"key":"k","resume_token":"t","metadata":{"a":[{"b":%s}]}}' % number
        async with gw.http.post(gw.url + "/v1/waits", data=body, headers=gw.auth) as resp:
            assert resp.status == 422
            problem = await resp.json(content_type=None)
        assert [e["field"] for e in problem["errors"]] == ["metadata"]
        assert "NaN and Infinity" in problem["detail"]


async def test_expires_at_in_the_past_is_refused(gw: RunningGateway) -> None:
    status, problem = await gw.post(
        "/v1/waits", {"key": "k", "resume_token": "t", "expires_at": "2001-01-01T00:00:00Z"}
    )
    assert status == 422
    assert problem["field"] == "expires_at"
    assert problem["errors"] == [{"field": "expires_at", "message": "expires_at is in the past"}]


async def test_a_registration_sent_again_after_its_expiry_is_a_repeat(gw: RunningGateway) -> None:
    """It was refused as in the past: a Kafka registration read again after a crash was
    dead-lettered although it was stored."""
    expires = datetime.now(UTC) + timedelta(seconds=1)
    body = {"key": "k", "resume_token": "t", "expires_at": expires.isoformat()}
    assert (await gw.post("/v1/waits", body))[0] == 201
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    status, again = await gw.post("/v1/waits", body)
    assert (status, again["outcome"], again["state"]) == (200, "repeat", "expired")
    other = {**body, "resume_token": "t2"}  # a new one in the past is still refused
    status, problem = await gw.post("/v1/waits", other)
    assert (status, problem["field"]) == (422, "expires_at")
    counted = gw.gateway.metrics.registry.get_sample_value  # as invalid input, not a conflict
    assert counted("gateway_waits_total", {"tenant": "acme", "outcome": "conflict"}) is None


async def test_expires_at_is_capped_at_sixty_days(gw: RunningGateway) -> None:
    status, created = await gw.post(
        "/v1/waits", {"key": "k", "resume_token": "t", "expires_at": "2999-01-01T00:00:00Z"}
    )
    assert status == 201
    assert created["expires_at"] < "2999"


async def test_a_recipe_id_must_be_an_integer_or_a_string_not_coerced(gw: RunningGateway) -> None:
    """true was taken as recipe 1."""
    for recipe_id in (True, 4.0):
        job = {"recipe_id": recipe_id, "job_id": "j"}
        status, problem = await gw.post("/v1/waits", {"key": "k", "resume_token": "t", "job": job})
        assert status == 422
        assert {e["field"] for e in problem["errors"]} == {"job.recipe_id.int", "job.recipe_id.str"}


async def test_missing_or_wrong_api_key_is_401(gw: RunningGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        async with gw.http.post(gw.url + "/v1/events", json={}, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert (await resp.json(content_type=None))["type"] == "/problems/unauthorized"


async def test_a_key_that_is_not_utf8_is_401_not_500(gw: RunningGateway) -> None:
    """aiohttp decodes such header bytes to lone surrogates; hashing them raised."""
    for header in (b"Authorization: Bearer \xff\xfe", b"X-API-Key: \xff"):
        head, body = await raw_request(gw, b"GET /v1/waits/a HTTP/1.1\r\n" + header)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert json.loads(body)["type"] == "/problems/unauthorized"


async def test_a_method_not_allowed_says_which_are(gw: RunningGateway) -> None:
    async with gw.http.patch(gw.url + "/v1/waits/x", headers=gw.auth) as resp:
        assert resp.status == 405
        assert resp.content_type == "application/problem+json"
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "DELETE"}


async def test_a_key_or_event_id_holding_nul_is_refused(gw: RunningGateway) -> None:
    """SQLite's json_each, which the store's batch lookups go through, cut such a string at
    the NUL: an event merged into a batch with another missed its open wait and was
    buffered, and a stored one failed every Kafka batch it came in again."""
    for path, body, field in [
        ("/v1/waits", {"key": "job\u000042", "resume_token": "t"}, "key"),
        ("/v1/events", {"id": "e\u0000", "key": "k", "status": "failed"}, "id"),
        ("/v1/events", {"id": "e", "key": "\u0000", "status": "failed"}, "key"),
    ]:
        status, problem = await gw.post(path, body)
        assert (status, [e["field"] for e in problem["errors"]]) == (422, [field])


async def test_paths_and_methods_no_route_serves_are_problems_too(gw: RunningGateway) -> None:
    """They are answered by the router, not by a handler; without a middleware, a last route
    makes them problem documents."""
    for method, path, status in [
        ("GET", "/", 404),
        ("POST", "/v2/events", 404),
        ("GET", "/v1/events/x", 404),
        ("GET", "/v1/events", 405),
        ("PUT", "/healthz", 405),
    ]:
        async with gw.http.request(method, gw.url + path, headers=gw.auth) as resp:
            assert (resp.status, resp.content_type) == (status, "application/problem+json")
            assert (await resp.json(content_type=None))["status"] == status
            if status == 405:
                assert "Allow" in resp.headers


async def test_an_unexpected_failure_is_a_500_problem_and_logged(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(tenant: str, key: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gw.gateway.ingest, "wait", broken)
    with structlog.testing.capture_logs() as logged:
        async with gw.http.get(gw.url + "/v1/waits/x", headers=gw.auth) as resp:
            assert (resp.status, resp.content_type) == (500, "application/problem+json")
            assert (await resp.json(content_type=None))["type"] == "/problems/internal"
    (unhandled,) = [e for e in logged if e["event"] == "http.unhandled"]
    assert isinstance(unhandled["exc_info"], RuntimeError)


async def test_a_client_gone_mid_upload_is_no_error(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """Each disconnect was logged as an unhandled error, with its traceback."""
    gw = await start_gateway(make_settings())  # the body under the cap, over the spool's
    head = b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n" % (
        gw.auth["Authorization"].removeprefix("Bearer ").encode()
    )
    with structlog.testing.capture_logs() as logged:
        _, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.port)
        writer.write(head + b"Content-Length: 5000000\r\n\r\n" + b'{"pad":"' + b"x" * 2_000_000)
        await writer.drain()
        await asyncio.sleep(0.3)  # spooling
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if any(e["event"] == "http.client_gone" for e in logged):
                break
            await asyncio.sleep(0.05)
    assert [e["log_level"] for e in logged if e["event"].startswith("http.")] == ["info"]


async def raw_request(gw: RunningGateway, request_line_and_headers: bytes) -> tuple[bytes, bytes]:
    """Bytes no HTTP client library would send; the head and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.port)
    writer.write(request_line_and_headers + b"\r\nHost: gw\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def test_event_outcomes_buffered_matched_duplicate_late(gw: RunningGateway) -> None:
    ev = {"id": "e1", "key": "k", "status": "succeeded", "data": {"a": 1}}
    assert await gw.post("/v1/events", ev) == (
        202,
        {"outcome": "buffered", "event_id": "e1", "key": "k"},
    )
    assert (await gw.post("/v1/events", ev))[1]["outcome"] == "duplicate"
    status, reg = await gw.post("/v1/waits", {"key": "k", "resume_token": "t"})
    assert (status, reg["state"], reg["event"]["id"]) == (201, "resolved", "e1")
    status, late = await gw.post("/v1/events", {**ev, "id": "e2"})
    assert (status, late["outcome"]) == (202, "late")
    status, dup = await gw.post("/v1/events", ev)
    assert (status, dup["outcome"]) == (200, "duplicate")


async def test_event_for_open_wait_is_matched(gw: RunningGateway) -> None:
    await gw.post("/v1/waits", {"key": "k", "resume_token": "t"})
    status, body = await gw.post("/v1/events", {"id": "1", "key": "k", "status": "failed"})
    assert (status, body["outcome"]) == (202, "matched")


async def test_invalid_event_names_the_field(gw: RunningGateway) -> None:
    status, problem = await gw.post("/v1/events", {"id": "1", "key": "k", "status": "done"})
    assert status == 422
    assert [e["field"] for e in problem["errors"]] == ["status"]


async def test_query_form_names_a_missing_field_and_refuses_data_in_the_query(
    gw: RunningGateway,
) -> None:
    """Without ``key`` the body was read as a JSON document: "not a JSON object"."""
    cases = {
        "id=q1&status=succeeded": ["key"],
        "id=q1&key=k&status=succeeded&data=x": ["data"],
        # the first of each counted: JSON's duplicate members count the last
        "id=a&id=b&key=k&status=succeeded&status=failed": ["id", "status"],
    }
    headers = {**gw.auth, "Content-Type": "text/csv"}
    for query, fields in cases.items():
        url = f"{gw.url}/v1/events?{query}"
        async with gw.http.post(url, data=b"a,b\n1,2\n", headers=headers) as resp:
            assert resp.status == 422, query
            problem = await resp.json(content_type=None)
        assert [e["field"] for e in problem["errors"]] == fields


async def test_event_body_that_is_not_json_is_422(gw: RunningGateway) -> None:
    async with gw.http.post(gw.url + "/v1/events", data=b"{nope", headers=gw.auth) as resp:
        assert resp.status == 422
        assert "JSON" in (await resp.json(content_type=None))["detail"]


async def test_body_over_the_cap_is_413(gw: RunningGateway) -> None:
    big = {"id": "1", "key": "k", "status": "succeeded", "data": "x" * 10_000}
    status, problem = await gw.post("/v1/events", big)
    assert status == 413
    assert problem["status"] == 413


async def test_get_and_cancel_wait(gw: RunningGateway) -> None:
    await gw.post("/v1/waits", {"key": "a/b c", "resume_token": "t"})
    status, wait = await gw.get("/v1/waits/a%2Fb%20c")
    assert (status, wait["key"], wait["state"]) == (200, "a/b c", "open")
    assert "resume_token" not in wait
    status, cancelled = await gw.delete("/v1/waits/a%2Fb%20c")
    assert (status, cancelled["state"]) == (200, "cancelled")
    status, _problem = await gw.delete("/v1/waits/a%2Fb%20c")
    assert status == 409
    assert (await gw.get("/v1/waits/unknown"))[0] == 404


async def test_health_readiness_and_metrics(gw: RunningGateway) -> None:
    assert await gw.get("/healthz") == (200, {"status": "ok"})
    status, ready = await gw.get("/readyz")
    assert (status, ready["checks"]["store"]) == (200, "up")
    await gw.post("/v1/events", {"id": "1", "key": "k", "status": "succeeded"})
    async with gw.http.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_events_total{outcome="buffered",source="api",tenant="acme"} 1.0' in text
    assert 'gateway_rows{kind="events",state="buffered"} 1.0' in text


async def test_metrics_are_served_while_the_store_fails_and_readiness_says_it(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing store took the whole scrape down (503); and after a failed sync, when
    nothing is acknowledged any more, /readyz still said the store was up."""
    await gw.post("/v1/events", {"id": "1", "key": "k", "status": "succeeded"})
    store = gw.gateway.store

    async def failing() -> dict[str, dict[str, int]]:
        raise StoreError("sqlite: disk I/O error")

    monkeypatch.setattr(store, "counts", failing)
    async with gw.http.get(gw.url + "/metrics") as resp:
        assert resp.status == 200
        assert 'gateway_events_total{outcome="buffered",source="api",tenant="acme"} 1.0' in (
            await resp.text()
        )
    monkeypatch.setattr(store._log, "failure", StoreError("sqlite: syncing the log failed"))
    status, ready = await gw.get("/readyz")
    assert (status, ready["checks"]["store"]) == (503, "down")


async def test_a_cancelled_delivery_is_counted_as_finished(gw: RunningGateway) -> None:
    """Every other final state was counted in gateway_deliveries_finished_total."""
    gw.gateway.deliverer._lanes["acme"]._credential.paused_until = 2e9  # nothing is sent
    await gw.post("/v1/waits", {"key": "k", "resume_token": "t"})
    await gw.post("/v1/events", {"id": "1", "key": "k", "status": "succeeded"})
    status, cancelled = await gw.delete("/v1/waits/k")
    assert (status, cancelled["delivery"]["state"]) == (200, "cancelled")
    finished = gw.gateway.metrics.registry.get_sample_value(
        "gateway_deliveries_finished_total", {"tenant": "acme", "state": "cancelled"}
    )
    assert finished == 1


async def test_a_store_failure_is_logged_with_what_the_store_said(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logged as ``StoreError`` only, a full disk and a corrupt file read alike."""

    def failing(*_args: object) -> None:
        raise StoreError("sqlite: database or disk is full")

    monkeypatch.setattr(gw.gateway.store, "record_event", failing)
    with structlog.testing.capture_logs() as logs:
        status, _ = await gw.post("/v1/events", {"id": "1", "key": "k", "status": "succeeded"})
    assert status == 503
    (line,) = [e for e in logs if e["event"] == "http.store_failed"]
    assert line["detail"] == "sqlite: database or disk is full"


async def test_refused_requests_are_counted_by_route_and_logged(gw: RunningGateway) -> None:
    """A 422 or 415 was seen by its sender only: a sender whose every event is refused (a
    webhook mapping that fits none of its bodies, say) went unnoticed here."""
    with structlog.testing.capture_logs() as logs:
        assert (await gw.post("/v1/events", {"id": "1", "key": "k"}))[0] == 422
        assert (await gw.post("/v1/events", {"id": "1", "key": "k"}))[0] == 422
        assert (await gw.get("/v2/nothing"))[0] == 404
    counted = gw.gateway.metrics.registry.get_sample_value
    assert counted("gateway_requests_refused_total", {"route": "/v1/events", "status": "422"}) == 2
    assert counted("gateway_requests_refused_total", {"route": "*", "status": "404"}) == 1
    said = [(e["route"], e["status"]) for e in logs if e["event"] == "http.refused"]
    assert said == [("/v1/events", 422), ("/v1/events", 422), ("*", 404)]
    first = next(e for e in logs if e["event"] == "http.refused")  # which field, not only 422
    assert (first["problem"], first["fields"]) == ("/problems/invalid-input", ["status"])
    member = "m" * 1000  # the sender's own name for it: logged cut short
    with structlog.testing.capture_logs() as logs:
        body = {"id": "1", "key": "k", "status": "succeeded", member: 1}
        assert (await gw.post("/v1/events", body))[0] == 422
    (refused,) = [e for e in logs if e["event"] == "http.refused"]
    assert refused["fields"] == ["m" * 80 + "…"]


async def test_unknown_route_is_a_problem(gw: RunningGateway) -> None:
    async with gw.http.get(gw.url + "/v2/nothing") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"


async def test_data_is_kept_byte_exact(gw: RunningGateway) -> None:
    raw = (
        b'{"id":"x","key":"k","status":"succeeded","data":{"n": 1.0000000000000001, "s":"\\u00e9"}}'
    )
    async with gw.http.post(gw.url + "/v1/events", data=raw, headers=gw.auth) as resp:
        assert resp.status == 202
    store = gw.gateway.store
    rows = await store._read(lambda c: c.execute("SELECT data FROM events").fetchall())  # type: ignore[attr-defined]
    assert rows == [(b'{"n": 1.0000000000000001, "s":"\\u00e9"}',)]


async def test_answers_conform_to_the_openapi_models(gw: RunningGateway) -> None:
    from gateway.http.openapi import openapi_document
    from gateway.messages import EventAccepted, Problem, WaitStatus

    assert await gw.get("/openapi.json") == (200, openapi_document())
    _, created = await gw.post(
        "/v1/waits", {"key": "k", "resume_token": "t", "job": {"recipe_id": 7, "job_id": "j-1"}}
    )
    assert WaitStatus.model_validate(created).job is not None
    _, accepted = await gw.post("/v1/events", {"id": "1", "key": "k", "status": "succeeded"})
    assert EventAccepted.model_validate(accepted).outcome == "matched"
    _, waited = await gw.get("/v1/waits/k")
    assert WaitStatus.model_validate(waited).delivery is not None
    _, problem = await gw.post("/v1/waits", {"key": ""})
    assert Problem.model_validate(problem).status == 422


async def test_compressed_events_and_registrations_are_415(gw: RunningGateway) -> None:
    """aiohttp decompressed such bodies by default, past the caps their declared length was
    checked against; garbage said to be gzip answered 500."""
    body = gzip.compress(json.dumps({"id": "e1", "key": "k", "status": "succeeded"}).encode())
    headers = {**gw.auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    for path in ("/v1/events", "/v1/waits"):
        async with gw.http.post(gw.url + path, data=body, headers=headers) as resp:
            assert resp.status == 415, await resp.text()
            assert (await resp.json(content_type=None))["type"] == "/problems/media-type"
    assert (await gw.get("/v1/waits/k"))[0] == 404


async def test_every_content_encoding_header_counts(gw: RunningGateway) -> None:
    """Only the first header was read: ``identity`` then ``gzip`` took gzip bytes as the
    body, stored as an opaque payload."""
    body = gzip.compress(b"a,b\n1,2\n")
    headers = CIMultiDict(gw.auth)
    headers.add("Content-Type", "text/csv")
    headers.add("Content-Encoding", "identity")
    headers.add("Content-Encoding", "gzip")
    url = gw.url + "/v1/events?id=e1&key=k&status=succeeded"
    async with gw.http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 415, await resp.text()
    headers.popall("Content-Encoding")
    headers.add("Content-Encoding", "identity, identity")
    async with gw.http.post(url, data=b"a,b\n", headers=headers) as resp:
        assert resp.status == 202, await resp.text()

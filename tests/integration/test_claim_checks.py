"""Payloads of any size (issue 5), end to end over real HTTP against the Workato sandbox: the
exact body size decides inline or claim check, the claim check's URL serves the exact bytes,
a 413 swaps the reference in, large bodies are spooled, and blobs are collected."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.blobs import reservation
from gateway.blobs.base import BlobError, BlobMeta
from gateway.blobs.signing import UrlSigner
from gateway.deliver.payload import body_frame
from gateway.errors import StoreError
from gateway.ingest import service
from gateway.messages import ResumeData
from gateway.sandbox.workato_state import WorkatoSandbox
from gateway.security.urlkeys import url_signing_keys
from tests.conftest import RunningGateway, SettingsFactory
from tests.integration.test_delivery import delivery_of, wait_for_job
from tests.kafka_broker import MotoS3

Start = Any
MB = 1_000_000
LONG = aiohttp.ClientTimeout(total=120)
HOOK_SECRET = "big-hook-secret"


async def post_event(gw: RunningGateway, body: Any, **params: str) -> int:
    headers = dict(gw.auth)
    if params.get("content_type"):
        headers["Content-Type"] = params.pop("content_type")
    async with gw.http.post(
        gw.url + "/v1/events", data=body, headers=headers, params=params or None, timeout=LONG
    ) as resp:
        await resp.read()
        return resp.status


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any, bytes]:
    async with http.get(url, headers=headers, timeout=LONG) as resp:
        return resp.status, resp.headers, await resp.read()


# -- the limit decides ---------------------------------------------------------------------


async def test_body_exactly_at_the_limit_goes_inline_one_byte_over_by_reference(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    limit = 2_000
    gw = await start_gateway(make_settings(raw_mode=True, max_request_bytes=limit))
    at = await wait_for_job(gw, workato, "at")
    over = await wait_for_job(gw, workato, "over")

    def data_for(token: str, size: int) -> bytes:
        # raw mode: the body is {"token":…,"data":<data>}; pad a string to hit ``size`` exactly
        head, tail = body_frame(token, b"", b"")  # raw mode: no envelope
        data = b'{"s":"' + b"x" * (size - len(head) - len(b'{"s":""}') - len(tail)) + b'"}'
        assert len(head) + len(data) + len(tail) == size
        return data

    at_data = data_for(at.resume.token, limit)
    over_data = data_for(over.resume.token, limit + 1)
    for key, data in (("at", at_data), ("over", over_data)):
        doc = b'{"id":"e-%s","key":"%s","status":"succeeded","data":%s}' % (
            key.encode(),
            key.encode(),
            data,
        )
        assert await post_event(gw, doc) == 202

    await delivery_of(gw, "at", "delivered")
    await delivery_of(gw, "over", "delivered")
    assert at.resume.body is not None
    assert len(at.resume.body) == limit
    assert at.resume.body.endswith(b',"data":' + at_data + b"}")
    assert over.resume.body is not None
    ref = json.loads(over.resume.body)["data"]["payload_ref"]
    assert (ref["size"], ref["sha256"]) == (len(over_data), hashlib.sha256(over_data).hexdigest())
    assert ref["content_type"] == "application/json"
    status, headers, got = await fetch(gw.http, ref["url"])
    assert (status, got) == (200, over_data)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["ETag"] == f'"{ref["sha256"]}"'


async def test_envelope_claim_check_has_null_payload_and_a_url_outliving_the_wait(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    grace = 3_600.0
    gw = await start_gateway(
        make_settings({"blobs": {"url_grace_s": grace}}, max_request_bytes=1_000)
    )
    job = await wait_for_job(gw, workato, "k", timeout_s=600, metadata={"m": 1})
    payload = {"rows": ["r" * 50] * 40}
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": payload})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    data = json.loads(job.resume.body)["data"]
    ResumeData.model_validate(data)  # the published schema describes what is sent
    assert (data["payload"], data["metadata"], data["status"]) == (None, {"m": 1}, "succeeded")
    ref = data["payload_ref"]
    _, wait = await gw.get("/v1/waits/k")
    expires = _epoch(ref["expires_at"])
    assert expires >= _epoch(wait["expires_at"]) + grace - 1
    status, _, got = await fetch(gw.http, ref["url"])
    assert status == 200
    assert json.loads(got) == payload


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def spooled(gw: RunningGateway) -> list[Path]:
    spool = Path(gw.gateway.settings.ingest.spool_dir)
    return list(spool.iterdir()) if spool.exists() else []


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_zero_byte_and_non_json_payloads_go_by_reference_with_their_type(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    empty_job = await wait_for_job(gw, workato, "empty")
    csv_job = await wait_for_job(gw, workato, "csv")
    csv = b"id,name\n1,\xc3\xa9t\xc3\xa9\n2,\x00binary\n"
    ok = "succeeded"
    status = await post_event(gw, b"", id="e1", key="empty", status=ok, content_type="text/plain")
    assert status == 202
    media = "text/csv; charset=utf-8"
    assert await post_event(gw, csv, id="e2", key="csv", status=ok, content_type=media) == 202
    for job, content, media in ((empty_job, b"", "text/plain"), (csv_job, csv, "text/csv")):
        await delivery_of(gw, job_key := ("empty" if job is empty_job else "csv"), "delivered")
        assert job.resume.body is not None, job_key
        data = json.loads(job.resume.body)["data"]
        assert data["payload"] is None
        ref = data["payload_ref"]
        assert ref["content_type"] == media
        assert (ref["size"], ref["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
        status, headers, got = await fetch(gw.http, ref["url"])
        assert (status, got, headers["Content-Length"]) == (200, content, str(len(content)))
        assert headers["Content-Type"].startswith(media)
    assert metric(gw, "gateway_claim_checks_total", cause="not_json", tenant="acme") == 2


async def test_payload_form_with_json_content_is_validated_and_sent_inline(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "k")
    query = {"id": "e1", "key": "k", "status": "succeeded"}
    assert await post_event(gw, b"{nope", content_type="application/json", **query) == 422
    raw = b'{"exact": 1.0000000000000001}'
    sent = await post_event(gw, b"  " + raw + b"\n", content_type="application/json", **query)
    assert sent == 202
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    assert b'"payload":' + raw + b"}" in job.resume.body


# -- 413 from Workato ------------------------------------------------------------------------


async def test_413_from_workato_swaps_in_the_reference_and_retries(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.settings = workato.settings.updated({"max_body_bytes": 1_000})
    gw = await start_gateway(make_settings())  # the gateway believes 50 MB
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 2_000})
    delivery = await delivery_of(gw, "k", "delivered", "dead")
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)
    statuses = [r.status for r in workato.requests.entries() if r.path == "/api/job/resume"]
    assert statuses == [413, 204]
    assert metric(gw, "gateway_claim_checks_total", cause="workato_413", tenant="acme") == 1
    assert job.resume.body is not None
    ref = json.loads(job.resume.body)["data"]["payload_ref"]
    status, _, got = await fetch(gw.http, ref["url"])
    assert (status, got) == (200, b'"' + b"x" * 2_000 + b'"')


async def test_reference_that_still_does_not_fit_is_dead_payload_too_large_unsent(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings(max_request_bytes=300))
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 300})
    delivery = await delivery_of(gw, "k", "dead")
    assert (delivery["reason"], delivery["last_status"]) == ("payload_too_large", None)
    assert job.resume.count == 0
    assert not [r for r in workato.requests.entries() if r.path == "/api/job/resume"]


async def test_413_for_the_reference_too_is_dead_payload_too_large(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.settings = workato.settings.updated({"max_body_bytes": 100})
    gw = await start_gateway(make_settings())
    await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 200})
    delivery = await delivery_of(gw, "k", "dead")
    assert (delivery["reason"], delivery["last_status"]) == ("payload_too_large", 413)
    assert delivery["attempts"] == 2  # inline, then the reference: nothing smaller is left


async def test_413_for_a_reference_sent_for_its_size_is_dead_at_once(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    workato.settings = workato.settings.updated({"max_body_bytes": 100})
    gw = await start_gateway(make_settings(max_request_bytes=800))
    await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900})
    delivery = await delivery_of(gw, "k", "dead")
    assert (delivery["reason"], delivery["attempts"]) == ("payload_too_large", 1)


# -- a failing blob store ----------------------------------------------------------------------


async def test_blob_store_failure_retries_with_backoff_and_sends_nothing(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await start_gateway(make_settings(max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k")
    store = gw.gateway.blobs

    async def down(data: bytes, content_type: str) -> BlobMeta:
        raise BlobError("the blob store is down")

    with monkeypatch.context() as patch:
        patch.setattr(store, "put_bytes", down)
        await gw.post(
            "/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900}
        )
        await asyncio.sleep(1.0)
        wait = await between_attempts(gw, "k")
        assert (wait["delivery"]["state"], wait["delivery"]["reason"]) == (
            "pending",
            "claim_check_failed",
        )
        # backoff (0.05 s doubling to 0.2 s here), not a spin through the rate window
        assert wait["delivery"]["attempts"] <= 15
        assert not [r for r in workato.requests.entries() if r.path == "/api/job/resume"]
    delivery = await delivery_of(gw, "k", "delivered")
    assert job.resume.attempts == 1
    assert delivery["state"] == "delivered"


async def test_a_preparation_that_crashes_is_an_unsent_attempt_not_an_ambiguous_one(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error of no expected type while the request was prepared (the file store met a
    directory) ended the delivery's task: the row waited for its lease, the sweep marked the
    attempt ambiguous, and a later genuine rejection read as delivered_unconfirmed."""
    gw = await start_gateway(make_settings(max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k")

    async def crashing(data: bytes, content_type: str) -> BlobMeta:
        raise IsADirectoryError(21, "Is a directory")

    with monkeypatch.context() as patch:
        patch.setattr(gw.gateway.blobs, "put_bytes", crashing)
        await gw.post(
            "/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900}
        )
        wait = await after_attempt(gw, "k", "prepare_failed")
        assert wait["delivery"]["state"] in ("pending", "sending")
        assert not ambiguous(gw, "k")
    await delivery_of(gw, "k", "delivered")
    attempts = gw.gateway.metrics.registry.get_sample_value  # no request left: not a retry
    assert attempts("gateway_resume_attempts_total", {"tenant": "acme", "result": "unsent"})
    assert attempts("gateway_resume_attempts_total", {"tenant": "acme", "result": "retry"}) is None
    assert job.resume.attempts == 1


async def test_a_request_prepared_past_the_waits_expiry_is_not_sent_and_ends_expired(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim checks the deadline, the send did not: a slow claim check sent the resume
    after Workato had dropped the job, and its refusal ended the delivery dead."""
    gw = await start_gateway(make_settings(max_request_bytes=800))
    job = workato.create_job()
    expires = datetime.now(UTC) + timedelta(seconds=1)
    registration = {"key": "k", "resume_token": job.resume.token, "expires_at": expires.isoformat()}
    assert (await gw.post("/v1/waits", registration))[0] == 201
    storing = gw.gateway.blobs.put_bytes

    async def slow(data: bytes, content_type: str) -> BlobMeta:
        await asyncio.sleep(1.2)  # within the lease (3 s), past the wait's expiry
        return await storing(data, content_type)

    monkeypatch.setattr(gw.gateway.blobs, "put_bytes", slow)
    event = {"id": "e", "key": "k", "status": "succeeded", "data": "x" * 900}
    assert (await gw.post("/v1/events", event))[0] == 202
    delivery = await delivery_of(gw, "k", "expired")
    assert delivery["reason"] == "wait_expired_after_prepared_past_deadline"
    assert job.resume.attempts == 0


async def test_payload_that_cannot_be_read_whole_is_an_unsent_attempt_not_an_ambiguous_one(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await start_gateway(make_settings({"ingest": {"spool_threshold_bytes": 1024}}))
    job = await wait_for_job(gw, workato, "k")
    store = gw.gateway.blobs

    async def broken(sha256: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        yield b'{"rows":['  # then the disk fails
        raise BlobError("read failed")

    with monkeypatch.context() as patch:
        patch.setattr(store, "read", broken)
        doc = {"id": "e", "key": "k", "status": "succeeded", "data": {"rows": ["r" * 50] * 100}}
        await gw.post("/v1/events", doc)
        wait = await after_attempt(gw, "k", "payload_read_failed")
        assert wait["delivery"]["state"] in ("pending", "sending")
        assert not ambiguous(gw, "k")
    await delivery_of(gw, "k", "delivered")
    assert job.resume.attempts == 1
    assert job.resume.body is not None
    assert json.loads(job.resume.body)["data"]["payload"] == doc["data"]


async def wait_when(
    gw: RunningGateway, key: str, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The wait once its delivery satisfies ``ready`` (polled for up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        _, wait = await gw.get(f"/v1/waits/{key}")
        assert isinstance(wait, dict)
        if ready(wait["delivery"]):
            return wait
        assert time.monotonic() < deadline, f"delivery of {key}: {what}, never: {wait}"
        await asyncio.sleep(0.02)


async def between_attempts(gw: RunningGateway, key: str) -> dict[str, Any]:
    """The wait as seen between two attempts: a read during one shows the lease (`sending`)."""
    return await wait_when(gw, key, lambda d: d["state"] != "sending", "between attempts")


async def after_attempt(gw: RunningGateway, key: str, reason: str) -> dict[str, Any]:
    """The wait once an attempt of its delivery has ended for ``reason``."""
    return await wait_when(gw, key, lambda d: d["reason"] == reason, f"an attempt ended {reason}")


def ambiguous(gw: RunningGateway, key: str) -> bool:
    path = gw.gateway.settings.store.sqlite_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (flag,) = db.execute(
            "SELECT d.ambiguous FROM deliveries d JOIN waits w ON w.id = d.wait_id WHERE w.key = ?",
            (key,),
        ).fetchone()
    return bool(flag)


async def test_download_that_fails_midway_ends_the_connection(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await start_gateway(make_settings(max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "d" * 900})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    url = json.loads(job.resume.body)["data"]["payload_ref"]["url"]

    async def broken(sha256: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        yield b'"ddd'
        raise BlobError("read failed")

    monkeypatch.setattr(gw.gateway.blobs, "read", broken)
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(gw.http, url)
    assert time.monotonic() - started < 3, "the client is not left waiting for the rest"


async def test_content_type_that_is_not_a_media_type_is_415(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    gw = await start_gateway(make_settings())
    headers = {**gw.auth, "Content-Type": "text/html<script>"}
    params = {"id": "e", "key": "k", "status": "succeeded"}
    async with gw.http.post(gw.url + "/v1/events", data=b"x", headers=headers, params=params) as r:
        assert r.status == 415
        assert (await r.json(content_type=None))["type"] == "/problems/media-type"


# -- signed URLs -----------------------------------------------------------------------------


async def test_tampered_expired_and_unknown_urls_are_refused_without_detail(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    settings = make_settings(max_request_bytes=800)
    gw = await start_gateway(settings)
    job = await wait_for_job(gw, workato, "k")
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "y" * 1000})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    url = json.loads(job.resume.body)["data"]["payload_ref"]["url"]
    base, query = url.split("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    signer = UrlSigner(url_signing_keys(settings.security), gw.url)
    sha = base.rsplit("/", 1)[1]
    unknown = hashlib.sha256(b"never stored").hexdigest()
    cases = {
        "tampered sig": f"{base}?expires={params['expires']}&sig={params['sig'][:-2]}AA",
        "tampered expiry": f"{base}?expires={int(params['expires']) + 1}&sig={params['sig']}",
        "no sig": f"{base}?expires={params['expires']}",
        "expired": signer.url(sha, time.time() - 1),
        "other blob": url.replace(sha, unknown),
    }
    for case, bad in cases.items():
        status, _, body = await fetch(gw.http, bad)
        assert status == 403, case
        assert params["sig"].encode() not in body, case
        assert sha.encode() not in body, case
    status, _, body = await fetch(gw.http, signer.url(unknown, time.time() + 60))
    assert status == 404
    assert unknown.encode() not in body
    status, headers, part = await fetch(gw.http, url, Range="bytes=1-10")
    assert (status, part, headers["Content-Range"]) == (206, b"y" * 10, "bytes 1-10/1002")


# -- streaming intake ------------------------------------------------------------------------


async def test_200_mb_event_is_spooled_and_becomes_a_claim_check_with_the_exact_bytes(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings())
    job = await wait_for_job(gw, workato, "big")
    piece = b"0123456789abcdef" * 4096  # 64 KiB
    pieces = 200 * MB // len(piece)
    head = b'{"id":"big-1","key":"big","status":"succeeded","data":{"blob":"'
    tail = b'"}}'
    expected = hashlib.sha256(b'{"blob":"')
    for _ in range(pieces):
        expected.update(piece)
    expected.update(b'"}')

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(pieces):
            yield piece
        yield tail

    assert await post_event(gw, body()) == 202
    await delivery_of(gw, "big", "delivered")
    assert job.resume.body is not None
    assert len(job.resume.body) < 2_000
    ref = json.loads(job.resume.body)["data"]["payload_ref"]
    assert ref["size"] == len(piece) * pieces + len(b'{"blob":""}')
    assert ref["sha256"] == expected.hexdigest()
    got = hashlib.sha256()
    async with gw.http.get(ref["url"], timeout=LONG) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == ref["sha256"]
    assert spooled(gw) == []  # nothing left behind


async def test_spooled_event_under_the_limit_is_streamed_inline_byte_exact(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    gw = await start_gateway(make_settings({"ingest": {"spool_threshold_bytes": 1024}}))
    job = await wait_for_job(gw, workato, "k")
    data = json.dumps({"rows": [{"n": i, "v": 1.10} for i in range(5_000)]}).encode()
    doc = b'{"data": ' + data + b' ,"id":"e","key":"k","status":"succeeded"}'
    assert await post_event(gw, doc) == 202
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    assert job.resume.body.endswith(b',"payload":' + data + b"}}")


async def test_event_body_over_the_cap_is_413_declared_or_streamed(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    extra = {"ingest": {"spool_threshold_bytes": 1024, "max_body_bytes": 50_000}}
    gw = await start_gateway(make_settings(extra))
    doc = b'{"id":"e","key":"k","status":"succeeded","data":"' + b"z" * 60_000 + b'"}'
    assert await post_event(gw, doc) == 413

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(doc), 4096):
            yield doc[start : start + 4096]

    assert await post_event(gw, chunked()) == 413
    assert spooled(gw) == []


async def test_large_signed_webhook_is_verified_and_mapped_from_the_spool(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    source = {
        "name": "big",
        "tenant": "acme",
        "verify": {"scheme": "hmac_sha256", "header": "X-Sig", "secret": HOOK_SECRET},
        "mapping": {
            "key": "/job/key",
            "event_id": "/job/id",
            "status": "/job/state",
            "status_map": {"ok": "succeeded"},
            "data": "/job/result",
        },
        "max_body_bytes": 20 * MB,
    }
    extra = {"sources": [source], "ingest": {"spool_threshold_bytes": 64 * 1024}}
    gw = await start_gateway(make_settings(extra))
    job = await wait_for_job(gw, workato, "hook-k")
    result = json.dumps({"lines": ["é" * 100] * 20_000}, ensure_ascii=False).encode()
    body = b'{"job":{"result":' + result + b',"id":"h1","key":"hook-k","state":"ok"}}'
    assert len(body) > 3 * MB
    signature = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    hook = gw.url + "/v1/hooks/big"
    async with gw.http.post(hook, data=io.BytesIO(body), headers={"X-Sig": signature}) as r:
        assert r.status == 202, await r.text()
    async with gw.http.post(hook, data=io.BytesIO(body), headers={"X-Sig": "00"}) as r:
        assert r.status == 401
    assert metric(gw, "gateway_webhooks_rejected_total", reason="bad_signature", source="big") == 1
    await delivery_of(gw, "hook-k", "delivered")
    assert job.resume.body is not None
    assert job.resume.body.endswith(b',"payload":' + result + b"}}")


# -- garbage collection ----------------------------------------------------------------------


async def test_blobs_are_collected_once_expired_and_final(
    make_settings: SettingsFactory, start_gateway: Start, workato: WorkatoSandbox
) -> None:
    # room on a busy machine: delivered within 2.5 s, fetched well before the URL expires
    extra = {"blobs": {"url_grace_s": 1.5, "gc_interval_s": 0.1}}
    gw = await start_gateway(make_settings(extra, max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k", timeout_s=2.5)
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "g" * 1000})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    ref = json.loads(job.resume.body)["data"]["payload_ref"]
    blobs = gw.gateway.blobs
    assert await blobs.stat(ref["sha256"]) is not None
    assert (await fetch(gw.http, ref["url"]))[0] == 200  # before expiry: served

    deadline = time.monotonic() + 10
    while metric(gw, "gateway_blobs_collected_total") < 1:  # counted once the round is done
        assert time.monotonic() < deadline, "the blob was never collected"
        await asyncio.sleep(0.05)
    assert time.time() >= _epoch(ref["expires_at"])  # never before its URL expired
    assert await blobs.stat(ref["sha256"]) is None
    assert metric(gw, "gateway_blobs_collected_total") == 1


# -- S3 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("presign", [False, True])
async def test_claim_checks_on_s3(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    moto_s3: MotoS3,
    presign: bool,
) -> None:
    blobs = {
        "url": f"s3://{moto_s3.BUCKET}/claims",
        "s3_endpoint_url": moto_s3.url,
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
        "presign": presign,
    }
    # a presigned URL is long: the claim check's body must fit, the payload's must not
    gw = await start_gateway(make_settings({"blobs": blobs}, max_request_bytes=1200))
    job = await wait_for_job(gw, workato, "k")
    data = "s" * 1300
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": data})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    ref = json.loads(job.resume.body)["data"]["payload_ref"]
    assert ref["url"].startswith(moto_s3.url if presign else gw.url)
    status, _, got = await fetch(gw.http, ref["url"])
    assert (status, got) == (200, f'"{data}"'.encode())


@pytest.mark.parametrize("store", ["files", "s3", "s3-presigned"])
async def test_one_blob_is_served_as_each_event_declared_it(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    moto_s3: MotoS3,
    store: str,
) -> None:
    """The same bytes as the payload of two events of different types: stored once, and each
    download carries the type its own event declared (the URL signs it)."""
    blobs: dict[str, Any] = {}
    if store != "files":
        blobs = {
            "url": f"s3://{moto_s3.BUCKET}/typed",
            "s3_endpoint_url": moto_s3.url,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "presign": store == "s3-presigned",
        }
    gw = await start_gateway(make_settings({"blobs": blobs}))
    content = b"id;name\n1;x\n"
    types = {"as-csv": "text/csv", "as-text": "text/plain"}
    jobs = {key: await wait_for_job(gw, workato, key) for key in types}
    for key, media in types.items():
        status = await post_event(
            gw, content, id=key, key=key, status="succeeded", content_type=media
        )
        assert status == 202
    refs = {}
    for key, media in types.items():
        await delivery_of(gw, key, "delivered")
        body = jobs[key].resume.body
        assert body is not None
        refs[key] = json.loads(body)["data"]["payload_ref"]
        assert refs[key]["content_type"] == media
    assert refs["as-csv"]["sha256"] == refs["as-text"]["sha256"]  # one blob
    for key, media in types.items():
        status, headers, got = await fetch(gw.http, refs[key]["url"])
        assert (status, got) == (200, content)
        assert headers["Content-Type"].split(";")[0] == media


async def test_spool_leftovers_of_a_killed_process_are_removed_at_start(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    settings = make_settings()
    spool = Path(settings.ingest.spool_dir)
    leave_spool_files(spool, old="old.spool", fresh="fresh.spool")
    gw = await start_gateway(settings)
    assert [p.name for p in spooled(gw)] == ["fresh.spool"]


def leave_spool_files(spool: Path, old: str, fresh: str) -> None:
    """One upload a killed process left an hour ago, one another process is receiving now."""
    spool.mkdir(parents=True)
    (spool / old).write_bytes(b"partial upload")
    (spool / fresh).write_bytes(b"in progress")
    hour_ago = time.time() - 3_700
    os.utime(spool / old, (hour_ago, hour_ago))


async def test_an_intake_waits_out_a_deletion_by_another_process(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another gateway process sharing the store has marked a blob and is deleting its bytes:
    an event with the same bytes waits until that row is gone, then stores the bytes afresh
    and records them as kept; one that runs out of patience is a 503 to retry."""
    gw = await start_gateway(make_settings())
    store, blobs = gw.gateway.store, gw.gateway.blobs
    csv = b"a,b\n3,4\n"
    meta = await blobs.put_bytes(csv, "text/csv")
    now = time.time()
    assert await store.keep_blob(meta, now - 1, now - 2)  # an expired reservation
    assert await store.condemn_blob(meta.sha256, now)  # the other process's collector
    query = {"id": "e", "key": "k", "status": "succeeded"}
    headers = {**gw.auth, "Content-Type": "text/csv"}
    with monkeypatch.context() as patch:
        patch.setattr(reservation, "PATIENCE_S", 0.2)
        async with gw.http.post(
            gw.url + "/v1/events", data=csv, params=query, headers=headers
        ) as refused:
            assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
            assert "being deleted" in (await refused.json(content_type=None))["detail"]
    posting = asyncio.create_task(post_event(gw, csv, **query, content_type="text/csv"))
    await asyncio.sleep(0.3)
    assert not posting.done(), "the intake must wait while the bytes are being deleted"
    await blobs.delete(meta.sha256)  # ... which it finishes
    assert await store.forget_blob(meta.sha256)
    assert await asyncio.wait_for(posting, 10) == 202
    assert await blobs.stat(meta.sha256) == meta
    assert await store.collectable_blobs(time.time(), 10) == []


async def test_a_collection_round_during_an_intake_leaves_its_bytes(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bytes arrive again after their row expired: a collection round that runs right
    after the intake stored them finds the row kept (it was recorded first) and deletes
    nothing, so the accepted event never names deleted bytes."""
    gw = await start_gateway(make_settings())
    store, blobs = gw.gateway.store, gw.gateway.blobs
    csv = b"x,y\n5,6\n"
    meta = await blobs.put_bytes(csv, "text/csv")
    now = time.time()
    assert await store.keep_blob(meta, now - 1, now - 2)  # expired, nothing needs it
    assert await store.collectable_blobs(now, 10) == [meta.sha256]
    put_bytes = blobs.put_bytes

    async def store_then_collect(data: bytes, content_type: str) -> BlobMeta:
        stored = await put_bytes(data, content_type)
        await gw.gateway.collector.collect()  # a round right after the bytes landed
        return stored

    monkeypatch.setattr(blobs, "put_bytes", store_then_collect)
    status = await post_event(gw, csv, id="e", key="k", status="succeeded", content_type="text/csv")
    assert status == 202
    assert await blobs.stat(meta.sha256) == meta
    assert metric(gw, "gateway_blobs_collected_total") == 0


async def test_bytes_of_an_event_that_never_commits_are_still_collected(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "BLOB_RESERVATION_S", 0.2)
    gw = await start_gateway(make_settings({"blobs": {"gc_interval_s": 0.1}}))

    async def refused(*args: object, **kwargs: object) -> None:
        raise StoreError("the database went away")

    csv = b"a,b\n1,2\n"
    with monkeypatch.context() as patch:
        patch.setattr(gw.gateway.ingest, "accept", refused)
        status = await post_event(
            gw, csv, id="e", key="k", status="succeeded", content_type="text/csv"
        )
    assert status == 503  # nothing was accepted: the sender retries
    sha = hashlib.sha256(csv).hexdigest()
    deadline = time.monotonic() + 10
    while await gw.gateway.blobs.stat(sha) is not None:
        assert time.monotonic() < deadline, "the stored bytes were never collected"
        await asyncio.sleep(0.05)


async def test_a_failed_deletion_is_finished_by_a_later_round(
    make_settings: SettingsFactory,
    start_gateway: Start,
    workato: WorkatoSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = {"blobs": {"url_grace_s": 0.5, "gc_interval_s": 0.1}}
    gw = await start_gateway(make_settings(extra, max_request_bytes=800))
    job = await wait_for_job(gw, workato, "k", timeout_s=2.0)  # delivered well before
    blobs = gw.gateway.blobs
    failures = []
    real_delete = blobs.delete

    async def flaky(sha256: str) -> None:
        if not failures:
            failures.append(sha256)
            raise BlobError("the blob store is down")
        await real_delete(sha256)

    monkeypatch.setattr(blobs, "delete", flaky)
    await gw.post("/v1/events", {"id": "e", "key": "k", "status": "succeeded", "data": "f" * 900})
    await delivery_of(gw, "k", "delivered")
    assert job.resume.body is not None
    sha = json.loads(job.resume.body)["data"]["payload_ref"]["sha256"]
    deadline = time.monotonic() + 10
    while metric(gw, "gateway_blobs_collected_total") < 1:  # bytes, then row, then counted
        assert time.monotonic() < deadline, "the blob was never collected"
        await asyncio.sleep(0.05)
    assert failures == [sha]
    assert await blobs.stat(sha) is None
    assert await gw.gateway.store.collectable_blobs(time.time() + 3600, 10) == []  # row gone too


async def test_a_round_collects_every_collectable_blob_not_only_one_batch(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """One batch of 100 a round, every minute: an intake leaving more than 6,000 blobs an hour
    grew the store without end. And a blob is written for its owner only."""
    gw = await start_gateway(make_settings())
    store, blobs = gw.gateway.store, gw.gateway.blobs
    now = time.time()
    metas = [await blobs.put_bytes(b"%d,x\n" % n, "text/csv") for n in range(250)]
    for meta in metas:
        assert await store.keep_blob(meta, now - 10, now - 20)
    written = gw.gateway.blobs._data_path(metas[0].sha256)  # type: ignore[attr-defined]
    assert (await asyncio.to_thread(written.stat)).st_mode & 0o777 == 0o600
    assert await gw.gateway.collector.collect() == 250
    assert await store.collectable_blobs(time.time(), 1000) == []


async def test_a_blob_that_cannot_be_deleted_holds_up_no_other_and_keeps_no_mark(
    make_settings: SettingsFactory, start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete that always fails (a permission, an object lock) ended every round at the
    same blob, first in line by its mark: nothing after it was ever collected. And its mark
    stood for good, so that after ten minutes writers lifted it as abandoned while the
    collector's next attempt was deleting the bytes under them."""
    gw = await start_gateway(make_settings())
    store, blobs = gw.gateway.store, gw.gateway.blobs
    now = time.time()
    metas = [await blobs.put_bytes(b"%d,x\n" % n, "text/csv") for n in range(4)]
    for n, meta in enumerate(metas):  # the undeletable one is the oldest
        assert await store.keep_blob(meta, now - 10 + n, now - 20)
    stuck = metas[0].sha256
    real_delete = blobs.delete

    async def locked(sha256: str) -> None:
        if sha256 == stuck:
            raise PermissionError(13, "Permission denied")
        await real_delete(sha256)

    monkeypatch.setattr(blobs, "delete", locked)
    with structlog.testing.capture_logs() as logs:
        assert await gw.gateway.collector.collect() == 3
    (failed,) = [e for e in logs if e["event"] == "blobs.delete_failed"]  # why, not only what
    assert (failed["error"], failed["detail"]) == (
        "PermissionError",
        "[Errno 13] Permission denied",
    )
    assert [await blobs.stat(m.sha256) is None for m in metas] == [False, True, True, True]
    assert await store.collectable_blobs(time.time(), 10) == [stuck]  # tried again later
    later = BlobMeta(stuck, metas[0].size, "text/csv")
    assert await store.keep_blob(later, now + 60, time.time())  # a writer needs no patience


async def test_a_deletion_renews_a_mark_left_by_an_earlier_one(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """Marking again kept the first mark's time: a mark a crash left an hour ago read as
    abandoned while a new deletion was under it, and a writer lifted it, stored nothing
    (the bytes were there) and recorded its event; then the deletion took the bytes."""
    gw = await start_gateway(make_settings())
    store, blobs = gw.gateway.store, gw.gateway.blobs
    meta = await blobs.put_bytes(b"k,v\n1,2\n", "text/csv")
    now = time.time()
    assert await store.keep_blob(meta, now - 7200, now - 7300)
    assert await store.condemn_blob(meta.sha256, now - 3600)  # a collector that crashed
    assert await store.condemn_blob(meta.sha256, now)  # this round's, deleting now
    assert not await store.keep_blob(meta, now + 3600, now), "a writer waits for the deletion"

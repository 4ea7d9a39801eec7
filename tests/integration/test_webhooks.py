"""``POST /v1/hooks/{source}`` over real HTTP: every verify scheme, the mapping, the answers,
and a webhook that resumes a Workato sandbox job exactly once with the exact bytes."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from standardwebhooks.webhooks import Webhook

from gateway.sandbox.workato_state import WorkatoSandbox
from tests.conftest import RunningGateway, SettingsFactory

Start = Any

STD_OLD = "whsec_" + base64.b64encode(b"old-standard-webhooks-key-32byte").decode()
STD_NEW = "whsec_" + base64.b64encode(b"new-standard-webhooks-key-32byte").decode()
GITHUB_SECRET = "github-webhook-secret-1"
ORDERS_OLD = "orders-hmac-secret-old"
ORDERS_NEW = "orders-hmac-secret-new"
BEARER_1 = "bearer-token-one-111"
BEARER_2 = "bearer-token-two-222"
SECRETS = [
    STD_OLD,
    STD_NEW,
    STD_OLD.removeprefix("whsec_"),
    STD_NEW.removeprefix("whsec_"),
    GITHUB_SECRET,
    ORDERS_OLD,
    ORDERS_NEW,
    BEARER_1,
    BEARER_2,
]
OPEN_CAP_BYTES = 1024

SOURCES: list[dict[str, Any]] = [
    {
        "name": "std",
        "tenant": "acme",
        "verify": {"scheme": "standard_webhooks", "secrets": [STD_NEW, STD_OLD]},
        "mapping": {
            "key": "/job/id",
            "status": "/job/status",
            "status_map": {"done": "succeeded", "error": "failed"},
            "data": "/job/result",
        },
    },
    {
        "name": "github",
        "tenant": "acme",
        "verify": {"scheme": "hmac_sha256", "preset": "github", "secret": GITHUB_SECRET},
        "mapping": {
            "key": "/run/key",
            "status": "/run/conclusion",
            "status_map": {"success": "succeeded", "null": "ignore"},  # null: not ended yet
            "default_status": "failed",
        },
    },
    {
        "name": "orders",
        "tenant": "acme",
        "verify": {
            "scheme": "hmac_sha256",
            "header": "X-Signature",
            "prefix": "sha256=",
            "secrets": [ORDERS_NEW, ORDERS_OLD],
        },
        "mapping": {
            "key": "/order/id",
            "key_template": "order-{value}",
            "event_id": "/delivery",
            "status": "/order/state",
            "status_map": {"shipped": "succeeded"},
            "default_status": "failed",
            "data": "/order",
        },
    },
    {
        "name": "bearer",
        "tenant": "acme",
        "verify": {"scheme": "bearer", "tokens": [BEARER_1, BEARER_2]},
        "mapping": {"key": "/key", "event_id_header": "X-Request-Id", "status": "/status"},
    },
    {
        "name": "open",
        "tenant": "acme",
        "verify": {"scheme": "none"},
        "mapping": {"key": "/key", "event_id": "/id", "default_status": "succeeded"},
        "max_body_bytes": OPEN_CAP_BYTES,
    },
]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    text: str
    content_type: str


class Hooks:
    """Posts raw bytes to the gateway's webhook endpoint and keeps every answer's text."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.texts: list[str] = []

    async def post(self, source: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        url = f"{self.gw.url}/v1/hooks/{source}"
        async with self.gw.http.post(url, data=body, headers=headers or {}) as resp:
            text = await resp.text()
            self.texts.append(text)
            return Answer(resp.status, json.loads(text), text, resp.content_type)

    async def std(self, body: bytes, secret: str = STD_NEW, **kw: Any) -> Answer:
        return await self.post("std", body, std_headers(body, secret, **kw))

    async def orders(self, body: bytes, secret: str = ORDERS_NEW) -> Answer:
        return await self.post("orders", body, {"X-Signature": "sha256=" + hex_hmac(secret, body)})


def std_headers(
    body: bytes, secret: str, msg_id: str = "msg-1", offset_s: int = 0
) -> dict[str, str]:
    """Signed as a sender using the standardwebhooks library signs."""
    ts = int(time.time()) + offset_s
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def job_body(key: str = "job-1", status: str = "done", result: str = '{"rows": 3}') -> bytes:
    return f'{{"job": {{"id": "{key}", "status": "{status}", "result": {result}}}}}'.encode()


@pytest.fixture
async def gw(make_settings: SettingsFactory, start_gateway: Start) -> RunningGateway:
    running: RunningGateway = await start_gateway(make_settings({"sources": SOURCES}))
    return running


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture
async def hooks(gw: RunningGateway, logs: list[dict[str, Any]]) -> AsyncIterator[Hooks]:
    """Every test's answers and log lines are searched for secrets when it ends."""
    client = Hooks(gw)
    yield client
    shown = "\n".join(client.texts) + "\n" + "\n".join(repr(line) for line in logs)
    assert [s for s in SECRETS if s in shown] == []


def rejected(answer: Answer, reason: str) -> None:
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"
    assert (answer.body["type"], answer.body["reason"]) == ("/problems/bad-signature", reason)


# -- Standard Webhooks -----------------------------------------------------------------------


async def test_standard_webhook_is_accepted_and_its_replay_is_a_duplicate(hooks: Hooks) -> None:
    body = job_body()
    headers = std_headers(body, STD_NEW, msg_id="msg-a")
    first = await hooks.post("std", body, headers)
    assert (first.status, first.body) == (
        202,
        {"outcome": "buffered", "event_id": "msg-a", "key": "job-1"},
    )
    replay = await hooks.post("std", body, headers)
    assert (replay.status, replay.body["outcome"]) == (200, "duplicate")
    # re-signed later with the same webhook-id: still the same event
    again = await hooks.post("std", body, std_headers(body, STD_NEW, msg_id="msg-a", offset_s=5))
    assert (again.status, again.body["outcome"]) == (200, "duplicate")


async def test_a_signed_body_that_is_not_utf8_is_a_422_not_a_bad_signature(
    hooks: Hooks, gw: RunningGateway
) -> None:
    """Refused before its signature was checked, it was a 401 bad_signature, counted as one:
    the operator was told the secret was wrong."""
    body = b'{"job": {"id": "j", "status": "done", "result": "\xff"}}'
    ts = str(int(time.time()))
    key = base64.b64decode(STD_NEW.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg-u." + ts.encode() + b"." + body, hashlib.sha256).digest()
    headers = {"webhook-id": "msg-u", "webhook-timestamp": ts}
    headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
    answer = await hooks.post("std", body, headers)
    assert (answer.status, answer.body["type"]) == (422, "/problems/invalid-input")
    counted = gw.gateway.metrics.registry.get_sample_value
    assert (
        counted("gateway_webhooks_rejected_total", {"source": "std", "reason": "bad_signature"})
        is None
    )


async def test_rotation_accepts_the_old_and_the_new_secret(hooks: Hooks) -> None:
    old = await hooks.std(job_body("k-old"), STD_OLD, msg_id="m-old")
    new = await hooks.std(job_body("k-new"), STD_NEW, msg_id="m-new")
    assert (old.status, new.status) == (202, 202)


async def test_tampered_body_and_wrong_secret_are_401(hooks: Hooks) -> None:
    body = job_body()
    headers = std_headers(body, STD_NEW)
    rejected(await hooks.post("std", job_body(status="error"), headers), "bad_signature")
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    rejected(await hooks.std(body, other), "bad_signature")


@pytest.mark.parametrize(
    ("source", "challenge"),
    [
        ("std", 'Standard-Webhooks header="webhook-signature"'),
        ("github", 'HMAC-SHA256 header="X-Hub-Signature-256"'),
        ("orders", 'HMAC-SHA256 header="X-Signature"'),
        ("bearer", "Bearer"),
    ],
)
async def test_a_refused_webhook_names_its_sources_scheme_not_the_apis(
    gw: RunningGateway, source: str, challenge: str
) -> None:
    """Every 401 said ``WWW-Authenticate: Bearer``, the API's scheme, even where a signature
    in another header was wanted."""
    async with gw.http.post(f"{gw.url}/v1/hooks/{source}", data=job_body()) as resp:
        assert resp.status == 401
        assert resp.headers.getall("WWW-Authenticate") == [challenge]


async def test_stale_and_future_timestamps_are_401(hooks: Hooks) -> None:
    rejected(await hooks.std(job_body(), offset_s=-301), "stale_timestamp")
    rejected(await hooks.std(job_body(), offset_s=+301), "future_timestamp")
    rejected(await hooks.post("std", job_body(), {}), "missing_signature")


async def test_refused_webhooks_are_logged_without_what_was_presented(
    hooks: Hooks, logs: list[dict[str, Any]]
) -> None:
    await hooks.std(job_body(), STD_OLD, offset_s=-1000)
    rejected_lines = [line for line in logs if line["event"] == "webhook.rejected"]
    assert rejected_lines == [
        {
            "event": "webhook.rejected",
            "source": "std",
            "reason": "stale_timestamp",
            "log_level": "warning",
        }
    ]


# -- HMAC-SHA256: GitHub preset and a custom header ------------------------------------------


async def test_github_preset(hooks: Hooks) -> None:
    body = b'{"action": "completed", "run": {"key": "build-9", "conclusion": "success"}}'
    signature = "sha256=" + hex_hmac(GITHUB_SECRET, body)
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "gh-delivery-1"}
    accepted = await hooks.post("github", body, headers)
    assert (accepted.status, accepted.body) == (
        202,
        {"outcome": "buffered", "event_id": "gh-delivery-1", "key": "build-9"},
    )
    assert (await hooks.post("github", body, headers)).body["outcome"] == "duplicate"
    wrong = {**headers, "X-Hub-Signature-256": "sha256=" + hex_hmac("not-the-secret", body)}
    rejected(await hooks.post("github", body, wrong), "bad_signature")
    rejected(await hooks.post("github", body + b" ", headers), "bad_signature")
    del headers["X-Hub-Signature-256"]
    rejected(await hooks.post("github", body, headers), "missing_signature")


async def test_custom_hmac_with_rotation_template_status_map_and_default(hooks: Hooks) -> None:
    shipped = b'{"delivery": "d-1", "order": {"id": 42, "state": "shipped"}}'
    answer = await hooks.orders(shipped, ORDERS_OLD)
    assert (answer.status, answer.body) == (
        202,
        {"outcome": "buffered", "event_id": "d-1", "key": "order-42"},
    )
    lost = b'{"delivery": "d-2", "order": {"id": 43, "state": "lost in transit"}}'
    assert (await hooks.orders(lost, ORDERS_NEW)).status == 202
    rejected(await hooks.orders(lost, "guessed"), "bad_signature")


# -- bearer and none -------------------------------------------------------------------------


async def test_bearer_tokens(hooks: Hooks) -> None:
    body = b'{"key": "k-1", "status": "succeeded"}'
    for number, token in enumerate((BEARER_1, BEARER_2)):
        headers = {"Authorization": f"Bearer {token}", "X-Request-Id": f"r-{number}"}
        assert (await hooks.post("bearer", body, headers)).status == 202
    wrong = {"Authorization": "Bearer bearer-token-one-11", "X-Request-Id": "r-9"}
    rejected(await hooks.post("bearer", body, wrong), "bad_signature")
    rejected(await hooks.post("bearer", body, {"X-Request-Id": "r-9"}), "missing_signature")


async def test_none_needs_no_credentials(hooks: Hooks, gw: RunningGateway) -> None:
    answer = await hooks.post("open", b'{"id": "o-1", "key": "k"}')
    assert (answer.status, answer.body["outcome"]) == (202, "buffered")
    async with gw.http.get(gw.url + "/metrics") as resp:
        metrics = await resp.text()
    assert 'gateway_events_total{outcome="buffered",source="open",tenant="acme"} 1.0' in metrics


# -- mapping errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "body", "problem"),
    [
        ("open", b'{"id": "1"}', {"field": "key", "pointer": "/key"}),
        ("open", b'{"key": "k"}', {"field": "event_id", "pointer": "/id"}),
        ("open", b'{"id": "1", "key": ["k"]}', {"field": "key", "pointer": "/key"}),
        ("open", b'{"id": "1", "key": ""}', {"field": "key", "pointer": "/key"}),
        ("std", job_body(status="paused"), {"field": "status", "pointer": "/job/status"}),
        (
            "std",
            b'{"job": {"id": "k", "status": "done"}}',
            {"field": "data", "pointer": "/job/result"},
        ),
    ],
)
async def test_mapping_errors_are_422_naming_the_pointer(
    hooks: Hooks, source: str, body: bytes, problem: dict[str, str]
) -> None:
    headers = std_headers(body, STD_NEW) if source == "std" else {}
    answer = await hooks.post(source, body, headers)
    assert (answer.status, answer.content_type) == (422, "application/problem+json")
    assert answer.body["type"] == "/problems/invalid-input"
    assert {k: answer.body[k] for k in problem} == problem
    assert problem["pointer"] in answer.body["detail"]


async def test_missing_event_id_header_is_422_naming_the_header(hooks: Hooks) -> None:
    headers = {"Authorization": f"Bearer {BEARER_1}"}
    answer = await hooks.post("bearer", b'{"key": "k", "status": "failed"}', headers)
    assert (answer.status, answer.body["header"]) == (422, "X-Request-Id")


async def test_a_verified_body_that_is_not_json_is_422(hooks: Hooks) -> None:
    answer = await hooks.std(b"{not json")
    assert (answer.status, answer.body["type"]) == (422, "/problems/invalid-input")


# -- 404 and 413 -----------------------------------------------------------------------------


async def test_unknown_source_is_404(hooks: Hooks) -> None:
    answer = await hooks.post("nope", b"{}")
    assert (answer.status, answer.body["type"]) == (404, "/problems/not-found")


async def test_over_the_cap_is_413_by_content_length_or_by_reading(
    hooks: Hooks, gw: RunningGateway
) -> None:
    big = padded("1", OPEN_CAP_BYTES + 1)
    answer = await hooks.post("open", big)
    assert (answer.status, answer.body["type"]) == (413, "/problems/too-large")

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    async with gw.http.post(gw.url + "/v1/hooks/open", data=chunks()) as resp:
        assert resp.status == 413
    assert (await hooks.post("open", padded("2", OPEN_CAP_BYTES))).status == 202


def padded(event_id: str, size: int) -> bytes:
    """An event for the open source whose body is exactly ``size`` bytes."""
    head = json.dumps({"id": event_id, "key": "k", "pad": ""}).encode()
    return head[:-2] + b"x" * (size - len(head)) + head[-2:]


# -- end to end: webhook → Workato resume, exactly once, byte-exact ---------------------------


async def resumed(gw: RunningGateway, key: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            _, wait = await gw.get(f"/v1/waits/{key}")
            if (wait.get("delivery") or {}).get("state") == "delivered":
                return dict(wait)
            await asyncio.sleep(0.05)


async def test_webhook_resumes_the_sandbox_job_once_with_the_exact_bytes(
    hooks: Hooks, gw: RunningGateway, workato: WorkatoSandbox
) -> None:
    job = workato.create_job()
    status, _ = await gw.post("/v1/waits", {"key": "job-7", "resume_token": job.resume.token})
    assert status == 201
    result = '{ "n": 1.0000000000000001, "e": "\\u00e9", "list": [ 1 , 2 ] }'
    body = job_body("job-7", "done", result)

    first = await hooks.std(body, msg_id="msg-7")
    assert (first.status, first.body["outcome"]) == (202, "matched")
    wait = await resumed(gw, "job-7")
    assert (wait["event"]["id"], wait["event"]["source"]) == ("msg-7", "std")

    assert (await hooks.std(body, msg_id="msg-7")).body["outcome"] == "duplicate"
    late = await hooks.std(job_body("job-7", "error"), msg_id="msg-8")
    assert (late.status, late.body["outcome"]) == (202, "late")
    await asyncio.sleep(0.3)  # room for a wrong second delivery to happen
    assert (job.resume.count, job.resume.rejected) == (1, 0)
    assert job.resume.body is not None
    assert b'"payload":' + result.encode() in job.resume.body
    sent = json.loads(job.resume.body)["data"]
    assert (sent["status"], sent["key"], sent["event_id"], sent["source"]) == (
        "succeeded",
        "job-7",
        "msg-7",
        "std",
    )


async def test_a_progress_report_mapped_to_ignore_leaves_the_wait_to_the_completion(
    hooks: Hooks, gw: RunningGateway, workato: WorkatoSandbox
) -> None:
    """GitHub posts workflow_run "requested" and "in_progress" (conclusion null) to the URL
    of "completed". With no way to ignore them, the first resolved the wait as failed, and
    the completion came late."""
    job = workato.create_job()
    assert (await gw.post("/v1/waits", {"key": "build-5", "resume_token": job.resume.token}))[0]

    def delivery(n: int, conclusion: str) -> dict[str, str]:
        body = b'{"run": {"key": "build-5", "conclusion": %s}}' % conclusion.encode()
        sent = {"X-Hub-Signature-256": "sha256=" + hex_hmac(GITHUB_SECRET, body)}
        return {"body": body.decode(), **sent, "X-GitHub-Delivery": f"gh-{n}"}

    for n, conclusion in enumerate(("null", "null", '"success"')):
        headers = delivery(n, conclusion)
        answer = await hooks.post("github", headers.pop("body").encode(), headers)
        expected = (200, "ignored") if conclusion == "null" else (202, "matched")
        assert (answer.status, answer.body["outcome"]) == expected
    await resumed(gw, "build-5")
    assert job.resume.body is not None
    assert (job.resume.attempts, json.loads(job.resume.body)["data"]["status"]) == (1, "succeeded")
    counted = gw.gateway.metrics.registry.get_sample_value
    labels = {"tenant": "acme", "source": "github", "outcome": "ignored"}
    assert counted("gateway_events_total", labels) == 2


@pytest.mark.parametrize("size", [60_000, 200_000])  # decoded whole; walked a value at a time
async def test_a_large_body_in_memory_is_mapped_to_the_exact_bytes(
    hooks: Hooks, gw: RunningGateway, workato: WorkatoSandbox, size: int
) -> None:
    job = workato.create_job()
    await gw.post("/v1/waits", {"key": f"big-{size}", "resume_token": job.resume.token})
    rows = ", ".join('{"n": 1.0000000000000001 }' for _ in range(size // 27))
    result = '{ "rows" : [ ' + rows + " ] }"
    body = job_body(f"big-{size}", "error", result)
    answer = await hooks.std(body, msg_id=f"msg-{size}")
    assert (answer.status, answer.body["outcome"]) == (202, "matched")
    await resumed(gw, f"big-{size}")
    assert job.resume.body is not None
    assert b'"payload":' + result.encode() + b"}" in job.resume.body
    assert json.loads(job.resume.body)["data"]["status"] == "failed"


async def test_webhook_before_its_wait_is_buffered_then_resumes(
    hooks: Hooks, gw: RunningGateway, workato: WorkatoSandbox
) -> None:
    shipped = b'{"delivery": "d-9", "order": {"id": 9, "state": "shipped", "total": 9.90}}'
    assert (await hooks.orders(shipped)).body["outcome"] == "buffered"
    job = workato.create_job()
    status, reg = await gw.post("/v1/waits", {"key": "order-9", "resume_token": job.resume.token})
    assert (status, reg["state"]) == (201, "resolved")
    await resumed(gw, "order-9")
    assert job.resume.attempts == 1
    assert job.resume.body is not None
    assert b'"payload":{"id": 9, "state": "shipped", "total": 9.90}' in job.resume.body


async def test_a_header_credential_is_checked_before_the_body_is_read(gw: RunningGateway) -> None:
    too_big = b"{" + b" " * (2 * 1024 * 1024) + b"}"  # over the bearer source's 1 MiB cap

    async def post(token: str) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{gw.url}/v1/hooks/bearer"
        async with gw.http.post(url, data=io.BytesIO(too_big), headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    status, problem = await post("not-a-token")
    assert (status, problem["type"]) == (401, "/problems/bad-signature")
    status, _ = await post(BEARER_1)
    assert status == 413  # an authenticated sender learns about the cap


async def test_a_compressed_body_is_415_and_never_decompressed(hooks: Hooks) -> None:
    """Its declared length is not its size: a 165-byte gzip of 100 KB got past the source's
    1 KB cap, and a 58 KB one of 60 MB was held in memory whole and stored inline. Garbage
    said to be gzip answered 500."""
    big = b'{"id": "z-1", "key": "k", "pad": "' + b"a" * 100_000 + b'"}'
    for encoding, body in (("gzip", gzip.compress(big)), ("deflate", b"not deflate at all")):
        answer = await hooks.post("open", body, {"Content-Encoding": encoding})
        assert answer.status == 415, answer.text
        assert answer.body["errors"] == [
            {"field": "Content-Encoding", "message": "must be absent or identity"}
        ]
    assert (
        await hooks.post("open", b'{"id": "o-1", "key": "k"}', {"Content-Encoding": "identity"})
    ).status == 202


async def test_a_timestamp_is_judged_by_when_the_request_arrived(
    make_settings: SettingsFactory, start_gateway: Start
) -> None:
    """A body that took longer to arrive than the tolerance left its timestamp was refused as
    stale, though it was fresh when the request came."""
    std = {**SOURCES[0], "verify": {**SOURCES[0]["verify"], "tolerance_s": 2.0}}
    gw = await start_gateway(make_settings({"sources": [std]}))
    body = job_body("slow")
    headers = std_headers(body, STD_NEW, msg_id="m-slow", offset_s=-1)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.port)
    writer.write(
        f"POST /v1/hooks/std HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n{head}"
        "Connection: close\r\n\r\n".encode()
    )
    writer.write(body[:10])
    await writer.drain()
    await asyncio.sleep(2.5)  # past the tolerance by the time the rest comes
    writer.write(body[10:])
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer

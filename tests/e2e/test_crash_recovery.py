"""The CLI as a subprocess: 500 events, SIGKILL in the middle of delivery, restart.

Proven through the sandbox's own counts: every wait resumed exactly once, nothing lost, and
the rate limit never exceeded in any window, across the crash. The same run is then searched
for resume tokens and credentials: logs, the database files and every API answer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Process, free_port, wait_http

pytestmark = pytest.mark.e2e

EVENTS = 500
LIMIT, WINDOW_S = 100, 5.0
WORKATO_TOKEN = "e2e-workato-credential-7f3a9c"
API_KEY = "e2e-connector-api-key-51b2d8"
URL_KEY_RAW = b"e2e-claim-check-url-signing-key!"
URL_KEY = base64.b64encode(URL_KEY_RAW).decode()
TOKEN_KEY_RAW = os.urandom(32)
TOKEN_KEY = base64.b64encode(TOKEN_KEY_RAW).decode()
MAX_REQUEST_BYTES = 2_000  # every tenth event's data is larger: those go by claim check


def gateway_config(tmp: Path, port: int, sandbox_url: str) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(f"""
[server]
port = {port}

[store]
url = "sqlite:///{tmp / "gateway.db"}"

[blobs]
url = "file:///{tmp / "blobs"}"

[delivery]
poll_interval_s = 0.1
sweep_interval_s = 0.5
request_timeout_s = 2.0
lease_s = 3.0
backoff_base_s = 0.1
backoff_cap_s = 1.0
rate_window_s = {WINDOW_S}
rate_margin_s = 0.1

[security]
token_keys = [{{ id = "k1", key = "{TOKEN_KEY}" }}]
url_keys = [{{ id = "u1", key = "{URL_KEY}" }}]

[logging]
format = "json"
level = "debug"

[[tenants]]
name = "acme"
base_url = "{sandbox_url}"
api_token = "{WORKATO_TOKEN}"
api_keys = ["{API_KEY}"]
rate_limit_per_minute = {LIMIT}
max_request_bytes = {MAX_REQUEST_BYTES}
""")
    return path


class Client:
    """Collects every answer of the gateway, headers and body, whatever its status, so they
    can be searched for secrets afterwards (the sandbox's control API shows tokens: not
    collected)."""

    def __init__(self, session: aiohttp.ClientSession, gateway: str) -> None:
        self.session = session
        self.gateway = gateway
        self.answers: list[bytes] = []

    async def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        auth: bool = True,
        expect: int | None = None,
        key: str = API_KEY,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if auth else {}
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            raw = await resp.read()
            if url.startswith(self.gateway):
                self.answers.append(str(resp.headers).encode() + b"\n" + raw)
            if expect is None:
                assert resp.status < 300, (resp.status, raw[:300])
            else:
                assert resp.status == expect, (resp.status, raw[:300])
            if not resp.content_type.endswith("json"):  # /metrics is text
                return raw
            return await resp.json(content_type=None)


async def register_and_send(client: Client, gw: str, jobs: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(i: int, job: dict[str, Any]) -> None:
        async with gate:
            await client.call(
                "POST", f"{gw}/v1/waits", {"key": f"order-{i}", "resume_token": job["resume_token"]}
            )
            await client.call(
                "POST",
                f"{gw}/v1/events",
                {
                    "id": f"evt-{i}",
                    "key": f"order-{i}",
                    "status": "succeeded",
                    "data": {"order": i, "note": "ünïcode ✓" * (300 if i % 10 == 0 else 1)},
                },
            )

    await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))


async def poll(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {timeout_s}s")


async def test_sigkill_mid_delivery_loses_nothing_and_doubles_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    sandbox_port, gw_port = free_port(), free_port()
    sandbox_url, gw = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{gw_port}"
    processes.append(
        Process(
            ["sandbox", "workato", "--port", str(sandbox_port), "--api-token", WORKATO_TOKEN],
            tmp_path / "sandbox.log",
        )
    )
    wait_http(f"{sandbox_url}/_sandbox/stats")
    config = gateway_config(tmp_path, gw_port, sandbox_url)
    first = Process(["run", "--config", str(config)], tmp_path / "gateway-1.log")
    processes.append(first)
    wait_http(f"{gw}/healthz")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        client = Client(session, gw)
        await client.call(
            "PUT",
            f"{sandbox_url}/_sandbox/settings",
            {"rate_limit_per_minute": LIMIT, "window_s": WINDOW_S},
            auth=False,
        )
        # Slow answers keep requests in flight, so the kill catches some mid-request; and now
        # and then Workato resumes the job but answers 500, so the retry meets a used token.
        await client.call(
            "PUT",
            f"{sandbox_url}/_sandbox/faults",
            {"random": {"latency_s": 0.5, "processed_error_rate": 0.03, "seed": 7}},
            auth=False,
        )
        jobs = [
            await client.call("POST", f"{sandbox_url}/_sandbox/jobs", {}, auth=False)
            for _ in range(EVENTS)
        ]
        await register_and_send(client, gw, jobs)

        async def stats() -> dict[str, Any]:
            return dict(await client.call("GET", f"{sandbox_url}/_sandbox/stats", auth=False))

        # Past the first window's worth, so the restart must respect sends made before the crash.
        await poll(lambda: _at_least(stats, LIMIT + 20), timeout_s=30)
        first.kill()
        killed_at = await stats()
        assert killed_at["resumed_jobs"] < EVENTS, "the crash must happen mid-delivery"

        second = Process(["run", "--config", str(config)], tmp_path / "gateway-2.log")
        processes.append(second)
        wait_http(f"{gw}/healthz")
        await _malformed_request_with_the_api_key(gw_port)
        await poll(lambda: _at_least(stats, EVENTS), timeout_s=120)
        final = await stats()
        states = await _delivery_states(client, gw)
        log = await client.call("GET", f"{sandbox_url}/_sandbox/requests", auth=False)
        resumed = await client.call("GET", f"{sandbox_url}/_sandbox/jobs", auth=False)
        refs = [j["resumed_data"]["payload_ref"] for j in resumed if _by_ref(j)]
        fetched = [await client.call("GET", ref["url"], auth=False) for ref in refs]
        await _answers_that_are_not_successes(client, gw, jobs[0]["resume_token"])
        assert second.terminate() == 0, "SIGTERM is a clean shutdown"

    assert final["resumed_jobs"] == EVENTS, "every wait was resumed"
    # The sandbox resumes a token once and refuses it after, so a second send shows as a
    # refusal. Only the retry of an attempt that may have landed (a 500 after processing, or
    # the crash) may meet one, and it ends that delivery delivered_unconfirmed: a delivery
    # that ended delivered had no second send.
    by_token = {job["resume_token"]: f"order-{i}" for i, job in enumerate(jobs)}
    refused = {by_token[j["resume_token"]] for j in resumed if j["rejected_resumes"] > 0}
    unconfirmed = {key for key, state in states.items() if state == "delivered_unconfirmed"}
    assert unconfirmed, "some retries met a used token"
    assert refused == unconfirmed, "a token was sent again after its delivery was settled"
    assert final["rate_limited_total"] == 0, "Workato never had to refuse a request"
    assert set(states.values()) <= {"delivered", "delivered_unconfirmed"}
    sent = sorted(e["at"] for e in log if e["path"] == "/api/job/resume")
    assert all(sent[i + LIMIT] - sent[i] >= WINDOW_S for i in range(len(sent) - LIMIT)), (
        "more than the limit in one window"
    )
    assert len(refs) == EVENTS // 10, "the large payloads went by claim check"
    assert all(f["note"] == "ünïcode ✓" * 300 for f in fetched), "and their URLs serve them"
    _assert_no_secrets(tmp_path, client.answers, [j["resume_token"] for j in jobs])


async def _malformed_request_with_the_api_key(port: int) -> None:
    """A header line with a control character: aiohttp refuses it (400) and logs an error whose
    traceback quotes the line, key and all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET /v1/waits/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\x01\r\n\r\n"
    writer.write(head.encode())
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"400"


async def _answers_that_are_not_successes(client: Client, gw: str, token: str) -> None:
    """Every kind of answer, to be searched too: the operational endpoints, and refusals of
    requests that carry a resume token or a key (a problem document may quote its input)."""
    for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
        await client.call("GET", f"{gw}{path}", auth=False)
    fresh = {"key": "fresh", "resume_token": f"{token}-fresh"}
    await client.call("POST", f"{gw}/v1/waits", fresh, expect=201)
    other = {"key": "fresh", "resume_token": f"{token}-other"}
    await client.call("POST", f"{gw}/v1/waits", other, expect=409)  # an open key, another token
    elsewhere = {"key": "order-1", "resume_token": token}  # order-0's token
    await client.call("POST", f"{gw}/v1/waits", elsewhere, expect=409)
    await client.call("POST", f"{gw}/v1/waits", {"key": "", "resume_token": token}, expect=422)
    bad_metadata = {"key": "x", "resume_token": token, "metadata": {"n": 1e999}}
    await client.call("POST", f"{gw}/v1/waits", bad_metadata, expect=422)
    await client.call("POST", f"{gw}/v1/waits", fresh, expect=401, key=f"{API_KEY}x")
    await client.call("DELETE", f"{gw}/v1/waits/fresh", expect=200)
    await client.call("DELETE", f"{gw}/v1/waits/order-0", expect=409)
    await client.call("GET", f"{gw}/v1/blobs/{'0' * 64}?expires=1&sig=x", auth=False, expect=403)


def _by_ref(job: dict[str, Any]) -> bool:
    data = job.get("resumed_data") or {}
    return data.get("payload") is None and "payload_ref" in data


async def _at_least(stats: Any, n: int) -> bool:
    return bool((await stats())["resumed_jobs"] >= n)


async def _delivery_states(client: Client, gw: str) -> dict[str, str]:
    """Each wait's key → its delivery's final state."""

    async def state_of(i: int) -> str:
        wait = await client.call("GET", f"{gw}/v1/waits/order-{i}")
        return str(wait["delivery"]["state"])

    async def settled() -> dict[str, str] | None:
        found = await asyncio.gather(*(state_of(i) for i in range(EVENTS)))
        states = {f"order-{i}": state for i, state in enumerate(found)}
        return None if {"pending", "sending"} & set(found) else states

    result: dict[str, str] = await poll(settled, timeout_s=30)
    return result


def _assert_no_secrets(tmp: Path, answers: list[bytes], tokens: list[str]) -> None:
    """Invariant 6: no token or credential in logs, database files or API answers."""
    secrets = [t.encode() for t in tokens] + [WORKATO_TOKEN.encode(), API_KEY.encode()]
    secrets += [URL_KEY.encode(), URL_KEY_RAW, TOKEN_KEY.encode(), TOKEN_KEY_RAW]
    gateway_logs = list(tmp.glob("gateway-*.log"))
    db_files = list(tmp.glob("gateway.db*")) + [p for p in tmp.glob("blobs/**/*") if p.is_file()]
    assert len(gateway_logs) == 2
    assert db_files
    haystacks = {str(p): p.read_bytes() for p in gateway_logs + db_files}
    haystacks |= {f"answer {i}": a for i, a in enumerate(answers)}
    assert all(len(p.read_bytes()) > 10_000 for p in gateway_logs), "the logs were written"
    assert len(answers) > 2 * EVENTS
    leaks = [(name, s[:6]) for name, hay in haystacks.items() for s in secrets if s in hay]
    assert leaks == [], f"secrets leaked: {leaks[:5]}"

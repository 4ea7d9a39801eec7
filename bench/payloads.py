"""Scenario 4, memory: how much the gateway grows while it takes and delivers one large event.

Two cases, each with a fresh gateway and sandbox so that their peaks do not mix:

* claim check: a 200 MB event, far over Workato's 50,000,000-byte request limit, is spooled,
  validated and its ``data`` copied to the blob store; the resume carries ``payload_ref``
  (target: the gateway grows by at most 32 MB);
* inline: a 45 MB payload, which fits, is streamed from the blob store inside the resume body
  (target: the growth is at most 2.5 times the payload).

Before each case the gateway delivers a few small events and one spooled event, so imports,
worker threads and first-use buffers are paid for; its resident set then is the baseline, and
its peak from then until the delivery is settled (``bench.memory``), minus the baseline, is the
growth. The bench streams the event from a generator, hashing the payload on the way, and
checks what the sandbox received against it: a figure measured on a delivery that did not go
as intended would be worse than none. MB here is 10^6 bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import string
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.console import note
from bench.memory import PeakRss
from bench.messages import JSON
from bench.procs import Server, Supervisor
from bench.stack import API_KEY, Job, Sandbox, api_of, register_waits, start_gateway, start_sandbox
from bench.stats import ratio

MB = 1_000_000
CLAIM_CHECK_TARGET_MB = 32.0
INLINE_TARGET_RATIO = 2.5
CHUNK_BYTES = 1 << 20
WARMUP_SIZES = (1_000, 1_000, 1_000, 1_000, 2 * MB)
"""The last one is over the gateway's spool threshold (1 MiB), so it takes the large path."""
SEND_TIMEOUT_S = 300.0
DELIVER_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.05
REFERENCE_BODY_MAX_BYTES = 4096
FINAL_STATES = ("delivered", "delivered_unconfirmed", "dead", "expired")
_FILLER = ((string.ascii_letters + string.digits).encode() * (CHUNK_BYTES // 62 + 1))[:CHUNK_BYTES]
_BODY_TAIL = b"}}"  # closes the envelope and the resume body after an inline payload
_ENVELOPE = {"status", "key", "event_id", "source", "received_at", "metadata", "payload"}


@dataclass(frozen=True, slots=True)
class PayloadPlan:
    claim_check_bytes: int
    inline_bytes: int


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    size: int
    member: str
    inline: bool


class Payload:
    """An event's ``data``, ``{"<member>":"<ASCII>"}`` of exactly ``size`` bytes, generated
    chunk by chunk; ``sha256`` is known once ``chunks`` has been consumed."""

    def __init__(self, member: str, size: int) -> None:
        self.member = member
        self.size = size
        self._digest = hashlib.sha256()

    def chunks(self) -> Iterator[bytes]:
        head, tail = b'{"%s":"' % self.member.encode(), b'"}'
        left = self.size - len(head) - len(tail)
        for piece in itertools.chain((head,), _filler(left), (tail,)):
            self._digest.update(piece)
            yield piece

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def _filler(size: int) -> Iterator[bytes]:
    while size > 0:
        piece = _FILLER if size >= len(_FILLER) else _FILLER[:size]
        size -= len(piece)
        yield piece


@dataclass(frozen=True, slots=True)
class Stack:
    """One case's servers and the HTTP client that talks to the gateway."""

    gateway: Server
    sandbox: Sandbox
    client: aiohttp.ClientSession


@dataclass(frozen=True, slots=True)
class Delivered:
    """One event that matched and was delivered: wall-clock times and the job's final state."""

    sent_at: float
    accepted_at: float
    job_state: dict[str, Any]

    @property
    def accept_s(self) -> float:
        return self.accepted_at - self.sent_at

    @property
    def deliver_s(self) -> float:
        return float(self.job_state["resumed_at"]) - self.accepted_at


@dataclass(frozen=True, slots=True)
class Measured:
    """Resident set in bytes before and at the peak, and the delivery it was measured on."""

    baseline: int
    peak: int
    sampled_peak: int
    delivered: Delivered


async def send_event(client: aiohttp.ClientSession, event_id: str, key: str, data: Payload) -> None:
    """``POST /v1/events`` streamed from a generator; it must match the key's wait."""
    head = b'{"id":"%s","key":"%s","status":"succeeded","data":' % (event_id.encode(), key.encode())
    size = len(head) + data.size + 1

    async def body() -> AsyncIterator[bytes]:
        yield head
        for chunk in data.chunks():
            yield chunk
        yield b"}"

    headers = {"Content-Type": JSON, "Content-Length": str(size)}
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
    async with client.post("/v1/events", data=body(), headers=headers, timeout=timeout) as reply:
        answer = await reply.read()
    if reply.status != 202 or json.loads(answer).get("outcome") != "matched":
        raise RuntimeError(f"event {event_id}: HTTP {reply.status} {answer[:300]!r}, not matched")


async def deliver(stack: Stack, job: Job, key: str, data: Payload) -> Delivered:
    """Send an event for ``key`` and wait until the sandbox has the resume and the gateway has
    settled it as delivered at the first attempt."""
    sent_at = time.time()
    await send_event(stack.client, f"{key}-event", key, data)
    accepted_at = time.time()
    state = await _resumed(stack.sandbox, job)
    await _settled(stack.client, key)
    return Delivered(sent_at, accepted_at, state)


async def _resumed(sandbox: Sandbox, job: Job) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVER_TIMEOUT_S
    while time.monotonic() < deadline:
        state = await sandbox.job(job.job_id)
        if state["resume_count"] > 0:
            return state
        await asyncio.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"job {job.job_id} not resumed after {DELIVER_TIMEOUT_S:g} s")


async def _settled(client: aiohttp.ClientSession, key: str) -> None:
    deadline = time.monotonic() + DELIVER_TIMEOUT_S
    while time.monotonic() < deadline:
        async with client.get(f"/v1/waits/{key}") as reply:
            reply.raise_for_status()
            delivery = (await reply.json())["delivery"] or {}
        if delivery.get("state") in FINAL_STATES:
            if (delivery["state"], delivery["attempts"]) != ("delivered", 1):
                raise RuntimeError(f"wait {key}: not delivered at the first attempt: {delivery}")
            return
        await asyncio.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"wait {key}: delivery not settled after {DELIVER_TIMEOUT_S:g} s")


async def measure(case: Case, workdir: Path) -> Measured:
    """Fresh sandbox and gateway; warm up, then one event of the case under ``PeakRss``."""
    casedir = workdir / f"payloads-{case.name}"
    casedir.mkdir()
    try:
        with Supervisor(casedir) as procs:
            sandbox = await start_sandbox(procs)
            try:
                gateway = await start_gateway(procs, casedir, sandbox)
                headers = {"Authorization": f"Bearer {API_KEY}"}
                async with aiohttp.ClientSession(gateway.url, headers=headers) as client:
                    return await _measure(case, Stack(gateway, sandbox, client))
            finally:
                sandbox.close()
    finally:
        shutil.rmtree(casedir, ignore_errors=True)  # the spool and blobs: hundreds of MB


async def _measure(case: Case, stack: Stack) -> Measured:
    keys = [f"{case.name}-warm-{n}" for n in range(len(WARMUP_SIZES))] + [case.name]
    jobs = await stack.sandbox.create_jobs(len(keys))
    await register_waits(api_of(stack.gateway), keys, jobs)
    for key, job, size in zip(keys[:-1], jobs[:-1], WARMUP_SIZES, strict=True):
        await deliver(stack, job, key, Payload("warm", size))
    meter = PeakRss(stack.gateway.pid)
    baseline = meter.start()
    if not meter.kernel_peak:
        note("payloads: the kernel's peak RSS cannot be reset here; sampling every 10 ms")
    payload = Payload(case.member, case.size)
    try:
        delivered = await deliver(stack, jobs[-1], keys[-1], payload)
    finally:
        peak = meter.stop()
    body = await stack.sandbox.resume_body(jobs[-1].job_id)
    check_copy(delivered.job_state, body)
    if case.inline:
        check_inline(body, payload, jobs[-1], keys[-1])
    else:
        check_reference(body, payload)
    return Measured(baseline, peak, meter.sampled_peak, delivered)


def check_copy(state: dict[str, Any], body: bytes) -> None:
    """The body the sandbox hands back is the one its job state describes."""
    seen = (state["resume_count"], state["resumed_body_size"])
    if seen != (1, len(body)):
        raise RuntimeError(f"sandbox: (resumes, body size) {seen}, not (1, {len(body)})")
    if state["resumed_body_sha256"] != hashlib.sha256(body).hexdigest():
        raise RuntimeError("sandbox: the resume body does not match its sha256")


def check_reference(body: bytes, payload: Payload) -> None:
    """A small resume body whose ``payload_ref`` names exactly the bytes that were sent."""
    if len(body) > REFERENCE_BODY_MAX_BYTES:
        raise RuntimeError(f"claim check: the resume body has {len(body)} bytes")
    data = json.loads(body)["data"]
    ref = data.get("payload_ref") or {}
    if data.get("payload") is not None or ref.get("content_type") != JSON:
        raise RuntimeError(f"claim check: unexpected resume data {data}")
    if (ref.get("size"), ref.get("sha256")) != (payload.size, payload.sha256):
        raise RuntimeError(f"claim check: payload_ref {ref} does not name the payload sent")


def check_inline(body: bytes, payload: Payload, job: Job, key: str) -> None:
    """The resume body is the envelope around exactly the bytes that were sent."""
    head_size = len(body) - payload.size - len(_BODY_TAIL)
    head, inline, tail = body[:head_size], body[head_size : -len(_BODY_TAIL)], body[-2:]
    if tail != _BODY_TAIL or hashlib.sha256(inline).hexdigest() != payload.sha256:
        raise RuntimeError(f"inline: the resume body ({len(body)} bytes) is not the payload sent")
    try:
        doc = json.loads(head + b"null" + _BODY_TAIL)
    except ValueError:
        raise RuntimeError(f"inline: unexpected resume body head {head[:300]!r}") from None
    data = doc.get("data") or {}
    wanted = (job.resume_token, key, f"{key}-event", _ENVELOPE)
    if (doc.get("token"), data.get("key"), data.get("event_id"), data.keys()) != wanted:
        raise RuntimeError(f"inline: unexpected resume envelope {head[:300]!r}")


def payload_figures(case: Case, measured: Measured) -> dict[str, float]:
    prefix = f"payload_{case.name}"
    growth_mb = (measured.peak - measured.baseline) / MB
    return {
        f"{prefix}_rss_growth_mb": growth_mb,
        f"{prefix}_payload_mb": case.size / MB,
        f"{prefix}_growth_ratio": ratio(growth_mb, case.size / MB),
        f"{prefix}_baseline_rss_mb": measured.baseline / MB,
        f"{prefix}_peak_rss_mb": measured.peak / MB,
        f"{prefix}_sampled_peak_rss_mb": measured.sampled_peak / MB,
        f"{prefix}_accept_s": measured.delivered.accept_s,
        f"{prefix}_deliver_s": measured.delivered.deliver_s,
    }


async def run_payloads(plan: PayloadPlan, workdir: Path) -> dict[str, float]:
    """The claim-check case, then the inline case; the figures of scenario 4."""
    figures: dict[str, float] = {
        "payload_claim_check_target_mb": CLAIM_CHECK_TARGET_MB,
        "payload_inline_target_ratio": INLINE_TARGET_RATIO,
    }
    cases = (
        Case("claim_check", plan.claim_check_bytes, "blob", inline=False),
        Case("inline", plan.inline_bytes, "rows", inline=True),
    )
    for case in cases:
        note(f"payloads: {case.name}, one {case.size / MB:g} MB event")
        figures.update(payload_figures(case, await measure(case, workdir)))
    return figures

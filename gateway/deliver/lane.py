"""One tenant's delivery lane: claim due rows within the rate window, send, settle.

A lane never holds more than the window allows: slots are taken when rows are claimed (in the
same transaction that records the sends), so a crash cannot forget a request that left.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from pydantic import ValidationError

from gateway.blobs.base import BlobError, BlobMeta, BlobStore
from gateway.clock import Budget, Clock
from gateway.config.settings import DeliverySettings, TenantSettings
from gateway.deliver.claimcheck import ClaimChecks
from gateway.deliver.classify import Action, Attempt, Verdict, classify
from gateway.deliver.limiter import SlidingWindow
from gateway.deliver.payload import (
    FramedBody,
    body_frame,
    data_frame,
    reference_data,
    resume_body,
)
from gateway.deliver.retry import Backoff, settlement
from gateway.deliver.workato import WorkatoClient
from gateway.errors import SecretError, StoreError, described
from gateway.messages import JobRef
from gateway.metrics import Metrics
from gateway.security.tokens import TokenCipher
from gateway.store.base import Store
from gateway.store.records import JSON, Claim, FinalState, Outcome, Pause, Settlement
from gateway.wakeable import sleep_or_wake

log = structlog.get_logger(__name__)

LEASE_MARGIN_S = 5.0
"""What the longest timeout a large body's upload may get leaves of the lease."""
SETTLE_MARGIN_S = 1.0
"""What a resume request or a reconcile lookup leaves of the lease when it starts, for its
settlement (the claim's commit and the preparation came out of the lease first)."""


@dataclass(frozen=True, slots=True)
class LaneDeps:
    """What every lane shares; built once by the composition root."""

    store: Store
    cipher: TokenCipher
    clock: Clock
    metrics: Metrics
    settings: DeliverySettings
    owner: str
    rng: random.Random
    blobs: BlobStore
    claim_checks: ClaimChecks
    on_outcome: Callable[[Outcome], None] | None = None
    """Told of every finished delivery (e.g. to publish it to ``resume.outcomes``)."""

    def finished(self, outcome: Outcome) -> None:
        """A delivery reached its final state, by a lane or by the sweep: counted once, and
        told to the outcome listener."""
        self.metrics.outcomes.labels(outcome.tenant, outcome.state).inc()
        # delivered is the rule, cancelled asked for; anything else means a job that will not,
        # or may not, wake
        say = log.info if outcome.state in ("delivered", "cancelled") else log.warning
        say(
            "delivery.finished",
            tenant=outcome.tenant,
            key=outcome.key,
            delivery_id=outcome.delivery_id,
            state=outcome.state,
            reason=outcome.reason,
            attempts=outcome.attempts,
        )
        if self.on_outcome is not None:
            self.on_outcome(outcome)


@dataclass(slots=True)
class Credential:
    """What the lanes of one credential share: its rate window, the turn they take to use it,
    and its pause. A claim reads the free slots, awaits the store's commit, then records its
    sends; another lane of the credential, or a reconcile lookup, taking those slots meanwhile
    would overrun the limit. A 429 or a rejected credential pauses every tenant that sends
    with it: the others would only meet the same answer."""

    window: SlidingWindow
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    paused_until: float = 0.0
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a reserved slot is given back (its request never left): a lane waiting for
    the full window's next free slot, up to a window away, may claim now."""


class Lane:
    """Delivers one tenant's outbox, earliest deadline first, at its rate limit."""

    def __init__(
        self, tenant: TenantSettings, client: WorkatoClient, credential: Credential, deps: LaneDeps
    ) -> None:
        self.tenant = tenant
        self._client = client
        self._credential = credential
        self._window = credential.window
        self._deps = deps
        self._backoff = Backoff(deps.settings.backoff_base_s, deps.settings.backoff_cap_s)
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], Claim] = {}
        self._sending: set[asyncio.Task[None]] = set()
        """The delivery tasks whose request has started (by task, not delivery id: an attempt
        that outlived its lease may end while the next attempt of its row is sending); those
        cancelled stay until drain."""
        self._shown_paused = False
        self._pause_timer: asyncio.TimerHandle | None = None
        """Lowers the paused gauge when the credential's pause ends; cancelled by ``drain``."""
        self._drained = False
        """Set by ``drain``: no pause timer is set after it (a 429 answered meanwhile)."""
        self._settles: dict[asyncio.Task[Any], asyncio.Future[None]] = {}
        """Settles under way, by the task they settle for (shielded from its cancellation)."""

    def notify(self) -> None:
        """New work may be due: skip the poll interval."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and send until cancelled; the caller drains with ``drain``."""
        while True:
            now = self._deps.clock()
            credential = self._credential
            if credential.paused_until > now:
                self._show_paused(True)
                await asyncio.sleep(credential.paused_until - now)
                if credential.paused_until <= self._deps.clock():  # not extended meanwhile
                    self._show_paused(False)
                continue
            if self._window.available(now) == 0:
                # Nothing may leave before a slot frees: new work need not wake us, a slot
                # given back does.
                await sleep_or_wake(credential.freed, self._window.next_free_at(now) - now)
                credential.freed.clear()
                continue
            async with credential.turn:
                now = self._deps.clock()
                if credential.paused_until > now:  # paused while this lane waited its turn
                    continue
                room = min(
                    self._window.available(now),
                    self._deps.settings.max_in_flight - len(self._in_flight),
                )
                claimed = await self._claim(now, room) if room > 0 else 0
            if claimed < room or room == 0:
                await self._sleep(self._deps.settings.poll_interval_s)

    async def drain(self, timeout_s: float) -> None:
        """Let in-flight requests finish; cancel what is left. A delivery whose request had
        not left is handed back at once; one whose request had is left to its lease, whose
        expiry marks the attempt ambiguous (it may have reached Workato)."""
        self._drained = True  # a stopped lane says nothing more about its pause
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        budget = Budget(timeout_s, least=SETTLE_MARGIN_S)
        claims = dict(self._in_flight)
        if claims:
            _, pending = await asyncio.wait(claims, timeout=timeout_s)
            settling = {task for task in pending if task in self._settles}  # before any await:
            for task in pending:  # a settle that ends meanwhile leaves the dict
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in pending:
                claim = claims[task]
                if task in settling:  # its settle runs on, and reports, below
                    continue
                if task not in self._sending:
                    await self._hand_back(claim, "stopped_before_sending")
                else:  # it may have reached Workato: said now, not only at the lease's end
                    log.warning(
                        "delivery.cut_short_by_stop",
                        tenant=claim.tenant,
                        key=claim.key,
                        delivery_id=claim.delivery_id,
                        hint="its request had left; when its lease ends the attempt counts as "
                        "ambiguous, and a later refusal reads as delivered_unconfirmed",
                    )
        self._sending.clear()
        if self._settles:  # settles whose task was cancelled: they commit and report (given
            # the margin a lease keeps for a settle, whatever is left of the drain's time)
            await asyncio.wait(self._settles.values(), timeout=budget.left())

    async def _hand_back(self, claim: Claim, reason: str, after_s: float = 0.0) -> None:
        """Settle a claimed delivery whose request never left: pending again (after
        ``after_s``), the attempt refunded, no ambiguity."""
        await self._settle(
            claim, Verdict(Action.UNSENT, reason), Attempt(None, sent=False), after_s
        )

    async def _claim(self, now: float, room: int) -> int:
        d = self._deps
        claiming = asyncio.ensure_future(
            d.store.claim(
                self.tenant.name, self.tenant.credential_id, now, room, d.settings.lease_s, d.owner
            )
        )
        try:
            claims = await asyncio.shield(claiming)
        except asyncio.CancelledError:  # stopped: what the claim took goes back, not to its lease
            for claim in await claiming:
                await self._hand_back(claim, "stopped_before_sending")
            raise
        if claims:  # held from now until each request ends (limiter.py)
            self._window.reserve(self._deps.clock(), len(claims))
        lease_until = now + d.settings.lease_s  # as the claim recorded it
        for claim in claims:
            task = asyncio.create_task(
                self._deliver(claim, lease_until), name=f"deliver-{claim.delivery_id}"
            )
            self._in_flight[task] = claim
            task.add_done_callback(self._finished)
        return len(claims)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task)
        if not task.cancelled():
            self._sending.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery.crashed", tenant=self.tenant.name, exc_info=task.exception())

    async def _sleep(self, seconds: float) -> None:
        await sleep_or_wake(self._wake, seconds)
        self._wake.clear()

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, claim: Claim, lease_until: float) -> None:
        """Send one claimed delivery and settle it. Its rate slot is held until its request
        ended, and given back if the request never left."""
        slot = _Slot(self._credential)
        try:
            await self._attempt(claim, lease_until, slot)
        finally:  # a crash or the stop: a request cut short may have been counted
            if asyncio.current_task() in self._sending:
                slot.end(self._deps.clock())
            else:
                slot.give_back()

    async def _attempt(self, claim: Claim, lease_until: float, slot: _Slot) -> None:
        try:
            token = self._deps.cipher.open(claim.sealed, aad=claim.tenant)
        except SecretError:  # loud: the job can never be resumed from here
            log.error(
                "delivery.token_key_missing",
                tenant=claim.tenant,
                key=claim.key,
                key_id=claim.sealed.key_id,
                alert=True,
            )
            verdict = Verdict(Action.DEAD, "token_key_missing")
            await self._settle(claim, verdict, Attempt(None, sent=False), 0.0)
            return
        try:
            request = await self._request(claim, token)
        except Exception:  # a bug, or a store's error its type does not say: nothing was sent,
            # which a crash here would not have said (the row left to its lease, the sweep
            # marks the attempt ambiguous, and a later rejection reads as delivered_unconfirmed)
            log.exception("delivery.prepare_failed", tenant=claim.tenant, key=claim.key)
            request = Verdict(Action.RETRY, "prepare_failed")
        if isinstance(request, Verdict):  # nothing was sent
            unsent = Attempt(None, sent=False)
            await self._settle(claim, request, unsent, await self._delay_for(request, claim))
            return
        # the claim's commit and the preparation came out of the lease: a request that
        # outlived it could meet a second one, sent by the attempt the sweep hands the row to
        now = self._deps.clock()
        within_s = lease_until - now - SETTLE_MARGIN_S
        if within_s <= 0:
            await self._hand_back(claim, "lease_spent_before_sending")
            return
        if claim.deadline <= now:  # prepared past the wait's expiry: Workato dropped the job
            await self._hand_back(claim, "prepared_past_deadline")  # which settles it expired
            return
        paused_for = self._credential.paused_until - now
        if paused_for > 0:  # a 429 or a rejection came in while this one was being prepared
            await self._hand_back(claim, "paused_before_sending", paused_for)
            return
        started = time.perf_counter()
        self._sending.add(cast(asyncio.Task[None], asyncio.current_task()))
        attempt = await self._client.resume(request.body, request.size, within_s)
        slot.end(self._deps.clock())
        self._deps.metrics.latency.labels(self.tenant.name).observe(time.perf_counter() - started)
        if isinstance(request.body, FramedBody) and request.body.failed:
            # the payload could not be read to the end: Workato got a truncated body, if any
            attempt = Attempt(None, error="payload_read_failed", sent=False)
        verdict = classify(attempt, claim.ambiguous, self._deps.clock())
        if verdict.action is Action.TOO_LARGE and request.by_reference:
            verdict = Verdict(Action.DEAD, verdict.reason)  # nothing smaller left to send
        if verdict.action is Action.UNCONFIRMED and claim.job_json:
            verdict = await self._reconcile(claim, verdict, lease_until)
        await self._settle(claim, verdict, attempt, await self._delay_for(verdict, claim))

    async def _request(self, claim: Claim, token: str) -> ResumeRequest | Verdict:
        """The request to send: the payload inline when the whole body fits the tenant's limit
        (streamed from the blob store when it lives there), else a claim check; or the verdict
        that settles the delivery unsent (retried with backoff when the blob store failed)."""
        raw, limit = self.tenant.raw_mode, self.tenant.max_request_bytes
        if not claim.claim_check and claim.content_type == JSON:
            head, tail = body_frame(token, *data_frame(claim, raw))
            size = len(head) + claim.payload_size + len(tail)
            if size <= limit and claim.blob is None:
                return ResumeRequest(b"".join((head, claim.data, tail)), size)
            if size <= limit and claim.blob is not None:
                return await self._streamed(claim.blob, head, tail, size)
        try:
            ref = await self._deps.claim_checks.reference(claim)
        except (BlobError, StoreError) as exc:  # like a failed connection: retry later
            log.warning(
                "claim_check.failed", key=claim.key, error=type(exc).__name__, detail=described(exc)
            )
            return Verdict(Action.RETRY, "claim_check_failed")
        body = resume_body(token, reference_data(claim, raw, ref))
        if len(body) > limit:  # even the reference does not fit (huge metadata)
            return Verdict(Action.DEAD, "payload_too_large")
        self._deps.metrics.claim_checks.labels(self.tenant.name, _cause(claim)).inc()
        return ResumeRequest(body, len(body), by_reference=True)

    async def _streamed(
        self, blob: BlobMeta, head: bytes, tail: bytes, size: int
    ) -> ResumeRequest | Verdict:
        try:
            stored = await self._deps.blobs.stat(blob.sha256)
        except BlobError as exc:
            log.warning(
                "payload.unreadable",
                sha256=blob.sha256,
                error=type(exc).__name__,
                detail=described(exc),
            )
            return Verdict(Action.RETRY, "blob_store_failed")
        if stored is None:
            # Never collected while its delivery is pending: the store is not the one it was
            # written to (a bucket or root mistyped at a restart?), or someone deleted it.
            # Retried until the wait expires, and said: ended dead at once, the delivery was
            # lost for good though the configuration was put right minutes later.
            log.error("payload.missing", tenant=self.tenant.name, sha256=blob.sha256, alert=True)
            return Verdict(Action.RETRY, "payload_missing")
        payload = self._deps.blobs.read(blob.sha256)
        return ResumeRequest(FramedBody(head, payload, blob.size, tail), size)

    async def _reconcile(self, claim: Claim, verdict: Verdict, lease_until: float) -> Verdict:
        """After an ambiguous attempt, a job that succeeded proves the resume landed (DESIGN 6).
        One that failed does not: it may have failed while it waited (stopped, timed out), and
        the refusal then meant just that; it stays ``delivered_unconfirmed``.

        The Jobs API shares the resume endpoint's rate limit, so the lookup takes a window slot
        or is skipped (as it is while the credential is paused). It must also end inside the
        lease, with time left to settle: a slow upload may have used most of it, and a lookup
        past it would let the sweep hand the row to another attempt. A job still ``pending``
        proves nothing (it may be running after resume).
        """
        credential = self._credential
        async with credential.turn:
            now = self._deps.clock()
            late = lease_until - now <= SETTLE_MARGIN_S
            if late or credential.paused_until > now or self._window.available(now) == 0:
                return verdict
            self._window.reserve(now)
        slot = _Slot(self._credential)
        try:
            status = await self._job_status(claim, now, lease_until, slot)
        finally:
            slot.give_back()  # if the lookup never left
        if status == "succeeded":
            return Verdict(Action.DELIVERED, "reconciled_job_succeeded")
        return verdict

    async def _job_status(
        self, claim: Claim, now: float, lease_until: float, slot: _Slot
    ) -> str | None:
        """The wait's job's status, looked up within the lease; None if there is no time, or
        if the stored reference is not one any more (a ``managed_user_id`` that 0.2.11 refuses,
        stored before: its ValidationError ended the task, once a lease, for every attempt)."""
        try:
            job = JobRef.model_validate_json(claim.job_json or "")
        except ValidationError:
            return None
        await self._deps.store.record_send(self.tenant.credential_id, now)
        within_s = lease_until - self._deps.clock() - SETTLE_MARGIN_S  # after that write
        if within_s <= 0:
            return None
        if job.managed_user_id is None and self.tenant.managed_user_id:
            job = job.model_copy(update={"managed_user_id": self.tenant.managed_user_id})
        try:
            return await self._client.job_status(job, within_s)
        finally:
            slot.end(self._deps.clock())

    async def _delay_for(self, verdict: Verdict, claim: Claim) -> float:
        if verdict.action is Action.THROTTLED:
            await self._pause(verdict.retry_after_s or 0.0, "rate_limited")
            return verdict.retry_after_s or 0.0
        if verdict.action is Action.AUTH_PAUSE:
            redirected = verdict.reason.startswith("http_3")
            problem = "endpoint_redirected" if redirected else "credential_rejected"
            log.error(
                f"tenant.{problem}", tenant=self.tenant.name, reason=verdict.reason, alert=True
            )
            await self._pause(self._deps.settings.auth_pause_s, problem)
            return self._deps.settings.auth_pause_s
        left = claim.deadline - self._deps.clock()
        return self._backoff.delay(claim.attempt, self._deps.rng, within_s=left)

    async def _pause(self, seconds: float, reason: str) -> None:
        until = self._deps.clock() + seconds
        self._credential.paused_until = max(self._credential.paused_until, until)
        self._show_paused(True)
        # cleared when the pause ends: the run loop may sleep through it (a full window), and
        # a pause shorter than that, or of 0 s, left the gauge at 1 with deliveries going on
        self._look_at_pause_in(self._credential.paused_until - self._deps.clock())
        await self._deps.store.pause_tenant(Pause(self.tenant.name, until, reason))
        log.warning(
            "tenant.paused", tenant=self.tenant.name, reason=reason, seconds=round(seconds, 3)
        )

    def _show_paused(self, paused: bool) -> None:
        """The gauge, and one line when a pause shown ends (several timers may see it end)."""
        self._deps.metrics.paused.labels(self.tenant.name).set(1 if paused else 0)
        if self._shown_paused and not paused:
            log.info("tenant.unpaused", tenant=self.tenant.name)
        self._shown_paused = paused

    def _look_at_pause_in(self, seconds: float) -> None:
        """One timer a lane, however many pauses: a new one replaces the one set before. None
        once drained (a request answered 429 during the drain pauses the credential still)."""
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        if self._drained:
            return
        loop = asyncio.get_running_loop()
        self._pause_timer = loop.call_later(max(0.0, seconds), self._pause_may_have_ended)

    def _pause_may_have_ended(self) -> None:
        self._pause_timer = None
        left = self._credential.paused_until - self._deps.clock()
        if left <= 0:
            self._show_paused(False)
        else:  # extended meanwhile, by another tenant of the credential perhaps: look again
            self._look_at_pause_in(left)

    async def _settle(self, claim: Claim, verdict: Verdict, attempt: Attempt, delay: float) -> None:
        """Store the attempt's result and report a finished delivery, as one: a stop that
        cancels the task meanwhile cannot take the report from a settle that commits anyway
        (one outcome per finished delivery); ``drain`` waits for it."""
        owner = asyncio.current_task()
        settling = asyncio.ensure_future(self._settled(claim, verdict, attempt, delay))
        settling.add_done_callback(_log_if_failed)  # its task may be gone: nobody else reads it
        if owner is not None:
            self._settles[owner] = settling
            settling.add_done_callback(lambda _: self._settles.pop(owner, None))
        await asyncio.shield(settling)

    async def _settled(
        self, claim: Claim, verdict: Verdict, attempt: Attempt, delay: float
    ) -> None:
        now = self._deps.clock()
        result = settlement(verdict, claim, attempt.status, now, delay)
        kept = await self._deps.store.settle(claim, self._deps.owner, result, now)
        self._record(claim, verdict, attempt, result, kept)
        state = result.state
        if kept and state != "pending":  # not kept: the row is another attempt's now
            self._deps.finished(_outcome(claim, result, state, now))

    def _record(
        self, claim: Claim, verdict: Verdict, attempt: Attempt, result: Settlement, kept: bool
    ) -> None:
        # a resume request counts by its result; one that never left (a hand-back, a failed
        # preparation) as unsent, whatever the delivery does next
        sent = attempt.sent or attempt.status is not None
        counted = verdict.action.value if sent else Action.UNSENT.value
        self._deps.metrics.attempts.labels(self.tenant.name, counted).inc()
        log.info(
            "delivery.attempted",
            tenant=claim.tenant,
            key=claim.key,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            result=verdict.action.value,
            reason=verdict.reason,
            state=result.state,
            lease_kept=kept,
        )


def _log_if_failed(settle: asyncio.Future[None]) -> None:
    """A settle that failed after its task was cancelled: the row waits for its lease."""
    if not settle.cancelled() and (exc := settle.exception()) is not None:
        log.error("delivery.settle_failed", error=type(exc).__name__, detail=described(exc))


@dataclass(slots=True)
class _Slot:
    """One reserved rate slot: ended once its request ended, or given back if it never left."""

    credential: Credential
    open: bool = True

    def end(self, now: float) -> None:
        if self.open:
            self.open = False
            self.credential.window.complete(now)

    def give_back(self) -> None:
        if self.open:
            self.open = False
            self.credential.window.release()
            self.credential.freed.set()


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    body: bytes | FramedBody
    size: int  # the exact Content-Length
    by_reference: bool = False  # the payload went as a claim check


def _cause(claim: Claim) -> str:
    """Why a payload went by reference."""
    if claim.claim_check:
        return "workato_413"
    return "too_large" if claim.content_type == JSON else "not_json"


def _outcome(claim: Claim, result: Settlement, state: FinalState, now: float) -> Outcome:
    attempts = claim.attempt - (1 if result.refund_attempt else 0)
    return Outcome(
        tenant=claim.tenant,
        key=claim.key,
        delivery_id=claim.delivery_id,
        event_id=claim.event_id,
        source=claim.source,
        state=state,
        reason=result.reason,
        attempts=attempts,
        last_status=result.last_status,
        received_at=claim.received_at,
        finished_at=now,
    )

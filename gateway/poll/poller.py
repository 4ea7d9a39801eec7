"""The poller: leases due watches, polls their job, reports terminal jobs as events.

Concurrency is bounded (``[polling] max_concurrency``); a watch is polled again after its
connection's interval with jitter, or after an exponential backoff when the system fails. Watch
state lives in the store, so a restart resumes every watch where it was.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import structlog
from pydantic import ValidationError

from gateway.clock import Clock
from gateway.config.connections import AlteryxConnection, ConnectionSettings, PixxelConnection
from gateway.config.settings import PollingSettings
from gateway.errors import InvalidInput
from gateway.ingest.service import Ingest
from gateway.messages import CompletionEvent
from gateway.metrics import Metrics
from gateway.poll.clients import (
    NOT_FOUND,
    AlteryxClient,
    JobClient,
    JobNotFound,
    PixxelClient,
    PollError,
    Throttled,
)
from gateway.poll.jobs import JobState, alteryx_state, pixxel_state
from gateway.store.base import Store
from gateway.store.records import Polled, WatchClaim

log = structlog.get_logger(__name__)

CANCEL_ATTEMPTS = 8
"""How often a job is asked to cancel before the watch stops without it (at the connection's
backoff: 10 to 20 minutes at the defaults)."""
QUIET_CANCEL_RESULTS = frozenset({"cancelled", "already_over"})
"""The ends of a cancellation nobody need look at (not_permitted: the job runs on)."""

POLL_SHARE_OF_LEASE = 0.8
"""A poll, every request it makes included (a token, the job, another token after a 401), ends
within this share of its lease, so that its report is written while the lease is held: one
that outlived its lease was polled again, by the next claim, while it still ran."""

READERS: dict[str, Callable[[bytes], JobState]] = {
    "alteryx": alteryx_state,
    "pixxel": pixxel_state,
}


class Poller:
    """Runs the watch loop as one named task; ``stop`` waits for polls in flight (bounded)."""

    def __init__(
        self,
        store: Store,
        ingest: Ingest,
        connections: list[ConnectionSettings],
        settings: PollingSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._ingest = ingest
        self._connections = {c.name: c for c in connections}
        self._settings = settings
        self._clock = clock
        self._owner = f"poll-{uuid.uuid4().hex[:12]}"
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, JobClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing: set[int] = set()
        """Watches whose job is being cancelled."""
        self._throttled: dict[str, float] = {}
        """Connection name → until when its system asked (429) not to be polled."""
        self._cancel_retry: dict[int, tuple[int, float]] = {}
        """Watch id → (cancel attempts so far, when to try again); a restart starts afresh."""
        self.failed = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._clients = {name: self._client(conn) for name, conn in self._connections.items()}
        self._task = asyncio.create_task(self._run(), name="poller")
        self._task.add_done_callback(self._supervise)

    def _client(self, conn: ConnectionSettings) -> JobClient:
        assert self._session is not None
        if isinstance(conn, AlteryxConnection):
            return AlteryxClient(self._session, conn)
        assert isinstance(conn, PixxelConnection)
        return PixxelClient(self._session, conn)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("poller.died", task=task.get_name(), exc_info=task.exception())
            self.failed.set()

    async def stop(self, timeout_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=timeout_s)
            for task in pending:
                task.cancel()  # its lease expires and another poll picks it up
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            await self._close_finished_waits()
            room = self._settings.max_concurrency - len(self._in_flight)
            if room > 0:
                await self._claim(room)
            await asyncio.sleep(self._settings.tick_s)

    async def _claim(self, room: int) -> None:
        now = self._clock()
        claims = await self._store.claim_watches(now, room, self._settings.lease_s, self._owner)
        for claim in claims:
            self._spawn(self._poll(claim), f"poll-{claim.id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Polls and cancellations share the concurrency bound, are waited for on stop, and
        are supervised like the loop: one that dies (the store failed) stops the poller."""
        task = asyncio.create_task(work, name=name)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(self._supervise)

    @property
    def _budget_s(self) -> float:
        """What a poll or a cancellation may take, every request included: within the lease,
        or the watch is claimed and polled again while it still runs."""
        return self._settings.lease_s * POLL_SHARE_OF_LEASE

    # -- one poll --------------------------------------------------------------------------

    async def _poll(self, claim: WatchClaim) -> None:
        spec = json.loads(claim.spec_json)
        unpollable = self._unpollable(claim)
        if unpollable is not None:
            await self._failed(claim, unpollable)
            return
        client = self._clients[claim.connection]
        budget_s = self._budget_s
        until = self._throttled.get(claim.connection, 0.0)
        if until > self._clock():  # its system said 429: no poll of the connection meanwhile
            await self._postpone(claim, until)
            return
        try:
            async with asyncio.timeout(budget_s):
                answer = await client.job(spec)
            state = READERS[claim.kind](answer)
        except Throttled as exc:
            self._poll_failed(claim)
            await self._failed(claim, str(exc), not_before=self._throttle(claim, exc))
            return
        except TimeoutError:
            self._poll_failed(claim)
            await self._failed(claim, f"the poll took longer than {budget_s:g} s (its lease)")
            return
        except JobNotFound as exc:
            self._poll_failed(claim)
            gone_before = (claim.last_error or "").startswith(NOT_FOUND)
            if _deleted_when_cancelled(claim) and gone_before:  # twice not found: deleted
                await self._finished(claim, spec, vanished(claim, spec))
            else:  # once may be a passing proxy error, a job never seen a wrong id or URL,
                await self._failed(claim, str(exc))  # and no other job is said to vanish
            return
        except PollError as exc:
            self._poll_failed(claim)
            await self._failed(claim, str(exc))
            return
        except ValidationError as exc:
            self._poll_failed(claim)
            await self._failed(claim, f"unexpected answer: {_where_invalid(exc)}")
            return
        except InvalidInput as exc:  # not strict JSON (NaN, say)
            self._poll_failed(claim)
            await self._failed(claim, f"unexpected answer: {exc.detail}")
            return
        except Exception as exc:
            # A bug, or a case no client foresaw: this watch fails, and the poller (with every
            # other watch) goes on. Said by its type only: its message may quote a credential.
            self._poll_failed(claim)
            log.error(
                "watch.poll_crashed", tenant=claim.tenant, key=claim.key, error=type(exc).__name__
            )
            await self._failed(claim, f"the poll failed ({type(exc).__name__})")
            return
        self._metrics.polls.labels(claim.connection, state.status or "running").inc()
        if state.status is None:
            await self._running(claim, state)
        else:
            await self._finished(claim, spec, state)

    async def _running(self, claim: WatchClaim, state: JobState) -> None:
        conn = self._connections[claim.connection]
        interval = conn.poll_interval_s * self._rng.uniform(0.8, 1.2)
        now = self._clock()
        polled = Polled(now + interval, 0, state.job_status, state.progress, None)
        await self._store.watch_polled(claim, self._owner, polled, now)

    async def _failed(self, claim: WatchClaim, error: str, not_before: float = 0.0) -> None:
        conn = self._connections.get(claim.connection)
        base = conn.poll_interval_s if conn else self._settings.tick_s
        cap = conn.max_backoff_s if conn else 300.0
        failures = claim.failures + 1
        delay = backoff_s(failures, base, cap, self._rng)
        now = self._clock()
        log.warning(
            "watch.poll_failed", tenant=claim.tenant, key=claim.key, error=error, failures=failures
        )
        polled = Polled(max(now + delay, not_before), failures, None, None, error)
        await self._store.watch_polled(claim, self._owner, polled, now)

    def _poll_failed(self, claim: WatchClaim) -> None:
        """A poll made that failed; counted once, where a watch's failure without a poll (it
        cannot be polled) or after a counted one (its result refused) is not."""
        self._metrics.polls.labels(claim.connection, "error").inc()

    def _throttle(self, claim: WatchClaim, exc: Throttled) -> float:
        """Hold every poll of the claim's connection for what its system asked; until when."""
        until = self._clock() + exc.retry_after_s
        if until > self._throttled.get(claim.connection, 0.0):
            self._throttled[claim.connection] = until
            log.warning("poll.throttled", connection=claim.connection, seconds=exc.retry_after_s)
        return until

    async def _postpone(self, claim: WatchClaim, until: float) -> None:
        """Hand a claimed watch back, unpolled, for when its connection may be polled again."""
        polled = Polled(until, claim.failures, None, None, claim.last_error)
        await self._store.watch_polled(claim, self._owner, polled, self._clock())

    async def _finished(self, claim: WatchClaim, spec: dict[str, str], state: JobState) -> None:
        assert state.status is not None
        assert state.data is not None
        # one event per watch: a job id is unique only within its Pixxel workflow, and two
        # waits may watch one job; as the job's id it deduplicated the second watch's report
        event = CompletionEvent(
            id=f"{claim.kind}:watch-{claim.id}", key=claim.key, status=state.status
        )
        # for the watch's own wait only: the key may have another wait by now (the watched one
        # cancelled while this poll ran), which this job's result would resume
        try:
            result = await self._ingest.accept(
                claim.tenant,
                f"poll:{claim.connection}",
                event,
                state.data,
                wait_id=claim.wait_id,
            )
        except InvalidInput as exc:  # e.g. a raw-mode tenant and a non-object answer
            await self._failed(claim, exc.detail)
            return
        await self._store.watch_done(claim, state.job_status, state.progress, self._clock())
        log.info(
            "watch.finished",
            tenant=claim.tenant,
            key=claim.key,
            status=state.status,
            outcome=result.outcome,
        )

    # -- waits that closed without their job finishing -------------------------------------

    async def _close_finished_waits(self) -> None:
        """Stop the watches of closed waits, cancelling the job first where the watch asks
        (each cancellation a task of its own: one slow system must not hold up the polls)."""
        now = self._clock()
        later = {i for i, (_, at) in self._cancel_retry.items() if at > now}
        throttled = {name for name, until in self._throttled.items() if until > now}
        share = max(1, self._settings.max_concurrency // 2)  # the rest are the polls'
        # a throttled connection's watches are left out by the query, not skipped here: a
        # hundred of them filled every page, and other connections' waited out the 429
        closed = await self._store.closed_watches(100, self._closing | later, throttled)
        for claim in closed:
            spec = json.loads(claim.spec_json)
            cancel = claim.wait_state in ("expired", "cancelled") and spec.get("cancel_on_close")
            if not cancel or self._unpollable(claim) is not None:
                await self._store.stop_watch(claim, now)
            elif (
                len(self._closing) < share and len(self._in_flight) < self._settings.max_concurrency
            ):
                self._closing.add(claim.id)
                self._spawn(self._cancel_job(claim, spec), f"cancel-{claim.id}")

    def _unpollable(self, claim: WatchClaim) -> str | None:
        """Why the configuration no longer serves this watch: checked at its registration, it
        may have changed since (a watch's spec read by another kind's client raised)."""
        conn = self._connections.get(claim.connection)
        if conn is None:
            return f"connection {claim.connection!r} is not configured"
        if conn.kind != claim.kind:
            return f"connection {claim.connection!r} is a {conn.kind} connection, not {claim.kind}"
        if not conn.serves(claim.tenant):
            return f"connection {claim.connection!r} does not serve tenant {claim.tenant!r}"
        return None

    async def _cancel_job(self, claim: WatchClaim, spec: dict[str, str]) -> None:
        """Cancel, and stop the watch; tried again with backoff when the system fails (or the
        job cannot be cancelled yet), up to ``CANCEL_ATTEMPTS`` times."""
        try:
            await self._cancel_or_retry(claim, spec)
        finally:
            self._closing.discard(claim.id)

    async def _cancel_or_retry(self, claim: WatchClaim, spec: dict[str, str]) -> None:
        attempts = self._cancel_retry.get(claim.id, (0, 0.0))[0] + 1
        budget_s = self._budget_s
        error: str | None = None
        try:  # bounded as a poll is: each request has its timeout, but a cancellation may
            async with asyncio.timeout(budget_s):  # make several, and holds a slot meanwhile
                result = await self._clients[claim.connection].cancel(spec)
        except Throttled as exc:  # not an attempt: asked again once the system allows
            until = self._throttle(claim, exc)
            self._cancel_retry[claim.id] = (attempts - 1, until)
            return
        except TimeoutError:
            error = f"the cancellation took longer than {budget_s:g} s"
        except PollError as exc:
            error = str(exc)
        except Exception as exc:  # as for a poll: this cancellation fails, by its type only
            log.error("watch.cancel_crashed", key=claim.key, error=type(exc).__name__)
            error = f"the cancellation failed ({type(exc).__name__})"
        if error is not None:
            if attempts < CANCEL_ATTEMPTS:
                conn = self._connections[claim.connection]
                retry_at = self._clock() + backoff_s(
                    attempts, conn.poll_interval_s, conn.max_backoff_s, self._rng
                )
                self._cancel_retry[claim.id] = (attempts, retry_at)
                log.warning(
                    "watch.job_cancel_failed", tenant=claim.tenant, key=claim.key, error=error
                )
                return
            result = f"gave up after {attempts} attempts: {error}"
        self._cancel_retry.pop(claim.id, None)
        # given up or refused, the job may still be running upstream: someone should look
        say = log.info if result in QUIET_CANCEL_RESULTS else log.warning
        say("watch.job_cancel", tenant=claim.tenant, key=claim.key, result=result)
        await self._store.stop_watch(claim, self._clock())


def _deleted_when_cancelled(claim: WatchClaim) -> bool:
    """A job seen queued on Alteryx, which deletes a queued job it cancels (seed 003): that
    one may vanish. Any other 404 is a failed poll, retried: a Pixxel job (the seed says
    nothing of deletion) reported failed on two passing 404s then completed."""
    return claim.kind == "alteryx" and claim.job_status == "Queued"


def _where_invalid(exc: ValidationError) -> str:
    """Which fields of an answer were refused and why, never their values: a count alone
    left nobody able to tell what the job system sent."""
    errors = exc.errors(include_url=False, include_input=False)
    said = [f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['type']}" for e in errors]
    more = f" (+{len(said) - 3} more)" if len(said) > 3 else ""
    return "; ".join(said[:3]) + more


def backoff_s(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter over ``base * 2**failures`` up to the cap, and at least half the base (a
    failing system is not polled faster than its interval allows). The exponent stops growing
    long before the cap needs it: at 1024 failures, about 43 hours at a 300 s cap, the power
    overflowed a float and the poll task died."""
    ceiling = min(cap_s, base_s * 2 ** min(failures, 32))
    return max(rng.uniform(0.0, ceiling), base_s / 2)


def vanished(claim: WatchClaim, spec: dict[str, str]) -> JobState:
    """A job that answered 404 twice in a row after a poll had read it: reported failed, with
    what was last seen, rather than polled until its wait expires."""
    data = {"error": "job_not_found", "job_id": spec["job_id"], "last_status": claim.job_status}
    return JobState("NotFound", "failed", None, json.dumps(data).encode())

"""The store interface. SQLite implements it today; PostgreSQL will, without touching callers.

Correlation happens inside the store, in the same transaction that persists the input, so that
"matched" and "delivery created" can never be seen apart (invariants 1-4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Sequence
from typing import Protocol

from gateway.blobs.base import BlobMeta
from gateway.store.records import (
    Acceptance,
    Cancellation,
    Claim,
    NewEvent,
    NewWait,
    Pause,
    Polled,
    Registration,
    Settlement,
    Sweep,
    WaitView,
    WatchClaim,
)


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema to the current version."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations without opening for work; the versions applied."""

    async def close(self) -> None:
        """Finish queued writes and disconnect; idempotent."""

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    async def register_wait(self, wait: NewWait, now: float) -> Registration:
        """Persist a wait and match it with the oldest buffered event for its key."""

    def record_event(self, event: NewEvent, now: float) -> Awaitable[Acceptance]:
        """Persist an event and match it with the open wait for its key, or buffer it. An
        awaitable rather than a coroutine: an implementation may hand back its writer's
        future, without a frame of its own around it (one per HTTP event)."""

    async def ingest_batch(
        self,
        waits: list[NewWait],
        events: list[NewEvent],
        now: float,
        waits_at: Sequence[int] | None = None,
    ) -> tuple[list[Registration], list[Acceptance]]:
        """Registrations and events in one transaction: a consumer commits its offsets only
        after this returns (DESIGN 5.2). ``waits_at`` says how many of the events come before
        each registration (ascending); without it, the registrations come first."""

    async def get_wait(self, tenant: str, key: str, now: float) -> WaitView | None:
        """The most recent wait registered under ``key``, as durably stored: it is shown to
        clients, so never a commit before its sync. An open wait past its expiry is expired
        first, as the sweep would have."""

    async def cancel_wait(self, tenant: str, key: str, now: float) -> Cancellation:
        """Cancel an open wait, or a resolved one whose delivery has not started: none of its
        requests may have reached Workato (``in_flight`` otherwise)."""

    async def claim(
        self, tenant: str, credential: str, now: float, limit: int, lease_s: float, owner: str
    ) -> list[Claim]:
        """Lease up to ``limit`` due deliveries, earliest deadline first, and record the sends."""

    async def settle(self, claim: Claim, owner: str, result: Settlement, now: float) -> bool:
        """Record an attempt's result; False if the lease was lost meanwhile."""

    async def record_send(self, credential: str, now: float) -> None:
        """A request outside a claim (a Jobs API lookup) that took a slot of the rate window."""

    async def recent_sends(self, credential: str, since: float) -> list[float]:
        """Send times after ``since``: the rate window survives restarts."""

    async def pause_tenant(self, pause: Pause) -> None: ...

    async def active_pauses(self, now: float) -> list[Pause]: ...

    async def sweep(self, now: float, forget_sends_before: float, limit: int) -> Sweep:
        """Reclaim expired leases, expire waits, deliveries and stale buffered events: at most
        ``limit`` of each kind, so that one transaction stays short after a long outage
        (``Sweep.more`` says to sweep again at once)."""

    async def keep_blob(self, blob: BlobMeta, keep_until: float, now: float) -> bool:
        """Record a blob, to be kept at least until ``keep_until`` (a URL's expiry); False,
        recording nothing, while a collector is deleting it (see ``blobs/reservation.py``); a
        deletion marked long ago was abandoned, and is overridden."""

    async def collectable_blobs(self, now: float, limit: int) -> list[str]:
        """Blobs past their keep-until that no buffered event or unfinished delivery needs."""

    async def condemn_blob(self, sha256: str, now: float) -> bool:
        """Mark a still collectable blob as being deleted; True if it was marked. Its bytes go
        next, then ``forget_blob``: a failure in between leaves it marked and collectable."""

    async def forget_blob(self, sha256: str) -> bool:
        """Delete the row of a blob marked by ``condemn_blob``; True if it was deleted."""

    async def spare_blob(self, sha256: str, now: float) -> None:
        """Lift ``condemn_blob``'s mark after the bytes could not be deleted: still collectable
        (from ``now``), but no longer marked, so that a mark only stands while a deletion is
        under way, and a writer never lifts one (as abandoned) under a deletion."""

    async def claim_watches(
        self, now: float, limit: int, lease_s: float, owner: str
    ) -> list[WatchClaim]:
        """Lease due watches of open waits, most overdue first."""

    async def watch_polled(self, claim: WatchClaim, owner: str, polled: Polled, now: float) -> None:
        """Record a poll of an unfinished job and when to poll next."""

    async def watch_done(
        self, claim: WatchClaim, job_status: str, progress: str | None, now: float
    ) -> None:
        """The job is terminal and its event was accepted: never poll it again."""

    async def closed_watches(
        self, limit: int, busy: Collection[int] = (), held: Collection[str] = ()
    ) -> list[WatchClaim]:
        """Active watches whose wait is no longer open (resolved, expired, cancelled), but
        for the ``busy`` ones (their job is being cancelled, or will be again later) and those
        of the ``held`` connections (throttled) whose job would have to be cancelled."""

    async def stop_watch(self, claim: WatchClaim, now: float) -> None: ...

    async def counts(self) -> dict[str, dict[str, int]]:
        """How many rows are in flight, by kind and state (open waits, buffered events,
        pending and sending deliveries, active watches), for metrics; every state is there,
        0 included. Finished rows are counted by the metrics' counters instead."""

"""The SQLite store against a real database file: correlation, outbox, leases, durability."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.blobs.base import BlobMeta
from gateway.config.settings import DeliverySettings, StoreSettings
from gateway.deliver.deliverer import sends_forgotten_before
from gateway.errors import BlobCollected, StoreError
from gateway.security.tokens import SealedToken
from gateway.store import sqlite as sqlite_module
from gateway.store.factory import open_store
from gateway.store.records import NewEvent, NewWait, NewWatch, Outcome, Pause, Settlement
from gateway.store.sqlfiles import load_migrations, load_queries
from gateway.store.sqlite import ABANDONED_MARK_S, MAX_BATCH, SQLiteStore
from tests.integration.held_syncs import HeldSyncs

T0 = 1_700_000_000.0
HOUR = 3600.0


def wait(key: str, token: str = "tok", tenant: str = "acme", expires: float = T0 + HOUR) -> NewWait:
    return NewWait(
        tenant,
        key,
        f"digest-{token}",
        SealedToken("k1", b"sealed-" + token.encode()),
        expires,
        None,
        None,
    )


WATCH = NewWatch("alteryx", "ayx", '{"kind":"alteryx","connection":"ayx","job_id":"j"}')


def event(key: str, event_id: str = "e1", data: bytes = b'{"x":1}', ttl: float = HOUR) -> NewEvent:
    return NewEvent("acme", "api", event_id, key, "succeeded", data, None, ttl)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "store.db"))
    await s.open()
    yield s
    await s.close()


def states(store: SQLiteStore, table: str) -> dict[str, int]:
    """Every row of ``table`` by state, read from the file."""
    with sqlite3.connect(store._path) as conn:
        return dict(conn.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"))


async def test_a_wait_is_shown_resolved_only_once_its_resolution_is_durable(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_wait`` (``GET /v1/waits/{key}``) reads through the writer: it never shows a commit
    whose sync is still running, as another connection would, a sync early."""
    await store.register_wait(wait("k"), T0)
    syncs = HeldSyncs(monkeypatch)
    syncs.hold()
    try:
        matching = asyncio.ensure_future(store.record_event(event("k"), T0))
        await asyncio.sleep(0.05)
        assert states(store, "waits") == {"resolved": 1}  # committed, its sync held
        viewing = asyncio.ensure_future(store.get_wait("acme", "k", T0))
        await asyncio.sleep(0.05)
        assert not viewing.done()
    finally:
        syncs.release()
    view = await asyncio.wait_for(viewing, 5)
    assert view is not None
    assert view.state == "resolved"
    assert (await matching).outcome == "matched"


async def test_counts_are_of_the_rows_in_flight_only(store: SQLiteStore) -> None:
    assert await store.counts() == {
        "waits": {"open": 0},
        "events": {"buffered": 0},
        "deliveries": {"pending": 0, "sending": 0},
        "watches": {"active": 0},
    }
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("other", "e0"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "c", T0, 1, 30, "w")
    counts = await store.counts()
    assert (counts["waits"], counts["events"]) == ({"open": 0}, {"buffered": 1})
    assert counts["deliveries"] == {"pending": 0, "sending": 1}
    await store.settle(claim, "w", Settlement("delivered", "http_204", 204), T0 + 1)
    assert (await store.counts())["deliveries"] == {"pending": 0, "sending": 0}
    assert states(store, "deliveries") == {"delivered": 1}  # counted by its counter instead


async def test_event_for_open_wait_is_matched_and_creates_one_delivery(store: SQLiteStore) -> None:
    assert (await store.register_wait(wait("k"), T0)).outcome == "created"
    accepted = await store.record_event(event("k"), T0 + 1)
    assert accepted.outcome == "matched"
    assert accepted.delivery_id is not None
    view = await store.get_wait("acme", "k", T0)
    assert view is not None
    assert view.state == "resolved"
    assert view.delivery is not None
    assert view.delivery.state == "pending"


async def test_event_before_wait_is_buffered_then_matched_on_registration(
    store: SQLiteStore,
) -> None:
    assert (await store.record_event(event("k"), T0)).outcome == "buffered"
    registered = await store.register_wait(wait("k"), T0 + 5)
    assert registered.outcome == "created"
    assert registered.matched
    assert registered.wait is not None
    assert registered.wait.event_id == "e1"


async def test_buffered_event_past_its_ttl_is_not_matched(store: SQLiteStore) -> None:
    await store.record_event(event("k", ttl=10), T0)
    registered = await store.register_wait(wait("k"), T0 + 11)
    assert not registered.matched
    swept = await store.sweep(T0 + 11, T0, 1000)
    assert swept.unmatched_events == [("acme", "api", "e1", "k")]


async def test_same_event_twice_is_a_duplicate_and_changes_nothing(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    assert (await store.record_event(event("k"), T0)).outcome == "matched"
    assert (await store.record_event(event("k"), T0)).outcome == "duplicate"
    assert (await store.counts())["deliveries"] == {"pending": 1, "sending": 0}
    assert states(store, "events") == {"matched": 1}


async def test_second_event_after_resolution_is_late(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k", "e1"), T0)
    assert (await store.record_event(event("k", "e2"), T0)).outcome == "late"
    assert (await store.counts())["deliveries"] == {"pending": 1, "sending": 0}


async def test_identical_registration_is_a_repeat(store: SQLiteStore) -> None:
    await store.register_wait(wait("k", "t1"), T0)
    again = await store.register_wait(wait("k", "t1"), T0 + 1)
    assert again.outcome == "repeat"
    assert states(store, "waits") == {"open": 1}


async def test_a_repeat_with_other_fields_is_a_conflict_not_silently_the_first(
    store: SQLiteStore,
) -> None:
    """The answer was 'repeat' and the new metadata, job or watch was dropped unseen."""
    first = dataclasses.replace(wait("k", "t1"), metadata_json='{"a": 1, "b": [2]}')
    await store.register_wait(first, T0)
    reordered = dataclasses.replace(first, metadata_json='{"b": [2], "a": 1}', expires_at=T0 + 9)
    assert (await store.register_wait(reordered, T0 + 1)).outcome == "repeat"
    others = [
        dataclasses.replace(first, metadata_json='{"a": 2, "b": [2]}'),
        dataclasses.replace(first, metadata_json=None),
        dataclasses.replace(first, metadata_json='{"a": true, "b": [2]}'),  # true == 1 in Python
        dataclasses.replace(first, job_json='{"recipe_id":1,"job_id":"j"}'),
        dataclasses.replace(first, watch=NewWatch("pixxel", "px", '{"job_id":"j"}')),
    ]
    for other in others:
        answer = await store.register_wait(other, T0 + 2)
        assert (answer.outcome, answer.conflict) == ("conflict", "repeat_with_other_fields")
    assert states(store, "waits") == {"open": 1}


async def test_a_repeat_shows_the_tokens_own_wait_not_a_later_one_of_its_key(
    store: SQLiteStore,
) -> None:
    """A retried registration that lands after the key was registered again: it showed the
    new wait (open, no event) instead of its own (resolved, its delivery queued)."""
    await store.register_wait(wait("k", "t1"), T0)
    await store.record_event(event("k", "e1"), T0 + 1)
    await store.register_wait(wait("k", "t2"), T0 + 2)
    again = await store.register_wait(wait("k", "t1"), T0 + 3)
    assert again.outcome == "repeat"
    assert again.wait is not None
    assert (again.wait.state, again.wait.created_at, again.wait.event_id) == ("resolved", T0, "e1")
    assert again.wait.delivery is not None


async def test_open_key_with_another_token_conflicts(store: SQLiteStore) -> None:
    await store.register_wait(wait("k", "t1"), T0)
    other = await store.register_wait(wait("k", "t2"), T0)
    assert other.outcome == "conflict"
    assert other.conflict == "key_open_with_other_token"


async def test_a_wait_past_its_expiry_is_expired_not_open_before_the_sweep_comes(
    store: SQLiteStore,
) -> None:
    """Between expires_at and the next sweep, a new registration of its key was a conflict
    (key_open_with_other_token), a cancel recorded the wait as cancelled, and a read showed it
    open."""
    await store.register_wait(wait("k", "t1", expires=T0 + 10), T0)
    again = await store.register_wait(wait("k", "t2"), T0 + 10)
    assert again.outcome == "created"
    assert states(store, "waits") == {"expired": 1, "open": 1}

    await store.register_wait(wait("c", "t3", expires=T0 + 10), T0)
    cancelled = await store.cancel_wait("acme", "c", T0 + 11)
    assert cancelled.outcome == "final"
    assert cancelled.wait is not None
    assert cancelled.wait.state == "expired"
    assert states(store, "waits") == {"expired": 2, "open": 1}

    await store.register_wait(wait("g", "t4", expires=T0 + 10), T0)
    shown = await store.get_wait("acme", "g", T0 + 11)  # it was shown open
    assert shown is not None
    assert (shown.state, shown.resolved_at) == ("expired", T0 + 11)
    assert states(store, "waits") == {"expired": 3, "open": 1}
    assert (await store.record_event(event("g"), T0 + 12)).outcome == "late"


async def test_token_under_another_key_conflicts(store: SQLiteStore) -> None:
    await store.register_wait(wait("k1", "t1"), T0)
    other = await store.register_wait(wait("k2", "t1"), T0)
    assert other.conflict == "token_registered_under_other_key"


async def test_claims_go_earliest_deadline_first(store: SQLiteStore) -> None:
    for i, expires in enumerate([T0 + 300, T0 + 100, T0 + 200]):
        await store.register_wait(wait(f"k{i}", f"t{i}", expires=expires), T0)
        await store.record_event(event(f"k{i}", f"e{i}"), T0)
    claims = await store.claim("acme", "cred", T0 + 1, 3, 30, "w1")
    assert [c.key for c in claims] == ["k1", "k2", "k0"]
    assert all(c.attempt == 1 for c in claims)
    assert await store.recent_sends("cred", T0) == [T0 + 1] * 3


@pytest.mark.parametrize("lease_s", [30.0, 120.0])
async def test_the_sweep_keeps_every_send_a_restart_reads_back(
    store: SQLiteStore, lease_s: float
) -> None:
    """A restart holds a send for a window after its lease ended (its request may have reached
    Workato that late); with a lease over one window, the sweep's two windows deleted it first
    and the restarted limiter let a full window more go out."""
    settings = DeliverySettings(lease_s=lease_s, request_timeout_s=20)
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    await store.claim("acme", "cred", T0, 1, lease_s, "w1")
    span = settings.rate_window_s + settings.rate_margin_s
    later = T0 + lease_s + 5  # its request may have reached Workato 5 s ago: still counted
    await store.sweep(later, sends_forgotten_before(settings, later), 1000)
    assert await store.recent_sends("cred", later - span - lease_s) == [T0]


@pytest.mark.parametrize("few", [100, 2])  # a few due rows, or a backlog of them
async def test_claims_skip_deliveries_waiting_out_a_retry_delay(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    monkeypatch.setattr(sqlite_module, "FEW_DUE", few)
    for i, expires in enumerate([T0 + 100, T0 + 400, T0 + 300, T0 + 200]):
        await store.register_wait(wait(f"k{i}", f"t{i}", expires=expires), T0)
        await store.record_event(event(f"k{i}", f"e{i}"), T0)
    (delayed,) = await store.claim("acme", "cred", T0, 1, 30, "w1")  # k0: earliest deadline
    retry = Settlement("pending", "http_503", 503, T0 + 60, True)
    assert await store.settle(delayed, "w1", retry, T0 + 1)
    claims = await store.claim("acme", "cred", T0 + 2, 2, 30, "w1")
    assert [c.key for c in claims] == ["k3", "k2"]  # earliest deadline first, k0 not yet due
    assert [c.key for c in await store.claim("acme", "cred", T0 + 61, 5, 30, "w1")] == ["k0", "k1"]


async def test_a_leased_delivery_is_not_claimed_twice(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    assert len(await store.claim("acme", "c", T0, 5, 30, "w1")) == 1
    assert await store.claim("acme", "c", T0, 5, 30, "w2") == []


async def test_a_reclaimed_rows_earlier_attempt_cannot_settle_its_later_claim(
    store: SQLiteStore,
) -> None:
    """One process (one owner) claims a row again after its lease ran out: the earlier
    attempt's late answer settled the new claim, the row went back to pending while its
    request was in flight, and a third send of the token could start."""
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (slow,) = await store.claim("acme", "c", T0, 1, 30, "gw-1")
    await store.sweep(T0 + 31, T0, 1000)
    (again,) = await store.claim("acme", "c", T0 + 31, 1, 30, "gw-1")
    retry = Settlement("pending", "http_503", 503, T0 + 40)
    assert not await store.settle(slow, "gw-1", retry, T0 + 32)
    assert states(store, "deliveries") == {"sending": 1}
    assert await store.settle(again, "gw-1", Settlement("delivered", None, 204), T0 + 33)
    assert states(store, "deliveries") == {"delivered": 1}


async def test_expired_lease_returns_row_to_pending_as_ambiguous(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (first,) = await store.claim("acme", "c", T0, 1, 30, "dead-worker")
    swept = await store.sweep(T0 + 31, T0, 1000)
    assert swept.reclaimed == 1
    (again,) = await store.claim("acme", "c", T0 + 31, 1, 30, "w2")
    assert again.ambiguous
    assert again.attempt == 2
    lost = await store.settle(first, "dead-worker", Settlement("delivered"), T0 + 32)
    assert not lost, "the old owner must not settle a row it no longer holds"


async def test_settle_records_final_state_and_retry(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "c", T0, 1, 30, "w")
    retry = Settlement("pending", "http_503", 503, T0 + 10, ambiguous=True)
    assert await store.settle(claim, "w", retry, T0 + 1)
    assert await store.claim("acme", "c", T0 + 9.99, 1, 30, "w") == []  # due at T0 + 10
    (claim,) = await store.claim("acme", "c", T0 + 10, 1, 30, "w")
    assert claim.ambiguous
    assert await store.settle(claim, "w", Settlement("delivered", "http_204", 204), T0 + 11)
    view = await store.get_wait("acme", "k", T0)
    assert view is not None
    assert view.delivery is not None
    assert (view.delivery.state, view.delivery.attempts) == ("delivered", 2)


async def test_refunded_attempt_does_not_count(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "c", T0, 1, 30, "w")
    await store.settle(
        claim, "w", Settlement("pending", "http_401", 401, T0, refund_attempt=True), T0
    )
    (claim,) = await store.claim("acme", "c", T0, 1, 30, "w")
    assert claim.attempt == 1


async def test_expiry_of_waits_and_pending_deliveries(store: SQLiteStore) -> None:
    await store.register_wait(wait("open", "t1", expires=T0 + 10), T0)
    await store.register_wait(wait("due", "t2", expires=T0 + 10), T0)
    await store.record_event(event("due"), T0)
    swept = await store.sweep(T0 + 10, T0, 1000)
    assert swept.expired_waits == [("acme", "open")]  # named: a count said not which
    (outcome,) = swept.expired_deliveries  # reported like a delivery a lane finished
    assert outcome == Outcome(
        "acme", "due", outcome.delivery_id, "e1", "api", "expired", "wait_expired", 0, None, T0,
        T0 + 10,
    )  # fmt: skip
    view = await store.get_wait("acme", "due", T0 + 10)
    assert view is not None
    assert view.delivery is not None
    assert view.delivery.state == "expired"


async def test_a_sweep_ends_at_most_its_limit_of_each_kind_and_says_there_is_more(
    store: SQLiteStore,
) -> None:
    """After a long outage one sweep had expired the whole backlog in one transaction, the
    writer (and every request waiting for it) held until it ended."""
    for n in range(5):  # the later registered, the earlier the deadline
        await store.register_wait(wait(f"due-{n}", f"t{n}", expires=T0 + 20 - n), T0)
        await store.record_event(event(f"due-{n}", f"e{n}"), T0)
        await store.register_wait(wait(f"open-{n}", f"o{n}", expires=T0 + 10 + n), T0)
        await store.record_event(event(f"stray-{n}", f"s{n}", ttl=5 + n), T0)
    for n in range(2):  # another tenant's
        await store.register_wait(wait(f"b-{n}", f"b{n}", tenant="beta", expires=T0 + 9), T0)
        beta = NewEvent("beta", "api", f"b{n}", f"b-{n}", "succeeded", b"{}", None, HOUR)
        await store.record_event(beta, T0)
    first = await store.sweep(T0 + 100, T0, 2)
    ends = (first.expired_deliveries, first.expired_waits, first.unmatched_events)
    assert [len(end) for end in ends] == [2, 2, 2]
    assert first.more
    assert [o.key for o in first.expired_deliveries] == ["due-4", "due-3"]  # earliest deadline
    assert states(store, "deliveries") == {"expired": 2, "pending": 5}
    reported = [o.delivery_id for o in first.expired_deliveries]
    while (swept := await store.sweep(T0 + 100, T0, 2)).more:
        reported += [o.delivery_id for o in swept.expired_deliveries]
    reported += [o.delivery_id for o in swept.expired_deliveries]
    assert len(reported) == len(set(reported)) == 7  # each reported once
    assert states(store, "deliveries") == {"expired": 7}
    assert states(store, "waits") == {"expired": 5, "resolved": 7}
    assert states(store, "events") == {"matched": 7, "unmatched": 5}


async def test_a_pending_delivery_past_its_deadline_is_left_to_the_sweep_not_cancelled(
    store: SQLiteStore,
) -> None:
    """Cancelled, it ended uncounted and unpublished, where the sweep reports it expired."""
    await store.register_wait(wait("k", expires=T0 + 10), T0)
    await store.record_event(event("k"), T0)
    refused = await store.cancel_wait("acme", "k", T0 + 11)
    assert refused.outcome == "final"
    assert states(store, "deliveries") == {"pending": 1}
    (outcome,) = (await store.sweep(T0 + 11, T0, 1000)).expired_deliveries
    assert (outcome.key, outcome.state) == ("k", "expired")


async def test_cancel_open_wait_and_pending_delivery(store: SQLiteStore) -> None:
    await store.register_wait(wait("a", "t1"), T0)
    open_wait = await store.cancel_wait("acme", "a", T0)
    assert (open_wait.outcome, open_wait.finished) == ("cancelled", None)  # no delivery ended
    await store.register_wait(wait("b", "t2"), T0)
    await store.record_event(event("b"), T0)
    cancelled = await store.cancel_wait("acme", "b", T0 + 1)
    assert cancelled.outcome == "cancelled"
    assert cancelled.finished is not None  # the delivery it ended, to be reported
    finished = cancelled.finished
    assert (finished.key, finished.state, finished.reason) == ("b", "cancelled", "cancelled")
    assert (finished.received_at, finished.finished_at) == (T0, T0 + 1)
    assert cancelled.wait is not None
    assert cancelled.wait.delivery is not None
    assert cancelled.wait.delivery.state == "cancelled"
    assert await store.claim("acme", "c", T0, 5, 30, "w") == []
    assert (await store.cancel_wait("acme", "b", T0)).outcome == "final"
    assert (await store.cancel_wait("acme", "nope", T0)).outcome == "not_found"


@pytest.mark.parametrize(("ambiguous", "outcome"), [(True, "in_flight"), (False, "cancelled")])
async def test_a_delivery_whose_request_may_have_arrived_is_not_cancelled(
    store: SQLiteStore, ambiguous: bool, outcome: str
) -> None:
    """After a timeout or a 5xx the job may be resumed already: "cancelled" said it was not.
    A 429 or a refused connection proves nothing arrived, and the delivery may be cancelled."""
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "c", T0, 1, 30, "w")
    retry = Settlement("pending", "http_503" if ambiguous else "http_429", None, T0 + 5, ambiguous)
    assert await store.settle(claim, "w", retry, T0 + 1)
    assert (await store.cancel_wait("acme", "k", T0 + 2)).outcome == outcome


async def test_pauses_survive_and_lapse(store: SQLiteStore) -> None:
    await store.pause_tenant(Pause("acme", T0 + 60, "rate_limited"))
    assert [p.tenant for p in await store.active_pauses(T0)] == ["acme"]
    assert await store.active_pauses(T0 + 61) == []


async def test_concurrent_writes_are_group_committed_and_all_durable(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = SQLiteStore(str(path))
    await store.open()
    results = await asyncio.gather(
        *(store.record_event(event(f"k{i}", f"e{i}"), T0) for i in range(500))
    )
    await store.close()
    assert {r.outcome for r in results} == {"buffered"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 500


def on_commit(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, hook: Callable[[int], object]
) -> None:
    """From now on, ``hook`` gets the size of each batch just before the writer commits it."""
    commit = store._log.commit

    def hooked(conn: sqlite3.Connection, futures: list[Any], results: list[Any]) -> None:
        hook(len(futures))
        commit(conn, futures, results)

    monkeypatch.setattr(store._log, "commit", hooked)


def counted_batches(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch the store's writer commits from now on."""
    batches: list[int] = []
    on_commit(store, monkeypatch, batches.append)
    return batches


async def write_a_turn_apart(
    store: SQLiteStore, count: int, writes: list[asyncio.Future[Any]]
) -> None:
    """``count`` events recorded one turn of the loop apart, as requests read in successive
    turns are, into ``writes``; returns once all are answered."""
    loop = asyncio.get_running_loop()
    all_written = asyncio.Event()

    def write(n: int) -> None:
        writes.append(asyncio.ensure_future(store.record_event(event(f"k{n}", f"e{n}"), T0)))
        if n < count:
            loop.call_soon(write, n + 1)  # the next one, a turn later
        else:
            all_written.set()

    write(1)
    await all_written.wait()
    await asyncio.gather(*writes)


async def test_the_writer_waits_a_turn_of_the_loop_for_more_of_its_batch(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second write that comes a turn of the loop after the first, as the handlers of
    requests read in one turn do, shares the first one's transaction."""
    batches = counted_batches(store, monkeypatch)
    loop = asyncio.get_running_loop()
    writes: list[asyncio.Future[Any]] = []
    both = asyncio.Event()

    def write(n: int) -> None:
        writes.append(asyncio.ensure_future(store.record_event(event(f"k{n}", f"e{n}"), T0)))
        if len(writes) == 2:
            both.set()

    loop.call_soon(write, 1)  # enqueues, and wakes the writer
    loop.call_soon(loop.call_soon, write, 2)  # enqueues in the turn the writer wakes in
    await both.wait()
    await asyncio.gather(*writes)
    assert batches == [2]


async def test_the_writer_waits_while_each_turn_of_the_loop_brings_more_writes(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that come one turn of the loop apart, as requests read in successive turns do,
    share one transaction; the first turn that brings none ends the wait."""
    batches = counted_batches(store, monkeypatch)
    chain = 5
    await write_a_turn_apart(store, chain, [])
    assert batches == [chain]
    await store.record_event(event("alone", "e-alone"), T0)  # a turn later: a batch of its own
    assert batches == [chain, 1]


async def test_the_writer_stops_gathering_at_a_full_batch(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that keep coming a turn apart do not hold the first batch back once it is full."""
    writes: list[asyncio.Future[Any]] = []
    written_at_commits: list[int] = []
    on_commit(store, monkeypatch, lambda _size: written_at_commits.append(len(writes)))
    await write_a_turn_apart(store, MAX_BATCH + 10, writes)
    assert written_at_commits[0] <= MAX_BATCH + 1  # not the whole chain


async def test_the_writer_lets_the_loop_run_between_the_batches_of_a_long_queue(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More writes queued than one batch takes: the loop gets a turn between the batches, so
    that requests and the answers of earlier commits do not wait for the whole queue."""
    happened: list[object] = []
    loop = asyncio.get_running_loop()

    def noted(size: int) -> None:
        happened.append(size)
        loop.call_soon(happened.append, "turn")  # runs at the loop's next turn, after the commit

    on_commit(store, monkeypatch, noted)
    await asyncio.gather(
        *(store.record_event(event(f"k{n}", f"e{n}"), T0) for n in range(MAX_BATCH + 1))
    )
    assert happened[:3] == [MAX_BATCH, "turn", 1]


async def test_one_failing_unit_does_not_sink_its_batch(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = counted_batches(store, monkeypatch)
    outcomes = await asyncio.gather(  # all three queued in this turn: one batch
        store.record_event(event("a", "1"), T0),
        store._write(lambda conn: conn.execute("INSERT INTO nope VALUES (1)")),
        store.record_event(event("b", "2"), T0),
        return_exceptions=True,
    )
    assert batches == [3]
    assert outcomes[0].outcome == "buffered"  # type: ignore[union-attr]
    assert isinstance(outcomes[1], Exception)
    assert outcomes[2].outcome == "buffered"  # type: ignore[union-attr]


async def test_the_writer_outlives_a_batch_that_crashes(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that is not SQLite's, in the middle of a transaction: the batch is answered
    with an error, the transaction rolled back, and the next batch is written."""
    execute = store._execute
    crashed: list[bool] = []

    def crashing_once(batch: list[Any]) -> list[Any]:
        results = execute(batch)
        if not crashed:  # its statements ran, in a transaction still open
            crashed.append(True)
            raise RuntimeError("a bug")
        return results

    monkeypatch.setattr(store, "_execute", crashing_once)
    with pytest.raises(StoreError, match="a bug"):
        await asyncio.wait_for(store.record_event(event("a", "1"), T0), 5)
    second = await asyncio.wait_for(store.record_event(event("b", "2"), T0), 5)
    assert second.outcome == "buffered"
    again = await asyncio.wait_for(store.record_event(event("a", "1"), T0), 5)
    assert again.outcome == "buffered"  # not "duplicate": the crashed batch was rolled back


async def test_two_closes_at_once_both_end_with_the_store_closed(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    queued = asyncio.ensure_future(store.record_event(event("k", "e"), T0))
    await asyncio.wait_for(asyncio.gather(store.close(), store.close()), 5)
    assert queued.done()  # answered before either close returned
    assert queued.result().outcome == "buffered"
    with pytest.raises(StoreError, match="not open"):
        await store.record_event(event("k", "f"), T0)
    await store.close()  # and once more, after both


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "m.db"))
    versions = [version for version, _ in load_migrations("sqlite")]
    assert versions == list(range(1, len(versions) + 1))
    assert await store.migrate() == versions
    assert await store.migrate() == []


ROW_WRITES = ("insert_wait", "insert_event_rows", "insert_delivery_rows", "insert_watch")


async def test_writing_a_row_builds_no_temporary_table(store: SQLiteStore) -> None:
    """A CHECK (state IN (three or more values)) makes SQLite build an ephemeral table of the
    values for every row it writes; migration 0005 spells those checks as equalities."""
    queries = load_queries("sqlite")
    with sqlite3.connect(store._path) as conn:
        for name in ROW_WRITES:
            sql = queries[name]
            params = dict.fromkeys(re.findall(r":(\w+)", sql)) or (None,) * sql.count("?")
            program = conn.execute(f"EXPLAIN {sql}", params).fetchall()
            assert "OpenEphemeral" not in {op[1] for op in program}, name


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("closed_watches", "watches_active"),  # read every watch ever registered
        ("due_few", "deliveries_next"),  # new: a claim read every delayed delivery
    ],
)
async def test_questions_asked_every_second_read_through_their_index(
    store: SQLiteStore, name: str, index: str
) -> None:
    """The planner's choice on an empty database, as on a large one (no ANALYZE is run): a
    table scan here costs milliseconds on the writer at 200,000 rows."""
    sql = load_queries("sqlite")[name]
    params = dict.fromkeys(re.findall(r":(\w+)", sql))
    with sqlite3.connect(store._path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    scans = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert any(index in step for step in scans), plan
    assert not any(step in ("SCAN w", "SCAN deliveries") for step in scans), plan


async def test_the_rewritten_checks_keep_rows_and_still_refuse_bad_states(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as conn:  # a database at version 4
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
        for version, script in load_migrations("sqlite")[:4]:
            conn.executescript(f"{script}\nINSERT INTO schema_version VALUES ({version});")
        conn.execute(
            "INSERT INTO events (tenant, source, event_id, key, status, data, state, received_at,"
            " buffer_until) VALUES ('acme', 'api', 'e1', 'k1', 'succeeded', '{}', 'buffered',"
            " ?, ?)",
            (T0, T0 + HOUR),
        )

    migrated = SQLiteStore(str(path))
    assert await migrated.migrate() == [5, 6]
    await migrated.open()
    try:
        assert (await migrated.register_wait(wait("k1"), T0)).matched  # the buffered event
        assert states(migrated, "events") == {"matched": 1}
        assert states(migrated, "deliveries") == {"pending": 1}
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
                conn.execute("UPDATE events SET state = 'lost'")
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
                conn.execute("UPDATE deliveries SET state = 'lost'")
        await migrated.register_wait(wait("k2", token="t2"), T0)
        assert (await migrated.record_event(event("k2", "e2"), T0)).outcome == "matched"
    finally:
        await migrated.close()


# -- blobs -------------------------------------------------------------------------------------


def blob_event(key: str, sha: str, event_id: str = "big", ttl: float = HOUR) -> NewEvent:
    meta = BlobMeta(sha, 10, "application/json")
    return NewEvent("acme", "api", event_id, key, "succeeded", b"", None, ttl, blob=meta)


async def test_blob_of_a_buffered_event_is_kept_until_its_buffer_lapses(store: SQLiteStore) -> None:
    sha = "a" * 64
    assert (await store.record_event(blob_event("k", sha, ttl=10), T0)).outcome == "buffered"
    assert await store.collectable_blobs(T0 + 5, 10) == []  # still buffered, and kept
    assert await store.collectable_blobs(T0 + 11, 10) == []  # buffer lapsed, not yet swept
    await store.sweep(T0 + 11, T0, 1000)
    assert await store.collectable_blobs(T0 + 11, 10) == [sha]
    assert not await store.forget_blob(sha)  # not marked yet
    assert await store.condemn_blob(sha, T0 + 11)
    assert await store.collectable_blobs(T0 + 11, 10) == [sha]  # a crash now: still collectable
    assert await store.forget_blob(sha)
    assert not await store.forget_blob(sha)


async def test_blob_of_an_unfinished_delivery_outlives_its_keep_until(store: SQLiteStore) -> None:
    sha = "b" * 64
    await store.register_wait(wait("k", expires=T0 + 10 * HOUR), T0)
    assert (await store.record_event(blob_event("k", sha, ttl=10), T0)).outcome == "matched"
    late = T0 + HOUR  # past the intake's keep-until, the delivery still pending
    assert await store.collectable_blobs(late, 10) == []
    assert not await store.condemn_blob(sha, late)
    (claim,) = await store.claim("acme", "cred", late, 1, 60, "me")
    assert claim.blob == BlobMeta(sha, 10, "application/json")
    assert claim.data == b""
    await store.settle(claim, "me", Settlement("delivered", "http_204", 204), late)
    assert await store.collectable_blobs(late, 10) == [sha]


async def test_a_url_handed_out_keeps_its_blob_until_it_expires(store: SQLiteStore) -> None:
    meta = BlobMeta("c" * 64, 3, "text/csv")
    await store.keep_blob(meta, T0 + 100, T0)
    await store.keep_blob(meta, T0 + 50, T0)  # an earlier expiry never shortens it
    assert await store.collectable_blobs(T0 + 99, 10) == []
    assert await store.collectable_blobs(T0 + 101, 10) == [meta.sha256]


async def test_413_switches_a_delivery_to_claim_check_for_good(store: SQLiteStore) -> None:
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "cred", T0, 1, 60, "me")
    assert not claim.claim_check
    swap = Settlement("pending", "payload_too_large", 413, retry_at=T0, claim_check=True)
    assert await store.settle(claim, "me", swap, T0)
    (again,) = await store.claim("acme", "cred", T0 + 1, 1, 60, "me")
    assert again.claim_check
    retry = Settlement("pending", "http_503", 503, retry_at=T0 + 1)
    assert await store.settle(again, "me", retry, T0 + 1)
    (third,) = await store.claim("acme", "cred", T0 + 2, 1, 60, "me")
    assert third.claim_check


async def test_a_deletion_mark_left_long_ago_is_lifted(store: SQLiteStore) -> None:
    """A collector that died between marking and deleting must not block the blob's writers
    for ever (one whose deletion fails lifts its own mark: spare_blob); a mark that a
    deletion renewed is fresh again."""
    meta = BlobMeta("e" * 64, 3, "text/csv")
    assert await store.keep_blob(meta, T0 + 1, T0)
    assert await store.condemn_blob(meta.sha256, T0 + 2)
    assert not await store.keep_blob(meta, T0 + HOUR, T0 + 1 + ABANDONED_MARK_S)
    assert await store.keep_blob(meta, T0 + HOUR, T0 + 3 + ABANDONED_MARK_S)
    assert not await store.forget_blob(meta.sha256)  # the row is kept again, not marked
    assert await store.collectable_blobs(T0 + 10 + ABANDONED_MARK_S, 10) == []


async def test_a_blob_being_deleted_is_not_kept_until_its_row_is_gone(store: SQLiteStore) -> None:
    """A collector (maybe in another process) marked the row: its bytes may go at any moment,
    so a writer must not record them as kept; once the row is gone, the blob is new again."""
    meta = BlobMeta("d" * 64, 3, "text/csv")
    assert await store.keep_blob(meta, T0 + 1, T0)
    assert await store.condemn_blob(meta.sha256, T0 + 2)
    assert not await store.keep_blob(meta, T0 + 100, T0 + 2)  # the mark stays
    with pytest.raises(BlobCollected):  # nor can an event name it
        await store.record_event(blob_event("k", meta.sha256), T0 + 2)
    assert await store.forget_blob(meta.sha256)
    assert await store.keep_blob(meta, T0 + 100, T0 + 3)
    assert await store.collectable_blobs(T0 + 50, 10) == []
    assert await store.keep_blob(meta, T0 + 200, T0 + 4)  # kept longer, not marked: recorded


async def test_the_writer_keeps_the_configured_page_cache(tmp_path: Path) -> None:
    settings = StoreSettings(url=f"sqlite:///{tmp_path / 'store.db'}", sqlite_cache_mb=48)
    store = open_store(settings)
    await store.open()
    try:
        assert isinstance(store, SQLiteStore)
        writer = store._connection()
        assert writer.execute("PRAGMA cache_size").fetchone() == (-48 * 1024,)  # KiB
    finally:
        await store.close()


async def test_closed_watches_leave_out_the_busy_ones(store: SQLiteStore) -> None:
    """Watches whose job is being cancelled, or will be again later: with them in the first
    100, the watches after them were never reached."""
    for i in range(3):
        await store.register_wait(dataclasses.replace(wait(f"k{i}", f"t{i}"), watch=WATCH), T0)
        await store.cancel_wait("acme", f"k{i}", T0 + 1)
    everything = await store.closed_watches(10)
    assert len(everything) == 3
    rest = await store.closed_watches(1, busy={everything[0].id, everything[1].id})
    assert [w.id for w in rest] == [everything[2].id]


async def test_a_repeat_of_a_wait_past_its_expiry_shows_it_expired(store: SQLiteStore) -> None:
    """The repeat answered 'open' while a GET right after said 'expired'."""
    await store.register_wait(wait("k", expires=T0 + 10), T0)
    repeat = await store.register_wait(wait("k", expires=T0 + 10), T0 + 20)
    assert repeat.outcome == "repeat"
    assert repeat.wait is not None
    assert repeat.wait.state == "expired"
    seen = await store.get_wait("acme", "k", T0 + 20)
    assert seen is not None
    assert seen.state == "expired"


async def test_a_registration_leaves_buffered_events_past_their_time_to_the_sweep(
    store: SQLiteStore,
) -> None:
    """Its match made every other buffered event of the key late, also one whose time had
    passed before the sweep reached it: that one is unmatched, as a moment later."""
    await store.record_event(event("j", "x1", ttl=5.0), T0)  # buffered until T0 + 5
    await store.record_event(event("j", "x2"), T0 + 8)
    await store.record_event(event("j", "x3"), T0 + 9)
    registered = await store.register_wait(wait("j"), T0 + 10)
    assert registered.matched
    with sqlite3.connect(store._path) as conn:
        rows = conn.execute("SELECT event_id, state FROM events WHERE key = 'j' ORDER BY id")
        assert rows.fetchall() == [("x1", "buffered"), ("x2", "matched"), ("x3", "late")]
    await store.sweep(T0 + 11, T0, 1000)
    assert states(store, "events")["unmatched"] == 1


async def test_a_write_whose_caller_was_cancelled_is_made_all_the_same(
    store: SQLiteStore,
) -> None:
    """A lane stopping after Workato answered 204: its settle's caller is cancelled while the
    write is queued. Dropping the write left the row sending, and the sweep later took it
    for an ambiguous attempt."""
    await store.register_wait(wait("k"), T0)
    await store.record_event(event("k"), T0)
    (claim,) = await store.claim("acme", "cred", T0 + 1, 10, 30.0, "me")
    settling = asyncio.ensure_future(
        store.settle(claim, "me", Settlement("delivered", "http_204", 204), T0 + 2)
    )
    await asyncio.sleep(0)  # queued for the writer
    settling.cancel()
    await asyncio.gather(settling, return_exceptions=True)
    await store.record_event(event("other", "e2"), T0 + 3)  # a write after it is answered
    assert states(store, "deliveries") == {"delivered": 1}

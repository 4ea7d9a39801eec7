"""``ingest_batch`` writes a consumer's batch set-based; it must answer and leave the tables
exactly as registering and recording the same inputs one by one would.

Random batches run through ``ingest_batch`` on one store and through ``register_wait`` and
``record_event`` on another; every answer and every table row (ids included) must agree.
The inputs draw from small pools, so that keys are reused, waits expire, are resolved or
cancelled, events repeat within and across batches, and buffered events meet their wait.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.blobs.base import BlobMeta
from gateway.security.tokens import SealedToken
from gateway.store.records import Acceptance, NewEvent, NewWait, Registration
from gateway.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0
SEEDS = range(40)
ROUNDS = 25
TABLES = ("waits", "events", "deliveries", "blobs", "watches")
TENANTS = ("acme", "umbrella")
SOURCES = ("kafka", "api")
BLOBS = tuple(BlobMeta(c * 64, 10 + i, "text/csv") for i, c in enumerate("abc"))


@dataclass
class Pair:
    """The store under test and the reference fed one input at a time."""

    batched: SQLiteStore
    single: SQLiteStore
    paths: tuple[Path, Path]


@asynccontextmanager
async def open_pair(folder: Path) -> AsyncIterator[Pair]:
    paths = (folder / "batched.db", folder / "single.db")
    stores = [SQLiteStore(str(path), synchronous="off") for path in paths]
    for store in stores:
        await store.open()
    try:
        yield Pair(stores[0], stores[1], paths)
    finally:
        for store in stores:
            await store.close()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with open_pair(tmp_path) as opened:
        yield opened


class Inputs:
    """Random registrations and events of one seed, from small pools; ``now`` only moves
    forward."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = T0
        self.keys = [f"s{seed}-k{i}" for i in range(6)]
        self.tokens: list[str] = []
        self.registered = 0

    def tick(self) -> float:
        self.now += self.rng.choice((0.0, 1.0, 5.0, 30.0))
        return self.now

    def wait(self) -> NewWait:
        rng = self.rng
        if not self.tokens or rng.random() < 0.7:
            self.tokens.append(f"{self.keys[0]}-t{len(self.tokens)}")
        token = rng.choice(self.tokens[-3:])  # usually new, sometimes a repeat or a conflict
        tenant, key = rng.choice(TENANTS), rng.choice(self.keys)
        expires = self.now + rng.choice((0.5, 3.0, 20.0, 3600.0))
        sealed = SealedToken("k1", f"sealed-{tenant}-{token}".encode())
        self.registered += 1
        return NewWait(tenant, key, f"digest-{token}", sealed, expires, None, None)

    def event(self) -> NewEvent:
        rng = self.rng
        blob = rng.choice(BLOBS) if rng.random() < 0.2 else None
        return NewEvent(
            tenant=rng.choice(TENANTS),
            source=rng.choice(SOURCES),
            event_id=f"{self.keys[0]}-e{rng.randrange(60)}",
            key=rng.choice(self.keys),
            status=rng.choice(("succeeded", "failed")),
            data=b"" if blob else b'{"n":%d}' % rng.randrange(1000),
            occurred_at=rng.choice((None, self.now - 7.0)),
            buffer_ttl_s=rng.choice((2.0, 10.0, 3600.0)),
            blob=blob,
            # now and then a poll's result, for one wait (ids as the tables give them, or near)
            wait_id=rng.randrange(1, self.registered + 2) if rng.random() < 0.25 else None,
        )

    def batch(self) -> tuple[list[NewWait], list[NewEvent], list[int] | None]:
        """Registrations, events, and how many events come before each registration (None:
        the registrations first)."""
        rng = self.rng
        waits = [self.wait() for _ in range(rng.choice((0, 1, 2, 4)))]
        events = [self.event() for _ in range(rng.randrange(13))]
        waits_at = sorted(rng.randrange(len(events) + 1) for _ in waits)
        return waits, events, rng.choice((None, waits_at))


async def one_by_one(
    store: SQLiteStore,
    waits: list[NewWait],
    events: list[NewEvent],
    now: float,
    waits_at: list[int] | None,
) -> tuple[list[Registration], list[Acceptance]]:
    registered: list[Registration] = []
    accepted: list[Acceptance] = []
    for wait, at in zip(waits, waits_at or [0] * len(waits), strict=True):
        accepted += [await store.record_event(event, now) for event in events[len(accepted) : at]]
        registered.append(await store.register_wait(wait, now))
    rest = events[len(accepted) :]
    return registered, accepted + [await store.record_event(event, now) for event in rest]


async def meddle(pair: Pair, inputs: Inputs, now: float) -> None:
    """Now and then, what else changes waits and events: a sweep, a cancellation."""
    rng = inputs.rng
    if rng.random() < 0.15:
        assert await pair.batched.sweep(now, now, 1000) == await pair.single.sweep(now, now, 1000)
    if rng.random() < 0.15:
        tenant, key = rng.choice(TENANTS), rng.choice(inputs.keys)
        cancelled = await pair.batched.cancel_wait(tenant, key, now)
        assert cancelled == await pair.single.cancel_wait(tenant, key, now)


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}


async def test_a_batch_answers_and_writes_exactly_as_one_input_at_a_time(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        inputs = Inputs(seed)
        (tmp_path / str(seed)).mkdir()
        async with open_pair(tmp_path / str(seed)) as pair:
            for round_ in range(ROUNDS):
                now = inputs.tick()
                waits, events, waits_at = inputs.batch()
                got = await pair.batched.ingest_batch(waits, events, now, waits_at)
                expected = await one_by_one(pair.single, waits, events, now, waits_at)
                assert got == expected, f"seed {seed}, round {round_}"
                assert rows(pair.paths[0]) == rows(pair.paths[1]), f"seed {seed}, round {round_}"
                seen.update(r.outcome + ("+matched" if r.matched else "") for r in got[0])
                seen.update(a.outcome for a in got[1])
                await meddle(pair, inputs, now)
    # the pools must have produced every case, or the comparison proves little
    cases = ("matched", "buffered", "duplicate", "late", "created+matched", "repeat", "conflict")
    assert all(seen[case] > 20 for case in cases), seen


def event(event_id: str, key: str, source: str = "kafka") -> NewEvent:
    return NewEvent("acme", source, event_id, key, "succeeded", b"{}", None, 60.0)


def wait(key: str, token: str, expires: float = T0 + 3600) -> NewWait:
    return NewWait("acme", key, token, SealedToken("k1", b"x"), expires, None, None)


async def test_in_one_batch_a_repeat_is_a_duplicate_and_a_wait_resolves_once(
    pair: Pair,
) -> None:
    batch = [event("e1", "k"), event("e1", "k"), event("e2", "k"), event("e1", "k", "api")]
    _, accepted = await pair.batched.ingest_batch([wait("k", "t")], batch, T0)
    assert [a.outcome for a in accepted] == ["matched", "duplicate", "late", "late"]
    with sqlite3.connect(pair.paths[0]) as conn:
        assert conn.execute("SELECT event_id, source, duplicates FROM events").fetchall() == [
            ("e1", "kafka", 1),
            ("e2", "kafka", 0),
            ("e1", "api", 0),
        ]
        deadline = conn.execute("SELECT deadline FROM deliveries").fetchall()
    assert deadline == [(T0 + 3600,)]


async def test_a_wait_registered_in_the_batch_takes_an_earlier_buffered_event(
    pair: Pair,
) -> None:
    _, accepted = await pair.batched.ingest_batch([], [event("e1", "k")], T0)
    assert [a.outcome for a in accepted] == ["buffered"]
    registered, accepted = await pair.batched.ingest_batch(
        [wait("k", "t")], [event("e1", "k"), event("e2", "k")], T0 + 1
    )
    assert registered[0].matched
    assert [a.outcome for a in accepted] == ["duplicate", "late"]


Op = tuple[str, Any, float]
"""What one HTTP request asks of the store: ("wait" | "cancel" | "event", its input, now)."""


def requests(inputs: Inputs, rng: random.Random) -> list[Op]:
    """Mostly events, between registrations and cancellations; now and then an event that the
    table refuses (a new one: a duplicate would not reach the CHECK)."""
    ops: list[Op] = []
    for _ in range(rng.randrange(20)):
        draw, now = rng.random(), inputs.tick()
        if draw < 0.15:
            ops.append(("wait", inputs.wait(), now))
        elif draw < 0.2:
            ops.append(("cancel", (rng.choice(TENANTS), rng.choice(inputs.keys)), now))
        elif draw < 0.22:
            bad = inputs.event()._replace(event_id=f"bad{len(ops)}", status="refused")
            ops.append(("event", bad, now))
        else:
            ops.append(("event", inputs.event(), now))
    return ops


async def apply(store: SQLiteStore, op: Op) -> Any:
    kind, value, now = op
    if kind == "wait":
        return await store.register_wait(value, now)
    if kind == "cancel":
        return await store.cancel_wait(value[0], value[1], now)
    return await store.record_event(value, now)


async def answer(work: Any) -> Any:
    try:
        return await work
    except Exception as exc:
        return exc


def comparable(result: Any) -> Any:
    return (type(result), str(result)) if isinstance(result, Exception) else result


def count_passes(store: SQLiteStore, seen: Counter[str]) -> None:
    """Count the set-based passes over more than one event, to show the writer merged."""
    record_all = store._record_all

    def spy(conn: sqlite3.Connection, events: list[NewEvent], nows: Any) -> Any:
        seen["merged pass"] += len(events) > 1
        return record_all(conn, events, nows)

    store._record_all = spy  # type: ignore[method-assign]


async def test_http_events_merged_by_the_writer_answer_and_write_as_one_at_a_time(
    tmp_path: Path,
) -> None:
    """``record_event`` calls that meet in one writer batch run as one set-based pass, in FIFO
    order with the other units; a failing one fails alone."""
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        inputs, rng = Inputs(seed), random.Random(-seed)
        (tmp_path / str(seed)).mkdir()
        async with open_pair(tmp_path / str(seed)) as pair:
            count_passes(pair.batched, seen)
            for round_ in range(ROUNDS):
                ops = requests(inputs, rng)
                concurrent = asyncio.gather(*(answer(apply(pair.batched, op)) for op in ops))
                got = await asyncio.wait_for(concurrent, 10)
                expected = [await answer(apply(pair.single, op)) for op in ops]
                assert list(map(comparable, got)) == list(map(comparable, expected)), (seed, round_)
                assert rows(pair.paths[0]) == rows(pair.paths[1]), f"seed {seed}, round {round_}"
                seen.update(
                    type(r).__name__ if isinstance(r, Exception) else r.outcome for r in got
                )
    cases = ("matched", "buffered", "duplicate", "late", "created", "cancelled", "StoreError")
    assert all(seen[case] > 5 for case in cases), seen
    assert seen["merged pass"] > 100, seen


async def test_merged_events_keep_their_times_and_exact_bytes(pair: Pair) -> None:
    datas = [
        b"",
        b'{"s":"\\u00e9\\n\\"q\\u0000"}',
        '{"é":"日本😀"}'.encode(),
        b"1" * 30 + b".5e400",
    ]
    events = [
        NewEvent("acme", "api", f"e{i}", f"ké{i % 2}😀", "succeeded", d, None, 60.0)
        for i, d in enumerate(datas)
    ]
    await pair.batched.register_wait(wait("ké1😀", "t", T0 + 0.25), T0)
    await pair.single.register_wait(wait("ké1😀", "t", T0 + 0.25), T0)
    times = [T0 + 0.1 * i for i in range(len(events))]
    concurrent = asyncio.gather(*map(pair.batched.record_event, events, times))
    got = await asyncio.wait_for(concurrent, 10)
    assert got == [await pair.single.record_event(e, t) for e, t in zip(events, times, strict=True)]
    assert rows(pair.paths[0]) == rows(pair.paths[1])
    with sqlite3.connect(pair.paths[0]) as conn:
        stored = conn.execute("SELECT data, typeof(data) FROM events ORDER BY id").fetchall()
    assert stored == [(d, "blob") for d in datas]


async def test_a_batch_meeting_an_event_already_stored_is_planned_again_with_it(
    pair: Pair,
) -> None:
    """The batch is first written as if none of its events were stored; the one that was
    makes that attempt fail, and nothing of it may remain."""
    await pair.batched.ingest_batch([wait("k", "t")], [event("e1", "other")], T0)
    batch = [event("e2", "k"), event("e1", "other"), event("e3", "x")]
    _, accepted = await pair.batched.ingest_batch([], batch, T0 + 1)
    assert [a.outcome for a in accepted] == ["matched", "duplicate", "buffered"]
    with sqlite3.connect(pair.paths[0]) as conn:
        assert conn.execute("SELECT event_id, state, duplicates FROM events").fetchall() == [
            ("e1", "buffered", 1),
            ("e2", "matched", 0),
            ("e3", "buffered", 0),
        ]
        assert conn.execute("SELECT wait_id, event_row FROM deliveries").fetchall() == [(1, 2)]

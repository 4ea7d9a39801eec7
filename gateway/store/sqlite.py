"""The SQLite store: group commit, with the log synced and checkpointed beside the writer.

Every write is a unit of work queued to a single writer. The writer lets a batch gather while
each turn of the loop brings more units, runs it (up to ``MAX_BATCH`` units) in one transaction
on the event loop (they are short, indexed statements), commits it, and goes on with the next
batch after a turn of the loop: the sync that SQLite would do inside ``COMMIT`` follows in the
log's thread, and the checkpoints run beside it (``wal.py``). Callers are answered only after
a sync that began after their commit: durable before acknowledged, with one fsync for a whole
batch. Whatever acts outside the store does so on an answer, so on synced state: a resume is
sent only after the claim that took it was synced, and everything before it.
Keeping the statements on the loop thread avoids handing the GIL back and forth per statement.
Consecutive ``record_event`` units of a batch (HTTP requests) run as one set-based pass, like a
consumer's batch (see ``correlation.py``): a few statements instead of two to four per event.
Reads use a second connection, which in WAL mode sees the last commit and never waits; a read
whose result is shown to a client or acted on (``get_wait``, ``closed_watches``) goes through
the writer instead, so that it never sees a commit before its sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.blobs.base import BlobMeta
from gateway.config.settings import DEFAULT_SQLITE_CACHE_MB
from gateway.errors import BlobCollected, MigrationError, StoreError
from gateway.security.tokens import SealedToken
from gateway.store.correlation import (
    EventIdentity,
    EventPlan,
    EventRow,
    LatestWait,
    WaitKey,
    plan_events,
)
from gateway.store.records import (
    EXPIRED_ON_ARRIVAL,
    JSON,
    Acceptance,
    Cancellation,
    Claim,
    DeliveryView,
    ExpiredWait,
    FinalState,
    NewEvent,
    NewWait,
    Outcome,
    Pause,
    Polled,
    Registration,
    Settlement,
    Sweep,
    Unmatched,
    WaitView,
    WatchClaim,
    WatchView,
)
from gateway.store.sqlfiles import load_migrations, load_queries
from gateway.store.wal import WriteAheadLog, settle_all

T = TypeVar("T")
FEW_DUE = 100
"""Up to this many due deliveries a claim reads them all and sorts them by deadline."""
WAIT_EXPIRED = "wait_expired"
"""The reason of a delivery whose wait's deadline passed while it waited for its turn."""
CANCELLED = "cancelled"
"""The reason of a delivery whose wait was cancelled before its request left (as stored)."""
Work = Callable[[sqlite3.Connection], Any]
log = structlog.get_logger(__name__)

MAX_BATCH = 512
FINAL_STATES = ("delivered", "delivered_unconfirmed", "dead", "expired")
ABANDONED_MARK_S = 600.0
"""A blob's deletion mark this old was left by a collector that died (a failing one lifts its
own, and each deletion renews it): a writer may lift it (a deletion takes milliseconds)."""


class _Recording:
    """A ``record_event`` unit. Run alone (the fallback), it records its event; the writer
    instead merges consecutive ones into one set-based pass. One per HTTP event, so a plain
    class: a frozen dataclass costs three times as much to build."""

    __slots__ = ("event", "now", "record")

    def __init__(
        self,
        record: Callable[[sqlite3.Connection, NewEvent, float], Acceptance],
        event: NewEvent,
        now: float,
    ) -> None:
        self.record = record
        self.event = event
        self.now = now

    def __call__(self, conn: sqlite3.Connection) -> Acceptance:
        return self.record(conn, self.event, self.now)


class SQLiteStore:
    """``Store`` on a SQLite file in WAL mode."""

    def __init__(
        self, path: str, *, synchronous: str = "full", cache_mb: int = DEFAULT_SQLITE_CACHE_MB
    ) -> None:
        self._path = path
        self._cache_mb = cache_mb
        self._q = load_queries("sqlite")
        self._log = WriteAheadLog(path, self._connect, synchronous=synchronous)
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._closing = False
        self._closed = asyncio.Event()
        self._conn = self._connect()
        self._conn.execute(f"PRAGMA cache_size={-1024 * self._cache_mb}")  # negative: KiB
        self._migrate()
        self._reader = self._connect()
        await self._log.start()
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    async def close(self) -> None:
        """Answer every write queued before, then disconnect. A call while another one is
        under way waits for that one to end."""
        if self._closing:
            await self._closed.wait()
            return
        if self._writer is None:
            return
        self._closing = True  # refuse new writes: none may queue behind the last one
        try:
            with contextlib.suppress(StoreError):  # a failed log answers it so; it drains
                await self._enqueue(lambda conn: None)  # FIFO: what was queued before is done
            writer, self._writer = self._writer, None
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self._log.stop()
            for conn in (self._conn, self._reader):
                if conn is not None:
                    conn.close()
            self._conn = self._reader = None
        finally:
            self._closed.set()

    async def migrate(self) -> list[int]:
        """Apply pending migrations and return the versions applied (for the CLI)."""
        self._conn = self._connect()
        try:
            return self._migrate()
        finally:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the checkpointer's connection is used in its own thread.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":  # e.g. a file system without shared memory: no safe group commit
            conn.close()
            raise StoreError(f"SQLite cannot use WAL mode for {self._path} (journal_mode={mode})")
        self._log.configure(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _migrate(self) -> list[int]:
        conn = self._connection()
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        applied = []
        for version, script in load_migrations("sqlite"):
            if version > current:
                self._apply(conn, version, script)
                applied.append(version)
        if applied and self._log.syncs_commits:
            self._log.sync()
        return applied

    @staticmethod
    def _apply(conn: sqlite3.Connection, version: int, script: str) -> None:
        try:
            conn.executescript(
                f"BEGIN;\n{script}\nINSERT INTO schema_version VALUES ({version});\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration {version:04d} failed: {exc}") from exc

    # -- plumbing --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise StoreError("the store is not open")
        try:
            return work(self._reader)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``work`` for the writer; the future is its result once durable. A plain
        function returning the future: every write, one per HTTP event, would otherwise add
        coroutine frames to create, suspend and resume."""
        if self._writer is None or self._closing:
            raise StoreError("the store is not open")
        if self._log.failure is not None:
            raise self._log.failure
        return self._enqueue(work)

    def _enqueue(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._queue:  # not a wake-up left from writes taken by the last pass
                await self._gather()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                futures = [future for _, future in batch]
                try:
                    results = self._execute([work for work, _ in batch])
                    self._log.commit(self._connection(), futures, results)
                except Exception as exc:  # the batch fails; the writer, and the store, go on
                    self._abandon(exc)
                    settle_all(futures, [StoreError(f"sqlite: {exc}")] * len(batch))
                if self._queue:  # a long queue: requests and answers get a turn in between
                    await asyncio.sleep(0)

    async def _gather(self) -> None:
        """Let a batch grow while writes keep coming, a turn of the loop at a time: the
        handlers of the requests read in one turn run in the next and enqueue, and each batch
        shares the work of its events (lookups, a commit, a sync, a wake-up of the waiting
        handlers). It stops at the first turn that brings no write, or at a full batch. The
        first turn is always waited: the handlers of the turn the writer woke in run after it
        in the next one, so only the turn after shows whether they wrote. A turn costs a few
        microseconds; a lone write waits two."""
        await asyncio.sleep(0)
        queued = len(self._queue)
        while queued < MAX_BATCH:
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return
            queued = len(self._queue)

    def _abandon(self, exc: Exception) -> None:
        """After a failed batch: roll back what it left open, so that the next one can begin,
        and log a failure that is not SQLite's own (a bug) in full."""
        if not isinstance(exc, sqlite3.Error):
            log.error("sqlite.batch_crashed", exc_info=exc)
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _execute(self, batch: list[Work]) -> list[Any]:
        """Run a batch in one open transaction. Units run bare; only if one raises is the batch
        replayed with a savepoint per unit, so one failure does not sink the others."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            return self._merged(conn, batch)
        except Exception:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            return [self._unit(conn, work) for work in batch]

    def _merged(self, conn: sqlite3.Connection, batch: list[Work]) -> list[Any]:
        """Run the units in order, each run of consecutive recordings as one pass."""
        results: list[Any] = []
        run: list[_Recording] = []
        for work in batch:
            if isinstance(work, _Recording):
                run.append(work)
                continue
            results += self._record_run(conn, run)
            run = []
            results.append(work(conn))
        return results + self._record_run(conn, run)

    def _record_run(self, conn: sqlite3.Connection, run: list[_Recording]) -> list[Acceptance]:
        if len(run) == 1:  # the one-by-one path costs less for a lone event
            return [run[0](conn)]
        return self._record_all(conn, [r.event for r in run], [r.now for r in run])

    @staticmethod
    def _unit(conn: sqlite3.Connection, work: Work) -> Any:
        conn.execute("SAVEPOINT unit")
        try:
            result = work(conn)
        except Exception as exc:  # the unit's failure is its caller's answer, not the batch's
            conn.execute("ROLLBACK TO unit")
            result = exc if not isinstance(exc, sqlite3.Error) else StoreError(f"sqlite: {exc}")
        conn.execute("RELEASE unit")
        return result

    def _one(self, conn: sqlite3.Connection, name: str, **params: Any) -> Any:
        return conn.execute(self._q[name], params).fetchone()

    def _run(self, conn: sqlite3.Connection, name: str, **params: Any) -> sqlite3.Cursor:
        return conn.execute(self._q[name], params)

    # -- waits -----------------------------------------------------------------------------

    async def ping(self) -> None:
        if self._log.failure is not None:  # nothing is acknowledged any more: not ready
            raise self._log.failure
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def register_wait(self, wait: NewWait, now: float) -> Registration:
        return await self._write(lambda conn: self._register(conn, wait, now))

    def _register(self, conn: sqlite3.Connection, wait: NewWait, now: float) -> Registration:
        same = self._one(conn, "wait_by_token", tenant=wait.tenant, token_digest=wait.token_digest)
        if same is not None:
            if same[1] != wait.key:
                return Registration("conflict", None, conflict="token_registered_under_other_key")
            if not _same_fields(same[2:], wait):  # a repeat is identical (DESIGN 5.1)
                return Registration("conflict", None, conflict="repeat_with_other_fields")
            # the token's own wait (the key's latest may be a later one), ended first if it
            # is past its expiry, as a GET would show it
            self._expired_before_the_sweep(conn, same[0], now)
            return Registration("repeat", self._view(conn, wait.tenant, wait.key, same[0]))
        if wait.expires_at <= now:
            return Registration("conflict", None, conflict=EXPIRED_ON_ARRIVAL)
        open_wait = self._one(conn, "open_wait_by_key", tenant=wait.tenant, key=wait.key)
        if open_wait is not None and not self._expired_before_the_sweep(conn, open_wait[0], now):
            return Registration("conflict", None, conflict="key_open_with_other_token")
        wait_id = self._insert_wait(conn, wait, now)
        if wait.watch is not None:
            self._run(
                conn,
                "insert_watch",
                wait_id=wait_id,
                tenant=wait.tenant,
                key=wait.key,
                kind=wait.watch.kind,
                connection=wait.watch.connection,
                spec=wait.watch.spec_json,
                now=now,
            )
        buffered = self._one(
            conn, "first_buffered_event", tenant=wait.tenant, key=wait.key, now=now
        )
        if buffered is not None:
            self._match(conn, wait.tenant, wait.key, wait_id, buffered[0], now)
        return Registration(
            "created", self._view(conn, wait.tenant, wait.key), buffered is not None
        )

    def _insert_wait(self, conn: sqlite3.Connection, wait: NewWait, now: float) -> int:
        cursor = self._run(
            conn,
            "insert_wait",
            tenant=wait.tenant,
            key=wait.key,
            token_digest=wait.token_digest,
            token_key_id=wait.sealed.key_id,
            token_blob=wait.sealed.blob,
            now=now,
            expires_at=wait.expires_at,
            job=wait.job_json,
            metadata=wait.metadata_json,
        )
        return int(cursor.lastrowid or 0)

    def _match(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        key: str,
        wait_id: int,
        event_row: int,
        now: float,
    ) -> int:
        """Take a buffered event for a newly registered wait; its siblings become late."""
        self._run(conn, "match_event", wait_id=wait_id, event_row=event_row)
        # past their time they are the sweep's to end as unmatched, as if matched a moment later
        self._run(conn, "orphan_buffered", tenant=tenant, key=key, now=now)
        return self._resolve(conn, tenant, wait_id, event_row, now)

    def _resolve(
        self, conn: sqlite3.Connection, tenant: str, wait_id: int, event_row: int, now: float
    ) -> int:
        """Resolve the wait and write its outbox row, all or nothing."""
        if self._run(conn, "resolve_wait", wait_id=wait_id, now=now).rowcount != 1:
            raise StoreError(f"wait {wait_id} was not open")  # rolls the unit back
        cursor = self._run(
            conn, "insert_delivery", tenant=tenant, wait_id=wait_id, event_row=event_row, now=now
        )
        return int(cursor.lastrowid or 0)

    async def ingest_batch(
        self,
        waits: list[NewWait],
        events: list[NewEvent],
        now: float,
        waits_at: Sequence[int] | None = None,
    ) -> tuple[list[Registration], list[Acceptance]]:
        def unit(conn: sqlite3.Connection) -> tuple[list[Registration], list[Acceptance]]:
            registered: list[Registration] = []
            accepted: list[Acceptance] = []
            taken = 0  # events recorded so far
            for wait, at in zip(waits, waits_at or [0] * len(waits), strict=True):
                run = events[taken:at]  # the events before this wait, as one pass
                accepted += self._record_all(conn, run, [now] * len(run))
                taken = max(taken, at)
                registered.append(self._register(conn, wait, now))
            rest = events[taken:]
            return registered, accepted + self._record_all(conn, rest, [now] * len(rest))

        return await self._write(unit)

    def _record_all(
        self, conn: sqlite3.Connection, events: list[NewEvent], nows: Sequence[float]
    ) -> list[Acceptance]:
        """``_record`` of each event in turn (each at its own time), set-based: a few
        statements for the whole batch instead of two to four per event, with the same answers
        and rows."""
        if not events:
            return []
        latest = self._latest_waits(conn, events)
        last_row, last_delivery = self._one(conn, "last_ids")
        plan = plan_events(events, {}, latest, nows, last_row, last_delivery)
        try:
            self._insert_event_rows(conn, plan)
        except sqlite3.IntegrityError:  # an event of the batch is stored already
            self._run(conn, "delete_events_after", id=last_row)
            known = self._known_events(conn, events)
            plan = plan_events(events, known, latest, nows, last_row, last_delivery)
            self._insert_event_rows(conn, plan)
        self._write_matches(conn, plan)
        kept = [
            _blob_params(e.blob, now + e.buffer_ttl_s, now)
            for e, now in zip(events, nows, strict=True)
            if e.blob is not None
        ]
        # even for duplicates, as ``_record`` does: GC must see the stored bytes
        if kept and conn.executemany(self._q["keep_blob"], kept).rowcount != len(kept):
            raise BlobCollected()  # rolls the unit back
        return plan.acceptances

    def _known_events(
        self, conn: sqlite3.Connection, events: list[NewEvent]
    ) -> dict[EventIdentity, int]:
        """Row ids of the batch's events that are already stored."""
        ids: dict[tuple[str, str], list[str]] = {}
        for event in events:
            ids.setdefault((event.tenant, event.source), []).append(event.event_id)
        known: dict[EventIdentity, int] = {}
        for (tenant, source), event_ids in ids.items():
            rows = self._run(
                conn, "known_events", tenant=tenant, source=source, event_ids=json.dumps(event_ids)
            )
            known.update(((tenant, source, event_id), row) for event_id, row in rows)
        return known

    def _latest_waits(
        self, conn: sqlite3.Connection, events: list[NewEvent]
    ) -> dict[WaitKey, LatestWait]:
        """The latest wait of every key the batch names, if the key has one."""
        keys: dict[str, set[str]] = {}
        for event in events:
            keys.setdefault(event.tenant, set()).add(event.key)
        latest: dict[WaitKey, LatestWait] = {}
        for tenant, names in keys.items():
            rows = self._run(conn, "latest_waits", tenant=tenant, keys=json.dumps(list(names)))
            for key, wait_id, state, expires_at in rows:
                latest[tenant, key] = LatestWait(wait_id, state, expires_at)
        return latest

    def _insert_event_rows(self, conn: sqlite3.Connection, plan: EventPlan) -> None:
        """The plan's new events, first of its writes. The plan is first made as if none of
        the batch's events were stored (most batches: the lookup costs more than the rare
        retry), so an event stored already fails here on its identity's UNIQUE index; the
        caller then deletes the rows inserted before it (a savepoint would copy every page
        the batch touches to a journal) and plans again knowing what is stored."""
        conn.executemany(self._q["insert_event_rows"], [_event_row(row) for row in plan.rows])

    def _write_matches(self, conn: sqlite3.Connection, plan: EventPlan) -> None:
        """The rest of the plan: duplicates counted, waits resolved, deliveries queued."""
        q = self._q
        if plan.duplicates:
            duplicates = [(n, i) for i, n in plan.duplicates.items()]
            conn.executemany(q["count_duplicate_rows"], duplicates)
        if not plan.deliveries:
            return
        waits = json.dumps([(d.wait_id, d.event_row) for d in plan.deliveries])
        if self._run(conn, "resolve_waits_at", waits=waits).rowcount != len(plan.deliveries):
            raise StoreError("a wait of the batch was not open")  # rolls the unit back
        received = {row.id: row.received_at for row in plan.rows}
        deliveries = [(d, received[d.event_row]) for d in plan.deliveries]
        conn.executemany(
            q["insert_delivery_rows"],
            [(d.id, d.tenant, d.wait_id, d.event_row, d.deadline, at, at) for d, at in deliveries],
        )

    def _expired_before_the_sweep(self, conn: sqlite3.Connection, wait_id: int, now: float) -> bool:
        """End an open wait past its expiry as the sweep would have: true if it was one."""
        return bool(self._run(conn, "expire_wait", wait_id=wait_id, now=now).rowcount)

    async def get_wait(self, tenant: str, key: str, now: float) -> WaitView | None:
        """Read through the writer, whose answers wait for the sync: the reader's connection
        would show a commit a sync before it is durable."""
        return await self._write(lambda conn: self._current_view(conn, tenant, key, now))

    def _current_view(
        self, conn: sqlite3.Connection, tenant: str, key: str, now: float
    ) -> WaitView | None:
        row = self._current_row(conn, tenant, key, now)
        return None if row is None else self._view_of(conn, row)

    def _current_row(
        self, conn: sqlite3.Connection, tenant: str, key: str, now: float
    ) -> tuple[Any, ...] | None:
        """The key's latest wait (``wait_view``), ended first if it is open past its expiry, as
        the sweep would have: shown as open, it was expected to take an event that would
        then be late."""
        row: tuple[Any, ...] | None = self._one(conn, "wait_view", tenant=tenant, key=key, id=None)
        if row is not None and self._expired_before_the_sweep(conn, row[0], now):
            row = self._one(conn, "wait_view", tenant=tenant, key=key, id=row[0])
        return row

    def _view(
        self, conn: sqlite3.Connection, tenant: str, key: str, wait_id: int | None = None
    ) -> WaitView | None:
        row = self._one(conn, "wait_view", tenant=tenant, key=key, id=wait_id)
        return None if row is None else self._view_of(conn, row)

    def _view_of(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> WaitView:
        delivery = None if row[11] is None else DeliveryView(*row[11:18])
        watch_row = self._one(conn, "watch_of_wait", wait_id=row[0])
        watch = None if watch_row is None else WatchView(*watch_row)
        tenant, key, state, created, expires, resolved, job, metadata, event_id, source = row[1:11]
        return WaitView(
            tenant,
            key,
            state,
            created,
            expires,
            resolved,
            job,
            metadata,
            event_id,
            source,
            delivery,
            watch,
        )

    async def cancel_wait(self, tenant: str, key: str, now: float) -> Cancellation:
        return await self._write(lambda conn: self._cancel(conn, tenant, key, now))

    def _cancel(self, conn: sqlite3.Connection, tenant: str, key: str, now: float) -> Cancellation:
        row = self._current_row(conn, tenant, key, now)
        if row is None:
            return Cancellation("not_found", None)
        wait_id, view = row[0], self._view_of(conn, row)
        delivery = view.delivery
        pending = delivery is not None and delivery.state == "pending"
        # past its deadline (the wait's expiry), a pending delivery is the sweep's to expire,
        # count and publish
        if view.state != "open" and (not pending or view.expires_at <= now):
            in_flight = delivery is not None and delivery.state == "sending"
            return Cancellation("in_flight" if in_flight else "final", view)
        if pending and self._one(conn, "delivery_may_have_arrived", wait_id=wait_id)[0]:
            return Cancellation("in_flight", view)  # started: the job may be resumed already
        self._run(conn, "cancel_wait", wait_id=wait_id, now=now)
        finished = None
        if self._run(conn, "cancel_delivery", wait_id=wait_id, now=now).rowcount:
            row = self._one(conn, "cancelled_delivery", wait_id=wait_id)
            finished = _finished(row, "cancelled", CANCELLED, now)
        return Cancellation("cancelled", self._view(conn, tenant, key), finished)

    # -- events ----------------------------------------------------------------------------

    def record_event(self, event: NewEvent, now: float) -> Awaitable[Acceptance]:
        return self._write(_Recording(self._record, event, now))

    def _record(self, conn: sqlite3.Connection, event: NewEvent, now: float) -> Acceptance:
        # Only the latest wait of a key can be open: a key is registered again only once closed.
        wait = self._one(conn, "latest_wait", tenant=event.tenant, key=event.key)
        if event.wait_id is not None and (wait is None or wait[0] != event.wait_id):
            state, wait_id, until = "late", None, None  # the one wait it answers is gone
        elif wait is None:
            state, wait_id, until = "buffered", None, now + event.buffer_ttl_s
        elif wait[1] == "open" and wait[2] > now:
            state, wait_id, until = "matched", wait[0], None
        else:
            state, wait_id, until = "late", None, None
        row, duplicates = self._one(
            conn,
            "upsert_event",
            tenant=event.tenant,
            source=event.source,
            event_id=event.event_id,
            key=event.key,
            status=event.status,
            data=event.data,
            state=state,
            wait_id=wait_id,
            now=now,
            occurred_at=event.occurred_at,
            buffer_until=until,
            blob=event.blob.sha256 if event.blob else None,
            content_type=event.blob.content_type if event.blob else JSON,
        )
        # even for a duplicate: the bytes were stored, GC must see them
        if event.blob is not None and not self._keep_blob(
            conn, event.blob, now + event.buffer_ttl_s, now
        ):
            raise BlobCollected()  # rolls the unit back
        if duplicates:
            return Acceptance("duplicate")
        if wait_id is None:
            return Acceptance("buffered" if until else "late")
        return Acceptance("matched", self._resolve(conn, event.tenant, wait_id, row, now))

    # -- deliveries ------------------------------------------------------------------------

    async def claim(
        self, tenant: str, credential: str, now: float, limit: int, lease_s: float, owner: str
    ) -> list[Claim]:
        return await self._write(
            lambda conn: self._claim(conn, tenant, credential, now, limit, now + lease_s, owner)
        )

    def _claim(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        credential: str,
        now: float,
        limit: int,
        lease_until: float,
        owner: str,
    ) -> list[Claim]:
        due = self._due(conn, tenant, now, limit)
        claims = []
        for delivery_id in due:
            self._run(conn, "lease_delivery", id=delivery_id, owner=owner, lease_until=lease_until)
            self._run(conn, "record_send", credential=credential, now=now)
            claims.append(self._claim_row(self._one(conn, "claim_details", id=delivery_id)))
        return claims

    def _due(self, conn: sqlite3.Connection, tenant: str, now: float, limit: int) -> list[int]:
        """Up to ``limit`` due deliveries, earliest deadline first. A few due rows are read
        whole and sorted (the rest of the pending rows may be waiting out retry delays);
        a backlog of them is read in deadline order."""
        few = self._run(conn, "due_few", tenant=tenant, now=now, cap=FEW_DUE).fetchall()
        if len(few) < FEW_DUE:
            ready = sorted((deadline, id_) for id_, deadline in few if deadline > now)
            return [id_ for _, id_ in ready[:limit]]
        rows = self._run(conn, "due_deliveries", tenant=tenant, now=now, limit=limit)
        return [id_ for (id_,) in rows]

    @staticmethod
    def _claim_row(row: tuple[Any, ...]) -> Claim:
        (delivery_id, tenant, _wait, deadline, attempts, ambiguous, key, kid, sealed) = row[:9]
        (job, metadata, event_id, source, status, data, received_at) = row[9:16]
        (claim_check, content_type, blob_sha256, blob_size) = row[16:]
        blob = None if blob_sha256 is None else BlobMeta(blob_sha256, blob_size, content_type)
        return Claim(
            delivery_id=delivery_id,
            tenant=tenant,
            key=key,
            sealed=SealedToken(kid, bytes(sealed)),
            deadline=deadline,
            attempt=attempts,
            ambiguous=bool(ambiguous),
            job_json=job,
            metadata_json=metadata,
            event_id=event_id,
            source=source,
            status=status,
            data=bytes(data),
            received_at=received_at,
            claim_check=bool(claim_check),
            blob=blob,
        )

    async def settle(self, claim: Claim, owner: str, result: Settlement, now: float) -> bool:
        finished = None if result.state == "pending" else now
        return await self._write(
            lambda conn: (
                self._run(
                    conn,
                    "settle_delivery",
                    id=claim.delivery_id,
                    owner=owner,
                    attempt=claim.attempt,
                    state=result.state,
                    reason=result.reason,
                    last_status=result.last_status,
                    retry_at=result.retry_at,
                    ambiguous=int(result.ambiguous),
                    refund=int(result.refund_attempt),
                    claim_check=int(result.claim_check),
                    finished_at=finished,
                ).rowcount
                == 1
            )
        )

    async def record_send(self, credential: str, now: float) -> None:
        await self._write(
            lambda conn: self._run(conn, "record_send", credential=credential, now=now)
        )

    async def recent_sends(self, credential: str, since: float) -> list[float]:
        rows = await self._read(
            lambda conn: self._run(
                conn, "recent_sends", credential=credential, since=since
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def pause_tenant(self, pause: Pause) -> None:
        await self._write(
            lambda conn: self._run(
                conn, "pause_tenant", tenant=pause.tenant, until=pause.until, reason=pause.reason
            )
        )

    async def active_pauses(self, now: float) -> list[Pause]:
        rows = await self._read(lambda conn: self._run(conn, "active_pauses", now=now).fetchall())
        return [Pause(*row) for row in rows]

    async def sweep(self, now: float, forget_sends_before: float, limit: int) -> Sweep:
        return await self._write(lambda conn: self._sweep(conn, now, forget_sends_before, limit))

    def _sweep(self, conn: sqlite3.Connection, now: float, before: float, limit: int) -> Sweep:
        reclaimed = self._run(conn, "reclaim_leases", now=now).rowcount
        expired: list[Outcome] = []
        for (tenant,) in self._run(conn, "pending_tenants").fetchall():
            left = limit - len(expired)
            if left == 0:
                break
            rows = self._run(conn, "deliveries_to_expire", tenant=tenant, now=now, limit=left)
            expired += (_expired(row, now) for row in rows)
        conn.executemany(
            self._q["expire_delivery"],
            [{"id": o.delivery_id, "reason": WAIT_EXPIRED, "now": now} for o in expired],
        )
        waits = [ExpiredWait(*row) for row in self._run(conn, "expire_waits", now=now, limit=limit)]
        events = [
            Unmatched(*row) for row in self._run(conn, "expire_buffered", now=now, limit=limit)
        ]
        self._run(conn, "forget_sends", before=before)
        self._run(conn, "forget_pauses", now=now)
        return Sweep(
            reclaimed=reclaimed,
            expired_deliveries=expired,
            expired_waits=waits,
            unmatched_events=events,
            more=limit in (len(expired), len(waits), len(events)),
        )

    # -- blobs -----------------------------------------------------------------------------

    async def keep_blob(self, blob: BlobMeta, keep_until: float, now: float) -> bool:
        return await self._write(lambda conn: self._keep_blob(conn, blob, keep_until, now))

    def _keep_blob(
        self, conn: sqlite3.Connection, blob: BlobMeta, keep_until: float, now: float
    ) -> bool:
        return conn.execute(self._q["keep_blob"], _blob_params(blob, keep_until, now)).rowcount == 1

    async def collectable_blobs(self, now: float, limit: int) -> list[str]:
        rows = await self._read(
            lambda conn: self._run(conn, "collectable_blobs", now=now, limit=limit).fetchall()
        )
        return [row[0] for row in rows]

    async def condemn_blob(self, sha256: str, now: float) -> bool:
        return await self._write(
            lambda conn: self._run(conn, "condemn_blob", sha256=sha256, now=now).rowcount == 1
        )

    async def forget_blob(self, sha256: str) -> bool:
        return await self._write(
            lambda conn: self._run(conn, "forget_blob", sha256=sha256).rowcount == 1
        )

    async def spare_blob(self, sha256: str, now: float) -> None:
        await self._write(lambda conn: self._run(conn, "spare_blob", sha256=sha256, now=now))

    # -- watches ---------------------------------------------------------------------------

    async def claim_watches(
        self, now: float, limit: int, lease_s: float, owner: str
    ) -> list[WatchClaim]:
        def unit(conn: sqlite3.Connection) -> list[WatchClaim]:
            due = self._run(conn, "due_watches", now=now, limit=limit).fetchall()
            leased = [
                self._one(conn, "lease_watch", id=i, owner=owner, lease_until=now + lease_s)
                for (i,) in due
            ]
            return [_leased_watch(row) for row in leased]

        return await self._write(unit)

    async def watch_polled(self, claim: WatchClaim, owner: str, polled: Polled, now: float) -> None:
        await self._write(
            lambda conn: self._run(
                conn,
                "watch_polled",
                id=claim.id,
                owner=owner,
                next_poll_at=polled.next_poll_at,
                failures=polled.failures,
                job_status=polled.job_status,
                progress=polled.progress,
                last_error=polled.error,
                now=now,
            )
        )

    async def watch_done(
        self, claim: WatchClaim, job_status: str, progress: str | None, now: float
    ) -> None:
        await self._write(
            lambda conn: self._run(
                conn, "watch_done", id=claim.id, job_status=job_status, progress=progress, now=now
            )
        )

    async def closed_watches(
        self, limit: int, busy: Collection[int] = (), held: Collection[str] = ()
    ) -> list[WatchClaim]:
        # through the writer: each answer cancels a job, so it must rest on synced state only
        ids, connections = json.dumps(list(busy)), json.dumps(list(held))
        rows = await self._write(
            lambda conn: self._run(
                conn, "closed_watches", limit=limit, busy=ids, held=connections
            ).fetchall()
        )
        return [WatchClaim(*row) for row in rows]

    async def stop_watch(self, claim: WatchClaim, now: float) -> None:
        await self._write(lambda conn: self._run(conn, "stop_watch", id=claim.id, now=now))

    async def counts(self) -> dict[str, dict[str, int]]:
        """Counting scans the partial indexes of the active rows, which may still be many: it
        runs in a thread, on a connection of its own, so that it never stalls the event loop
        (SQLite releases the GIL while it scans)."""
        if self._reader is None:
            raise StoreError("the store is not open")
        try:
            rows = await asyncio.to_thread(self._count_active)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        counts: dict[str, dict[str, int]] = {}
        for kind, state, n in rows:
            counts.setdefault(kind, {})[state] = n
        return counts

    def _count_active(self) -> list[tuple[str, str, int]]:
        conn = sqlite3.connect(f"{Path(self._path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute(self._q["count_active"]).fetchall()
        finally:
            conn.close()


def _event_row(row: EventRow) -> tuple[Any, ...]:
    """``insert_event_rows``' parameters, in the types the sqlite3 module binds without its
    adaptation protocol (int, float, str, bytearray): ``''`` for NULL, the data as a
    bytearray. A 1 KB copy costs a tenth of adapting the bytes."""
    event, blob = row.event, row.event.blob
    return (
        row.id,
        event.tenant,
        event.source,
        event.event_id,
        event.key,
        event.status,
        bytearray(event.data),
        row.state,
        "" if row.wait_id is None else row.wait_id,
        row.received_at,
        "" if event.occurred_at is None else event.occurred_at,
        "" if row.buffer_until is None else row.buffer_until,
        "" if blob is None else blob.sha256,
        JSON if blob is None else blob.content_type,
    )


def _expired(row: tuple[Any, ...], now: float) -> Outcome:
    """A ``deliveries_to_expire`` row as the outcome the sweep reports."""
    return _finished(row, "expired", WAIT_EXPIRED, now)


def _finished(row: tuple[Any, ...], state: FinalState, reason: str, now: float) -> Outcome:
    """A row of ``deliveries_to_expire``'s columns as the outcome reported."""
    delivery_id, tenant, key, event_id, source, attempts, last_status, received_at = row
    return Outcome(
        tenant=tenant,
        key=key,
        delivery_id=delivery_id,
        event_id=event_id,
        source=source,
        state=state,
        reason=reason,
        attempts=attempts,
        last_status=last_status,
        received_at=received_at,
        finished_at=now,
    )


def _leased_watch(row: tuple[Any, ...]) -> WatchClaim:
    i, wait_id, tenant, key, kind, connection, spec, polls, failures, status, error = row
    return WatchClaim(
        i, wait_id, tenant, key, kind, connection, spec, polls, failures, "open", status, error
    )


def _same_fields(stored: tuple[Any, ...], wait: NewWait) -> bool:
    """The stored wait's job, metadata and watch are the registration's; the expiry is not
    compared (a retry may compute it again from the clock: the first one stands)."""
    job, metadata, watch = stored
    spec = wait.watch.spec_json if wait.watch is not None else None
    same_metadata = _canonical(metadata) == _canonical(wait.metadata_json)
    return job == wait.job_json and watch == spec and same_metadata


def _canonical(text: str | None) -> str | None:
    """The JSON with its keys sorted: any key order is the same metadata, but not a
    different type (decoded, ``true == 1`` in Python). An empty object is none: it was stored
    as none before 0.2.11, and its repeat is the same registration."""
    value = None if text is None else json.loads(text)
    return None if value is None or value == {} else json.dumps(value, sort_keys=True)


def _blob_params(blob: BlobMeta, keep_until: float, now: float) -> dict[str, Any]:
    return {
        "sha256": blob.sha256,
        "size": blob.size,
        "content_type": blob.content_type,
        "now": now,
        "keep_until": keep_until,
        "abandoned_before": now - ABANDONED_MARK_S,
    }

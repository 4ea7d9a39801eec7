"""The write-ahead log kept beside the writer (gateway/store/wal.py), on real SQLite files.

The writer goes on once its commit is done, while its answers wait for a sync that began after
the commit; a failed sync answers with an error; the writer's commits never checkpoint, the
checkpointer copies the log into the database file; a log that outgrows its limit under writes
without a pause is restarted after a commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.security.tokens import SealedToken
from gateway.store import wal as wal_module
from gateway.store.records import NewWait
from gateway.store.sqlite import SQLiteStore
from gateway.store.wal import WriteAheadLog
from tests.integration.held_syncs import HeldSyncs

ROW = os.urandom(1000)


def connector(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    return connect


class Writer:
    """A writer connection configured by the log, as the store's is."""

    def __init__(self, path: Path, log: WriteAheadLog) -> None:
        self.conn = connector(path)()
        log.configure(self.conn)
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, d BLOB)")
        self.log = log

    def commit_rows(
        self, n: int, futures: Sequence[asyncio.Future[Any]] = (), results: Sequence[Any] = ()
    ) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO t (d) VALUES (?)", [(ROW,)] * n)
        self.log.commit(self.conn, list(futures), list(results))


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[WriteAheadLog, Writer]] = []

    async def open_log(**options: Any) -> tuple[WriteAheadLog, Writer]:
        path = tmp_path / "w.db"
        log = WriteAheadLog(str(path), connector(path), **options)
        writer = Writer(path, log)
        await log.start()
        opened.append((log, writer))
        return log, writer

    yield open_log
    for log, writer in opened:
        await log.stop()
        writer.conn.close()


async def test_answers_wait_for_a_sync_that_began_after_the_commit(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = await opened(synchronous="full")
    synced = asyncio.Event()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_fdatasync = os.fdatasync

    def held_fdatasync(fd: int) -> None:
        loop.call_soon_threadsafe(synced.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        real_fdatasync(fd)

    monkeypatch.setattr(wal_module.os, "fdatasync", held_fdatasync)
    future: asyncio.Future[Any] = loop.create_future()
    try:
        writer.commit_rows(10, [future], ["answer"])  # the writer goes on
        await asyncio.wait_for(synced.wait(), 5)
        await asyncio.sleep(0.05)
        assert not future.done()  # committed, being synced: not answered yet
    finally:
        release.set()
    assert await asyncio.wait_for(future, 5) == "answer"


async def test_the_sync_follows_the_commit_without_waiting_for_the_loop(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = await opened(synchronous="full")
    syncing = threading.Event()
    real_fdatasync = os.fdatasync

    def recorded(fd: int) -> None:
        syncing.set()
        real_fdatasync(fd)

    monkeypatch.setattr(wal_module.os, "fdatasync", recorded)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [future], ["answer"])
    assert syncing.wait(5)  # blocks the loop: the log's thread starts the sync on its own
    assert await asyncio.wait_for(future, 5) == "answer"


class SlowToCommit:
    """The writer's connection, but its ``COMMIT`` first gives the log's thread a moment to
    start a sync: a sync started then would not cover the commit."""

    def __init__(self, conn: sqlite3.Connection, syncing: threading.Event) -> None:
        self._conn = conn
        self._syncing = syncing

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self._syncing.wait(0.3)
        return self._conn.execute(sql, *args)


async def test_the_sync_that_answers_a_commit_begins_after_it(
    opened: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, writer = await opened(synchronous="full")
    wal = tmp_path / "w.db-wal"
    syncing = threading.Event()
    synced_sizes: list[int] = []
    real_fdatasync = os.fdatasync

    def recorded(fd: int) -> None:
        synced_sizes.append(os.fstat(fd).st_size)  # what this sync covers at the least
        syncing.set()
        real_fdatasync(fd)

    monkeypatch.setattr(wal_module.os, "fdatasync", recorded)
    writer.conn.execute("BEGIN IMMEDIATE")
    writer.conn.executemany("INSERT INTO t (d) VALUES (?)", [(ROW,)] * 20)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    log.commit(SlowToCommit(writer.conn, syncing), [future], ["answer"])
    committed = wal.stat().st_size
    assert await asyncio.wait_for(future, 5) == "answer"
    assert synced_sizes[-1] >= committed


async def test_a_failed_commit_is_rolled_back_and_answers_nobody(
    opened: Callable[..., Any],
) -> None:
    log, writer = await opened(synchronous="full")
    conn = writer.conn
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (p INTEGER REFERENCES parent DEFERRABLE INITIALLY DEFERRED)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO child VALUES (1)")  # no parent 1: the COMMIT itself refuses
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    with pytest.raises(sqlite3.IntegrityError):
        log.commit(conn, [future], ["answer"])
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
    await asyncio.sleep(0.05)
    assert not future.done()


async def test_a_crash_after_the_commit_leaves_it_standing_and_answered(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, writer = await opened(synchronous="full")

    def crashing(conn: sqlite3.Connection) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(log, "_restart_if_long", crashing)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [future], ["answer"])
    assert await asyncio.wait_for(future, 5) == "answer"  # the commit stands, and was synced


async def test_the_log_thread_outlives_an_error_that_escapes_a_sync(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer handed to a loop that has closed, say: the thread goes on with the next."""
    log, writer = await opened(synchronous="full")
    real_sync = log._sync_and_answer
    escaped: list[bool] = []

    def escaping_once(*handed: Any) -> None:
        if not escaped:
            escaped.append(True)
            raise RuntimeError("Event loop is closed")
        real_sync(*handed)

    monkeypatch.setattr(log, "_sync_and_answer", escaping_once)
    lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [lost], ["lost"])
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [future], ["answer"])
    assert await asyncio.wait_for(future, 5) == "answer"
    assert escaped
    assert not lost.done()  # nobody could be told of the first


async def test_a_log_stopped_and_started_again_commits_and_answers(
    opened: Callable[..., Any],
) -> None:
    log, writer = await opened(synchronous="full")
    writer.commit_rows(1)
    await log.stop()
    await log.start()
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [future], ["again"])
    assert await asyncio.wait_for(future, 5) == "again"


async def test_a_failed_sync_answers_with_an_error(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = await opened(synchronous="full")

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    real_fdatasync = os.fdatasync
    monkeypatch.setattr(wal_module.os, "fdatasync", failing)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    writer.commit_rows(1, [future], ["answer"])
    with pytest.raises(StoreError, match="syncing the log failed"):
        await asyncio.wait_for(future, 5)
    # Whatever follows the lost pages in the log is lost with them: nothing is answered again.
    monkeypatch.setattr(wal_module.os, "fdatasync", real_fdatasync)
    later: asyncio.Future[Any] = loop.create_future()
    writer.commit_rows(1, [later], ["answer"])
    with pytest.raises(StoreError, match="syncing the log failed"):
        await asyncio.wait_for(later, 5)


async def test_stopping_answers_what_was_committed_but_not_yet_synced(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, writer = await opened(synchronous="full")
    syncs = HeldSyncs(monkeypatch)
    futures: list[asyncio.Future[Any]] = []
    for n in range(3):
        if n == 2:
            await asyncio.wait_for(futures[1], 5)  # synced: the next sync is the last one's
            syncs.hold()  # the last one is committed, and its sync waits
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.commit_rows(1, [future], [n])
        futures.append(future)
    stopping = asyncio.ensure_future(log.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    assert not futures[2].done()
    syncs.release()
    await asyncio.wait_for(stopping, 5)
    assert [f.result() for f in futures] == [0, 1, 2]


async def test_without_full_sync_answers_come_without_a_sync(
    opened: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = await opened(synchronous="normal")
    synced: list[int] = []
    monkeypatch.setattr(wal_module.os, "fdatasync", synced.append)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    writer.commit_rows(1, [future], ["answer"])
    assert await asyncio.wait_for(future, 5) == "answer"
    assert synced == []


async def test_the_checkpointer_copies_the_log_and_commits_never_do(
    opened: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, writer = await opened(synchronous="full", checkpoint_every_s=0.01)
    assert writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    release = threading.Event()
    checkpoint = log._checkpoint

    def held_checkpoint() -> None:
        assert release.wait(5)
        checkpoint()

    monkeypatch.setattr(log, "_checkpoint", held_checkpoint)
    database = tmp_path / "w.db"
    before = database.stat().st_size
    for _ in range(5):
        writer.commit_rows(200)
        await asyncio.sleep(0.02)  # the checkpoint task starts, and is held
    assert database.stat().st_size == before  # the commits wrote the log alone
    release.set()
    for _ in range(200):
        if database.stat().st_size > before + 5 * 200 * len(ROW):
            break
        await asyncio.sleep(0.02)
    assert database.stat().st_size > before + 5 * 200 * len(ROW)


async def test_a_log_past_its_limit_is_restarted_after_a_commit(
    opened: Callable[..., Any], tmp_path: Path
) -> None:
    limit = 256 * 1024
    _, writer = await opened(synchronous="full", restart_bytes=limit, checkpoint_every_s=3600)
    wal = tmp_path / "w.db-wal"
    per_commit = 50 * 4200  # 50 rows of 1 KB: about 50 pages of 4 KB, each with its header
    sizes = []
    for _ in range(40):  # about eight times the limit; the checkpointer gets no turn meanwhile
        writer.commit_rows(50)
        sizes.append(wal.stat().st_size)
    assert max(sizes) <= limit + 2 * per_commit
    assert (tmp_path / "w.db").stat().st_size > 30 * 50 * len(ROW)  # copied by the restarts


async def test_the_store_answers_a_write_only_after_a_sync_of_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def recorded(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(fd)

    monkeypatch.setattr(wal_module.os, "fdatasync", recorded)
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        synced.clear()
        sealed = SealedToken("k", bytes(60))
        wait = NewWait("acme", "k-1", "digest-1", sealed, 2e9, None, None)
        registration = await store.register_wait(wait, 1e9)
        assert registration.outcome == "created"
        assert synced  # between the call and its answer
    finally:
        await store.close()


async def test_closing_answers_every_write_before_it_and_refuses_the_ones_after(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    sealed = SealedToken("k", bytes(60))

    def register(n: int) -> Any:
        wait = NewWait("acme", f"k-{n}", f"digest-{n}", sealed, 2e9, None, None)
        return asyncio.ensure_future(store.register_wait(wait, 1e9))

    before = [register(n) for n in range(5)]
    await asyncio.sleep(0)  # queued
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() has queued its last write
    after = register(99)
    await asyncio.wait_for(closing, 5)
    assert [(await r).outcome for r in before] == ["created"] * 5
    with pytest.raises(StoreError, match="not open"):
        await asyncio.wait_for(after, 1)


async def test_a_restart_that_meets_a_reader_does_not_hold_the_writer(
    opened: Callable[..., Any], tmp_path: Path
) -> None:
    limit = 256 * 1024
    _, writer = await opened(synchronous="full", restart_bytes=limit, checkpoint_every_s=3600)
    reader = connector(tmp_path / "w.db")()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot of the log
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(10):  # over twice the limit: each commit past it tries a restart
            writer.commit_rows(50)
        assert loop.time() - started < 2  # not a busy timeout (5 s) per try
        assert (tmp_path / "w.db-wal").stat().st_size > limit  # so restarts were tried
        assert writer.conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        reader.execute("COMMIT")
        writer.commit_rows(50)  # the reader is gone: this commit restarts the log
        writer.commit_rows(50)  # written from the log's start
        (_, frames, _) = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames < 100  # this commit's (about 15), not the 180 or so written before
    finally:
        reader.close()

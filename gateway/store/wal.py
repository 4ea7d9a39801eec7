"""The SQLite write-ahead log, kept by the store rather than inside ``COMMIT``.

Left to itself, SQLite syncs the log inside every ``COMMIT`` (``synchronous = full``) and copies
it into the database file inside every ``COMMIT`` that takes it past 1000 pages (auto-
checkpoint). The single writer waits for both, and in a busy gateway that wait, tens of
milliseconds a commit, was what the intake waited for. Here:

- The writer's connection runs at ``synchronous = normal``, which in WAL mode is exactly
  ``full`` without the sync of the log after each commit. The writer runs its ``COMMIT``
  itself, on the loop (it writes the batch's pages into the log, without the GIL; the first
  commit after the log was reset also syncs the log's new header), hands the
  ``fdatasync`` of the log to the log's thread and goes on with its next transaction at once;
  the thread gives the transaction's callers their answers only after that sync. Durable
  before acknowledged, as before. One hand-over a commit, each way: each is a wait for the GIL
  held by the busy loop. A thread that ran the ``COMMIT`` too took the GIL three times more,
  and the loop sat idle while the writer waited for it; now the loop writes the pages itself
  instead, which, measured side by side, came out about even in events per second. The log
  stays open for the store's lifetime, so a write-back error is reported to this descriptor
  even if another one (a checkpoint's) saw it first; after a failed sync the log refuses every
  later answer, because what follows the lost pages in the log is lost with them.
- Other connections may read a commit up to one sync before it is durable. Whatever acts
  outside the store on what it reads (the poller cancelling a job), or shows it to a client
  (``GET /v1/waits/{key}``), reads through the writer, whose answers wait for the sync.
- A checkpointer copies the log into the database file from a connection and a thread of its
  own (``PASSIVE``: it never blocks the writer). SQLite restarts the log from its beginning
  when a transaction begins with everything copied; under writes without a pause that moment
  may not come, so once the log file passes ``restart_bytes`` each of the writer's commits is
  followed by a ``RESTART`` checkpoint until one succeeds: that bounds the log unless a reader
  holds an old snapshot at every commit.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from gateway.errors import StoreError

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 0.1
RESTART_BYTES = 64 * 1024 * 1024
_Sync = tuple[asyncio.AbstractEventLoop, list["asyncio.Future[Any]"], list[Any]]


class WriteAheadLog:
    """Commits, syncs and checkpoints the log of the database at ``path``: ``start()``,
    ``stop()``."""

    def __init__(
        self,
        path: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        synchronous: str,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S,
        restart_bytes: int = RESTART_BYTES,
    ) -> None:
        self._file = f"{path}-wal"
        self._connect = connect
        self._sync_commits = synchronous == "full"
        self._synchronous = "normal" if self._sync_commits else synchronous
        self._checkpoint_every_s = checkpoint_every_s
        self._restart_bytes = restart_bytes
        self._syncer: tuple[threading.Thread, queue.SimpleQueue[_Sync | None]] | None = None
        self._to_checkpoint = asyncio.Event()
        self._checkpoint_thread: ThreadPoolExecutor | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._fd: int | None = None
        self.failure: StoreError | None = None
        """Set by a failed sync: from then on nothing is acknowledged (restart the gateway)."""

    async def start(self) -> None:
        """Call once the log exists (a connection has read the database)."""
        self._fd = os.open(self._file, os.O_RDONLY)
        self._checkpointer = self._connect()
        syncs: queue.SimpleQueue[_Sync | None] = queue.SimpleQueue()  # this start's own
        syncer = threading.Thread(
            target=self._sync_forever, args=(syncs,), name="sqlite-sync", daemon=True
        )
        syncer.start()
        self._syncer = syncer, syncs
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ckpt")
        self._checkpoint_thread = thread
        self._checkpointing = asyncio.create_task(self._checkpoint_loop(thread), name="sqlite-ckpt")

    async def stop(self) -> None:
        """Call once the writer has stopped: commits handed over before are synced and
        answered first."""
        if self._syncer is not None:
            (syncer, syncs), self._syncer = self._syncer, None
            syncs.put(None)  # after every commit handed over
            await asyncio.to_thread(syncer.join)  # its answers are on the loop by then
        if self._checkpointing is not None:
            checkpointing, self._checkpointing = self._checkpointing, None
            checkpointing.cancel()
            await asyncio.gather(checkpointing, return_exceptions=True)
        if self._checkpoint_thread is not None:  # a checkpoint under way finishes first
            thread, self._checkpoint_thread = self._checkpoint_thread, None
            await asyncio.to_thread(thread.shutdown)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def configure(self, conn: sqlite3.Connection) -> None:
        """Every connection's settings: syncs and checkpoints are this object's to make, and a
        log that was restarted is cut back to ``restart_bytes``."""
        conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={self._restart_bytes}")

    # -- the writer's side -----------------------------------------------------------------

    def commit(
        self, conn: sqlite3.Connection, futures: list[asyncio.Future[Any]], results: list[Any]
    ) -> None:
        """``COMMIT`` the transaction open on ``conn``, restart a log that grew too long, and
        hand the sync to the log's thread: ``futures`` get their ``results`` once it is durable.
        Returns as soon as the ``COMMIT`` is done, so that the writer goes on. A failed
        ``COMMIT`` is rolled back and raised, and answers nobody."""
        if self._syncer is None:
            raise StoreError("the log is not started")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:  # SQLite may have rolled it back already (disk full)
                conn.execute("ROLLBACK")
            raise
        try:
            self._restart_if_long(conn)
        except Exception:  # the commit stands whatever the restart did
            log.exception("sqlite.log_restart_crashed")
        self._to_checkpoint.set()
        if not self._sync_commits:
            self._answer(futures, results, None)
            return
        _, syncs = self._syncer
        syncs.put((asyncio.get_running_loop(), futures, results))  # answered on the loop

    @property
    def syncs_commits(self) -> bool:
        return self._sync_commits

    def sync(self) -> None:
        """``fdatasync`` the log: what ``full`` adds to ``normal``. (SQLite recreates the log
        only when its last connection closes, and the store holds three open.)"""
        if self._fd is None:  # before start(): the migrations, on a log opened for the purpose
            fd = os.open(self._file, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            return
        os.fdatasync(self._fd)

    # -- the log's thread ------------------------------------------------------------------

    def _sync_forever(self, syncs: queue.SimpleQueue[_Sync | None]) -> None:
        """The thread's loop: a queue the thread blocks on without the GIL, and nothing else,
        so that it takes the GIL from the busy event loop as seldom as it can."""
        while (handed := syncs.get()) is not None:
            try:
                self._sync_and_answer(*handed)
            except Exception:  # the loop closed under it, say; the next sync is still run
                log.exception("sqlite.sync_unanswered")

    def _sync_and_answer(
        self,
        loop: asyncio.AbstractEventLoop,
        futures: list[asyncio.Future[Any]],
        results: list[Any],
    ) -> None:
        """Sync the log, then answer on the loop, with the error if the sync failed."""
        error: Exception | None = None
        try:
            self.sync()
        except Exception as exc:  # committed, maybe not durable
            error = exc
        loop.call_soon_threadsafe(self._answer, futures, results, error)

    def _restart_if_long(self, conn: sqlite3.Connection) -> None:
        """Right after ``COMMIT``: restart a log that grew too long. It never waits for a lock:
        a reader on an older snapshot would hold the writer, and the loop with it, up to the
        connection's busy timeout (seconds); the next commit tries again instead. What it
        does wait for is copying what the checkpointer left, with a sync of the log before and
        of the database file after: once per ``restart_bytes`` of log. (A running checkpoint
        makes it give up at once anyway; what it copies before giving up stays copied.)"""
        if self._fd is None:
            return
        try:
            size = os.fstat(self._fd).st_size
        except OSError:  # nothing known: the next commit looks again
            return
        if size <= self._restart_bytes:
            return
        try:
            (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
            conn.execute("PRAGMA busy_timeout=0")
            try:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
        except sqlite3.Error as exc:  # the commit stands; the next one tries again
            log.warning("sqlite.log_restart_failed", bytes=size, error=str(exc))
            return
        if busy:  # readers or the checkpointer held on: the next commit tries again
            log.debug("sqlite.log_restart_busy", bytes=size, frames=frames, copied=copied)
        else:
            log.info("sqlite.log_restarted", bytes=size, frames=frames)

    def _answer(
        self, futures: list[asyncio.Future[Any]], results: list[Any], error: Exception | None
    ) -> None:
        """On the loop, once the commit was synced (or its sync failed, or there is none)."""
        if error is not None and self.failure is None:  # committed, maybe not durable
            log.critical("sqlite.sync_failed", error=str(error))
            self.failure = StoreError(f"sqlite: syncing the log failed: {error}")
        settle_all(futures, results if self.failure is None else [self.failure] * len(futures))

    # -- background ------------------------------------------------------------------------

    async def _checkpoint_loop(self, thread: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._to_checkpoint.wait()
            self._to_checkpoint.clear()
            try:
                await loop.run_in_executor(thread, self._checkpoint)
            except sqlite3.Error as exc:  # the next round copies what this one left
                log.warning("sqlite.checkpoint_failed", error=str(exc))
            await asyncio.sleep(self._checkpoint_every_s)

    def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def settle_all(futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
    """Answer each caller with its result, or raise its exception in it."""
    for future, result in zip(futures, results, strict=True):
        if future.done():  # the caller went away; the work is committed all the same
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

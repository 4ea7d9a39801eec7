"""The SQLite write-ahead log, kept by the store rather than inside ``COMMIT``.

Left to itself, SQLite syncs the log inside every ``COMMIT`` (``synchronous = full``) and copies
it into the database file inside every ``COMMIT`` that takes it past 1000 pages (auto-
checkpoint). The single writer waits for both, and in a busy gateway that wait, tens of
milliseconds a commit, was what the intake waited for. Here:

- The writer's connection runs at ``synchronous = normal``, which in WAL mode is exactly
  ``full`` without the sync of the log after each commit. ``committed`` takes the answers of a
  committed transaction and gives them out only after an ``fdatasync`` of the log that began
  after that commit; one sync covers every transaction committed before it, while the writer
  is already running the next one. Durable before acknowledged, as before. The log stays open
  for the store's lifetime, so a write-back error is reported to this descriptor even if
  another one (a checkpoint's) saw it first; after a failed sync the log refuses every later
  answer, because what follows the lost pages in the log is lost with them.
- Other connections may read a commit up to one sync before it is durable. Whatever acts
  outside the store on what it reads (the poller cancelling a job) reads through the writer,
  whose answers wait for the sync.
- A checkpointer copies the log into the database file from a connection and a thread of its
  own (``PASSIVE``: it never blocks the writer). SQLite restarts the log from its beginning
  when a transaction begins with everything copied; under writes without a pause that moment
  may not come, so once the log file passes ``restart_bytes`` the writer's commit is followed
  by a ``RESTART`` checkpoint, in the commit thread, which bounds the log.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from gateway.errors import StoreError

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 0.1
RESTART_BYTES = 64 * 1024 * 1024


class WriteAheadLog:
    """Syncs and checkpoints the log of the database at ``path``: ``start()``, ``stop()``."""

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
        self._unsynced: list[tuple[list[asyncio.Future[Any]], list[Any]]] = []
        self._to_sync = asyncio.Event()
        self._to_checkpoint = asyncio.Event()
        self._threads: list[ThreadPoolExecutor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpointer: sqlite3.Connection | None = None
        self._fd: int | None = None
        self.failure: StoreError | None = None
        """Set by a failed sync: from then on nothing is acknowledged (restart the gateway)."""

    async def start(self) -> None:
        """Call once the log exists (a connection has read the database)."""
        self._fd = os.open(self._file, os.O_RDONLY)
        self._checkpointer = self._connect()
        sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-sync")
        checkpoint_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ckpt")
        self._threads = [sync_thread, checkpoint_thread]
        self._tasks = [
            asyncio.create_task(self._sync_loop(sync_thread), name="sqlite-sync"),
            asyncio.create_task(self._checkpoint_loop(checkpoint_thread), name="sqlite-ckpt"),
        ]

    async def stop(self) -> None:
        """Call once every answer was given (the store's last write settled)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsynced:  # committed by a write queued after the last one: answer it too
            await self._sync_and_answer(self._threads[0])
        threads, self._threads = self._threads, []
        for thread in threads:  # a checkpoint under way finishes before its connection closes
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

    def committed(self, futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
        """A transaction committed: answer its callers once it is durable."""
        if self.failure is not None:
            settle_all(futures, [self.failure] * len(futures))
        elif self._sync_commits:
            self._unsynced.append((futures, results))
            self._to_sync.set()
        else:
            settle_all(futures, results)
        self._to_checkpoint.set()

    def after_commit(self, conn: sqlite3.Connection) -> None:
        """In the commit thread, right after ``COMMIT``: restart a log that grew too long."""
        if self._fd is None:
            return
        try:
            size = os.fstat(self._fd).st_size
        except OSError:  # nothing known: the next commit looks again
            return
        if size <= self._restart_bytes:
            return
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:  # the commit stands; the next one tries again
            log.warning("sqlite.log_restart_failed", bytes=size, error=str(exc))
            return
        if busy:  # readers or the checkpointer held on: the next commit tries again
            log.debug("sqlite.log_restart_busy", bytes=size, frames=frames, copied=copied)
        else:
            log.info("sqlite.log_restarted", bytes=size, frames=frames)

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

    # -- background ------------------------------------------------------------------------

    async def _sync_loop(self, thread: ThreadPoolExecutor) -> None:
        while True:
            await self._to_sync.wait()
            self._to_sync.clear()
            await self._sync_and_answer(thread)

    async def _sync_and_answer(self, thread: ThreadPoolExecutor) -> None:
        batches, self._unsynced = self._unsynced, []
        try:
            if self.failure is None:
                await asyncio.get_running_loop().run_in_executor(thread, self.sync)
        except OSError as exc:  # committed but maybe not durable: never acknowledged
            log.critical("sqlite.sync_failed", error=str(exc))
            self.failure = StoreError(f"sqlite: syncing the log failed: {exc}")
        except asyncio.CancelledError:
            self._unsynced = batches + self._unsynced  # stop() answers them
            raise
        for futures, results in batches:
            settle_all(futures, results if self.failure is None else [self.failure] * len(futures))

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

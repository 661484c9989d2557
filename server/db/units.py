"""Running write units: a change written once, sans-io, and run by the driver of each backend.

A unit is a generator that yields statements, `(sql, params)` with `:name` parameters (as
`Db.raw_fetch` takes them), receives each statement's rows (a list of tuples), and returns its
result (`return value` ends it). It does no I/O of its own, so the same unit runs

- on SQLite, `WriteBatcher` drains every unit queued meanwhile and runs them in one transaction
  on a pooled connection: `BEGIN IMMEDIATE`, for each unit a `SAVEPOINT` ... `RELEASE` (a unit
  that raises is rolled back to its savepoint alone and its caller gets the exception),
  `COMMIT`. A unit handed over as its recipe (a function that makes it, `Recipe`) can be made
  again, so a batch of recipes first runs without the savepoints, and only if one of its units
  raises is it rolled back and run again from new units, each in its savepoint. Writes are serialized on SQLite anyway (one writer per file, taking turns through
  `Db.writing()` in this process); what a change cost was the trips to the connection's thread
  and the event-loop rounds between them while holding the turn (about ten per change), so a
  batch pays them once for up to MAX_BATCH changes (group commit). The batch runs right on the
  event loop's thread when the write lock is free at once (`BEGIN IMMEDIATE` with no busy wait,
  which is the rule: this process's writers take turns before it): a batch of a few dozen units
  takes a millisecond or two, less than handing it to the connection's thread costs (a thread
  wake-up, a loop wake-up, and the GIL changing hands at every SQLite call while the loop's thread
  wants it back: measured, the same batches took three times as long there). When another
  process holds the write lock, the batch goes to the connection's thread in one trip and waits
  there (the busy timeout), never on the loop;
- on PostgreSQL, one unit per transaction on one pooled connection, statement by statement
  (`drive_async`), concurrently with the others (row locks and conditional UPDATEs keep
  concurrent changes correct there);
- inside a transaction the caller already holds (`Db.run_inline`), statement by statement.

A unit's statements see the earlier ones of the same batch: one connection, one transaction.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from typing import Any, Awaitable, Callable, Generator, TypeVar

from server.db.databases_compat import run_on_connection_thread, sqlite_connection

logger = logging.getLogger(__name__)

T = TypeVar("T")
Statement = tuple[str, dict]
Unit = Generator[Statement, list[tuple], T]
Recipe = Callable[[], Unit]  # makes the same unit again: see WriteBatcher._commit

MAX_BATCH = 256  # units per SQLite transaction


def drive_sqlite(conn: sqlite3.Connection, unit: Unit[T]) -> T:
    """Run a unit on a sqlite3 connection (on its thread), statement by statement."""
    try:
        statement = unit.send(None)
        while True:
            sql, params = statement
            try:
                rows = conn.execute(sql, params).fetchall()
            except BaseException:
                unit.close()
                raise
            statement = unit.send(rows)
    except StopIteration as stop:
        return stop.value


async def drive_async(fetch: Callable[[str, dict], Awaitable[list[tuple]]], unit: Unit[T]) -> T:
    """Run a unit with an async `fetch(sql, params) -> rows`, statement by statement."""
    try:
        statement = unit.send(None)
        while True:
            try:
                rows = await fetch(*statement)
            except BaseException:
                unit.close()
                raise
            statement = unit.send(rows)
    except StopIteration as stop:
        return stop.value


def begin_now(conn: sqlite3.Connection, busy_timeout_ms: int) -> bool:
    """`BEGIN IMMEDIATE` unless another connection holds the write lock (then False, at once)."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError:  # busy
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


class UnitFailed(Exception):
    """A unit of a batch run without savepoints raised: the batch was rolled back whole."""


def is_recipe(unit: Unit | Recipe) -> bool:
    return callable(unit) and not isinstance(unit, Generator)


def make(unit: Unit | Recipe) -> Unit:
    """The unit itself, or a new one from its recipe."""
    return unit() if is_recipe(unit) else unit


def run_batch(conn: sqlite3.Connection, units: list[Unit], begun: bool = False,
              savepoints: bool = True) -> list[tuple[bool, Any]]:
    """One SQLite transaction of many units, each in its own savepoint.

    Returns (True, result) or (False, exception) per unit; raises (after rolling back everything)
    when the transaction itself fails. Without savepoints a unit that raises rolls everything
    back and raises UnitFailed (the caller runs the batch again, with them)."""
    outcomes: list[tuple[bool, Any]] = []
    if not begun:
        conn.execute("BEGIN IMMEDIATE")
    try:
        for unit in units:
            if savepoints:
                conn.execute("SAVEPOINT unit")
            try:
                value = drive_sqlite(conn, unit)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back itself (a full disk, an I/O error):
                    # every unit of the batch failed with this error
                    raise
                if not savepoints:
                    raise UnitFailed() from exc
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((False, exc))
            else:
                if savepoints:
                    conn.execute("RELEASE unit")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


class WriteBatcher:
    """Group commit on SQLite: one task runs every queued unit, up to MAX_BATCH per transaction.

    `submit` returns a future resolved after the unit's batch committed (or with its exception).
    The batch runs on the batcher's own task: a caller that is cancelled does not stop it.
    """

    on_loop = True  # run a batch on the loop's thread when the write lock is free at once

    def __init__(self, writing: Callable[[], Any], pool, max_batch: int = MAX_BATCH):
        self._writing = writing  # Db.writing: this process's turn to write to SQLite
        self._pool = pool  # ReusingSQLitePool
        self.max_batch = max_batch
        self._queue: collections.deque[tuple[Unit | Recipe, asyncio.Future]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0  # committed transactions (for tests and benchmarks)
        self.units = 0
        self.on_loop_batches = 0
        self.batches_again = 0  # batches without savepoints that a failing unit made run again

    def __repr__(self) -> str:
        return f"WriteBatcher(queued={len(self._queue)}, batches={self.batches}, units={self.units})"

    def submit(self, unit: Unit | Recipe) -> asyncio.Future:
        if self._closing:
            raise RuntimeError("the database is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((unit, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sqlite-write-batcher")
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            try:
                outcomes = await self._commit([unit for unit, _ in batch])
            except asyncio.CancelledError:
                error = RuntimeError("the database was closed before this write ran")
                for _, future in [*batch, *self._queue]:
                    if not future.done():
                        future.set_exception(error)
                raise
            except BaseException as exc:  # the transaction failed: every unit of it did
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.units += len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes):
                if not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

    async def _commit(self, units: list[Unit | Recipe]) -> list[tuple[bool, Any]]:
        """Run a batch. When every unit came as a recipe, first without a savepoint per unit (a
        SAVEPOINT and a RELEASE are about 12% of a unit's time); should one of them raise, the
        batch is rolled back and run again from new units, each in its savepoint."""
        async with self._writing():
            connection = await self._pool.acquire()
            try:
                if all(is_recipe(unit) for unit in units):
                    try:
                        return await self._run_batch(connection, [unit() for unit in units], savepoints=False)
                    except UnitFailed:
                        self.batches_again += 1
                return await self._run_batch(connection, [make(unit) for unit in units], savepoints=True)
            finally:
                await self._pool.release(connection)

    async def _run_batch(self, connection, units: list[Unit], savepoints: bool) -> list[tuple[bool, Any]]:
        conn = sqlite_connection(connection)
        if self.on_loop and begin_now(conn, self._pool.busy_timeout_ms):
            self.on_loop_batches += 1
            return run_batch(conn, units, begun=True, savepoints=savepoints)
        return await run_on_connection_thread(connection, run_batch, units, False, savepoints)

    async def close(self) -> None:
        """Run what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None


class WalCheckpointer:
    """Checkpoints SQLite's WAL on a worker thread, so that no commit on the loop's thread does,
    and keeps the WAL from growing without end.

    SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages:
    copying those pages into the database file and two fsyncs, on the event loop's thread when
    the batch ran there (measured, about half of a commit's time under load). The pool's
    connections turn it off (`PRAGMA wal_autocheckpoint=0`) and `wrote()`, called after each
    write turn, starts a checkpoint on a connection of its own on a worker thread, at most every
    INTERVAL seconds and one at a time (SQLite releases the GIL while it works).

    A PASSIVE checkpoint takes no write lock and waits for nobody, but under a steady stream of
    commits it never catches up with the last frame, and SQLite starts the WAL over only after a
    checkpoint that did: the file grew by 1.4 GB in 15 s of agent reports, each commit appending
    to a new part of it and each page read searching a wal-index that grew with it. So once the WAL
    holds RESTART_FRAMES pages, a few more PASSIVE passes copy what came meanwhile (less each time),
    then one more runs with this process's write turn held (`writing`): it has only a batch or two
    to copy, and the writes queued during it (about 10 ms: mostly the fsyncs) commit together
    after it, into a WAL that starts over. A RESTART checkpoint would also wait for every reader
    of the old WAL, with SQLite's busy handler sleeping 1, 2, 5, 10... ms between tries: 7 to
    90 ms measured, all of it with writers waiting.
    """

    INTERVAL = 0.2  # seconds between the starts of two checkpoints
    RESTART_FRAMES = 8000  # WAL pages (about 32 MB) past which a checkpoint starts the WAL over
    CATCH_UP_PASSES = 3  # PASSIVE passes at most before the restart, each copying what came meanwhile
    LEFT_FOR_RESTART = 200  # pages the restart may have left to copy, with writers waiting

    def __init__(self, path: str, writing: Callable[[], Any]):
        self._path = path
        self._writing = writing  # Db.writing: this process's turn to write to SQLite
        self._conn: sqlite3.Connection | None = None
        self._running: asyncio.Task | None = None
        self._last = float("-inf")
        self._closed = False
        self._wal_frames = 0  # pages in the WAL at the last checkpoint
        self.checkpoints = 0
        self.restarts = 0

    def wrote(self) -> None:
        if self._running is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last < self.INTERVAL:
            return
        self._last = now
        self._running = loop.create_task(self._run(), name="sqlite-wal-checkpoint")
        self._running.add_done_callback(self._done)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # the bulk of the copying without the write turn, writers going on meanwhile
        wal_frames, copied = await loop.run_in_executor(None, self._checkpoint)
        if wal_frames < self._wal_frames:
            self.restarts += 1  # the WAL started over since the last checkpoint
        self._wal_frames = wal_frames
        if wal_frames < self.RESTART_FRAMES:
            return
        # each further pass copies what was committed during the one before: fewer pages each time
        for _ in range(self.CATCH_UP_PASSES):
            if wal_frames - copied <= self.LEFT_FOR_RESTART:
                break
            wal_frames, copied = await loop.run_in_executor(None, self._checkpoint)
        # then the rest with the write turn held: nothing is committed meanwhile, so this one
        # copies every page, and the next commit starts the WAL over (unless a read that began
        # before it still uses the WAL; then the next such checkpoint does)
        async with self._writing():
            await loop.run_in_executor(None, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int]:  # on a worker thread, one at a time
        """A PASSIVE checkpoint: (pages in the WAL, pages of it copied into the database)."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        _busy, wal_frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return wal_frames, copied

    def _done(self, task: asyncio.Task) -> None:
        self._running = None
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.warning("WAL checkpoint failed: %s", task.exception())
        else:
            self.checkpoints += 1

    async def close(self) -> None:
        self._closed = True
        if self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

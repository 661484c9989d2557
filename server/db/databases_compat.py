"""Where Job Monitor reaches into `databases` (0.9.0) and aiosqlite internals: nowhere else.

Checked against databases 0.9.0 and aiosqlite 0.22.1 (pyproject pins those versions);
tests/test_compat.py fails when an installed version's source of a method relied on here differs
from the one recorded in CHECKED_SOURCES, so an upgrade is a visible decision: read the new
method, adapt this module, record the new hash.

- `ReusingSQLitePool` replaces `SQLiteBackend._pool`: `databases` opens a new aiosqlite
  connection (and thread) per use, which costs milliseconds per query.
- `ImmediateConnection` turns BEGIN into BEGIN IMMEDIATE (see its docstring).
- `run_on_connection_thread` runs a callable on an aiosqlite connection's thread with its
  sqlite3 connection (`Connection._execute`, `_connection`): a whole batch of write units in one
  trip (server/db/units.py); `sqlite_connection` gives the sqlite3 connection itself, for a batch
  run on the loop's thread while the connection's own thread is idle.
- `postgres_pool_usage` reads the asyncpg pool behind a PostgreSQL `Database` (`_backend._pool`)
  for the node's system metrics.
- `release_task_connection` frees the task's connection when BEGIN/COMMIT/ROLLBACK failed or was
  cancelled mid-way (`Transaction.start`, `commit` and `rollback` release it only after their
  statement succeeded): `databases` would otherwise never release it, and after a database outage
  the pool would have lost a connection per failed transaction; `connection_depth` says whether
  the task still holds one.
"""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite
from databases import Database

# sha256 of inspect.getsource(...) of each method whose internals this module relies on
CHECKED_SOURCES = {
    # install_sqlite_pool: the backend's `_pool`, used by connect/disconnect and each connection
    "databases.backends.sqlite.SQLiteBackend.connect": "5c2597f97dbfcfe5af86375b8ee8b72420321be811bb13810579161f29c82d63",
    "databases.backends.sqlite.SQLiteBackend.disconnect":
        "94c89f4c88e4ba698d5ea4743e2edbb8f18f8c6d36f38de929e4aba61a47a11c",
    "databases.backends.sqlite.SQLiteConnection.acquire":
        "b08c4922c17368418ddd49afc4477ad87554edda48af24198b0e6a3cab5c48bc",
    "databases.backends.sqlite.SQLiteConnection.release":
        "30eb8066ac9a5ead25075786c574667bdbb2c93f81478db601f83525ac1ca014",
    # release_task_connection, connection_depth: `_connection`, `_connection_counter` of these
    "databases.core.Database.connection": "3662f1df584d7ab0b08bdc183741a2369f1b6c4b52b0d7d03565a79a3df54990",
    "databases.core.Connection.__aexit__": "f5b148500f00adf79097a601e9e5b07449acb32dddac5028e351a990f211fe51",
    # postgres_pool_usage: the asyncpg pool `connect` keeps in `_pool`
    "databases.backends.postgres.PostgresBackend.connect":
        "74970425318241d272882d8215a1aa1321ced99637447f2c5af88d8c652a9dd8",
    # ... which these keep (counted) when their statement raises
    "databases.core.Transaction.start": "b1c12105a24ee0914121e38614c9f5c58a3c36cc554e90065049652181676a55",
    "databases.core.Transaction.commit": "ed2bff87a0aa9e5e37c11b31b230aa9ab0aa82c3d0bfa956d981f40c81707705",
    "databases.core.Transaction.rollback": "29c14b8bd30b5044e0f9c69bc00c42f0e37c0b581fde12e63dac83abd47d4a82",
    # ImmediateConnection overrides execute and is built like its parent
    "aiosqlite.core.Connection.execute": "da3192696f31097700d37c73e2e21506b7eb2342db76991b0179e8b22d1f360c",
    "aiosqlite.core.Connection.__init__": "3aed416ac99323f1df06749851cebf16d34877b4bd38dc76f1f730e5a0809eac",
    # run_on_connection_thread: `_execute` queues a callable for the thread, which runs it and
    # resolves the future with its result or exception; `_connection` is the sqlite3 connection
    "aiosqlite.core.Connection._execute": "11f83d6bbbe803e390def4a083f1f5797f96a66a3a916c90f7411053ca314f21",
    "aiosqlite.core._connection_worker_thread": "17e364bc23e051c3b645d00675390cffd7511c64a5f2f44d1f6ccc980461032b",
}


class ImmediateConnection(aiosqlite.Connection):
    """An aiosqlite connection whose transactions take the write lock at BEGIN.

    A deferred BEGIN that reads first and writes later fails with SQLITE_BUSY (not waiting on the
    busy timeout) when another writer committed in between; BEGIN IMMEDIATE waits instead.
    """

    def execute(self, sql, parameters=None):  # type: ignore[override]
        if sql == "BEGIN":
            sql = "BEGIN IMMEDIATE"
        return super().execute(sql, parameters)


class ReusingSQLitePool:
    """Keeps open SQLite connections for reuse: opening one per query costs milliseconds."""

    _memref = None  # databases' SQLiteBackend.disconnect reads it (for in-memory databases)

    def __init__(self, path: str, max_idle: int = 16, busy_timeout: float = 30.0):
        self._path = path
        self._idle: list[aiosqlite.Connection] = []
        self._max_idle = max_idle
        self._busy_timeout = busy_timeout
        self.busy_timeout_ms = int(busy_timeout * 1000)
        self.in_use = 0  # connections handed out and not yet released (the node's system metrics)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # WalCheckpointer (server/db/units.py) checkpoints on a worker thread instead of a COMMIT
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # the statement journal of each write unit's SAVEPOINT (the original of every page the unit
        # changes) in memory: past 64 KB SQLite spills it to a temporary file, a syscall per page
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    @property
    def idle(self) -> int:
        """Open connections waiting for reuse."""
        return len(self._idle)

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = ImmediateConnection(self._connect, iter_chunk_size=256)
            await connection.__aenter__()
        self.in_use += 1
        return connection

    async def release(self, connection: aiosqlite.Connection) -> None:
        self.in_use -= 1
        if connection.in_transaction:
            await connection.rollback()
        if len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            await connection.close()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def install_sqlite_pool(database: Database, pool: ReusingSQLitePool) -> None:
    """Make a SQLite `Database` take its connections from `pool` (before `connect()`)."""
    database._backend._pool = pool  # type: ignore[attr-defined]


def postgres_pool_usage(database: Database) -> tuple[int, int, int]:
    """(connections in use, idle, the pool's maximum) of a connected PostgreSQL `Database`."""
    pool = database._backend._pool  # type: ignore[attr-defined]
    if pool is None:
        return 0, 0, 0
    size, idle = pool.get_size(), pool.get_idle_size()
    return size - idle, idle, pool.get_max_size()


async def run_on_connection_thread(connection: aiosqlite.Connection, fn, *args):
    """`fn(sqlite3_connection, *args)` on the connection's own thread, in one trip; its result.

    The callable runs to its end even when the awaiting task is cancelled."""
    return await connection._execute(_with_connection, connection, fn, args)


def sqlite_connection(connection: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection under an aiosqlite one, to use on this thread while nothing is queued
    for its own (a connection taken from the pool: its thread is idle)."""
    conn = connection._connection
    if conn is None:
        raise ValueError("no active connection")
    return conn


def _with_connection(connection: aiosqlite.Connection, fn, args):
    conn = connection._connection
    if conn is None:
        raise ValueError("no active connection")
    return fn(conn, *args)


def connection_depth(database: Database) -> int:
    """How many nested uses hold this task's `databases` connection (0: it holds none)."""
    return database.connection()._connection_counter


async def release_task_connection(database: Database, is_sqlite: bool) -> None:
    """Free this task's connection after its BEGIN, COMMIT or ROLLBACK failed or was cancelled.

    A cancelled statement still runs on the connection's thread, and a failed one (the database
    went away) left the connection broken, but `databases` then never releases the connection: on
    SQLite it would stay out of the pool holding the write lock (every writer then waits for the
    busy timeout), on PostgreSQL it would leak from the pool (after 20, every query waits forever).
    """
    connection = database.connection()  # this task's, still counted as in use
    if is_sqlite:
        backend = connection._connection
        raw, backend._connection = backend._connection, None
        connection._connection_counter = 0
        database._connection = None
        if raw is not None:
            pool = database._backend._pool  # type: ignore[attr-defined]
            if isinstance(pool, ReusingSQLitePool):
                pool.in_use -= 1  # closed here instead of released to it
            # queued after the statement; closing rolls back what it left open
            await asyncio.shield(asyncio.ensure_future(raw.close()))
    else:
        # asyncpg's pool resets (rolls back) a released connection
        await asyncio.shield(asyncio.ensure_future(connection.__aexit__()))

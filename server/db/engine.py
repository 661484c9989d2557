"""The database connection: a `databases.Database` plus what differs per dialect."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
import sqlite3
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
import sqlalchemy as sa
from databases import Database
from databases.core import DatabaseURL

from server.db.databases_compat import (
    ReusingSQLitePool,
    connection_depth,
    install_sqlite_pool,
    postgres_pool_usage,
    release_task_connection,
)
from server.db.outage import translated
from server.db.units import (
    Recipe,
    Unit,
    WalCheckpointer,
    WriteBatcher,
    drive_async,
    make,
)

# What a unique or foreign-key violation raises: `databases` passes the driver's own exception on
INTEGRITY_ERRORS = (sa.exc.IntegrityError, sqlite3.IntegrityError,
                    asyncpg.exceptions.IntegrityConstraintViolationError)

SQLITE_IDLE_CONNECTIONS = 64
CONNECT_TIMEOUT = 5.0  # seconds to open a PostgreSQL connection before a request answers 503 (the setting's default)


class DatabaseUnavailable(Exception):
    """The database named by JOBMON_DATABASE_URL could not be opened."""


# The task that holds a Db's SQLite write lock (so its own writes inside a transaction go on)
_sqlite_writer: contextvars.ContextVar[asyncio.Task | None] = contextvars.ContextVar("sqlite_writer", default=None)

_WRITE_SQL = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _outages_translated(method):
    """A Db method whose driver errors that mean an outage raise a DatabaseOutage instead
    (server/db/outage.py): the edge answers 503 and background work pauses."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            error = translated(exc)
            if error is exc:
                raise
            raise error from exc

    return wrapper


def _writes(query) -> bool:
    """Whether a statement changes rows (and so needs SQLite's one write lock)."""
    if isinstance(query, sa.TextClause):
        query = query.text
    if isinstance(query, str):
        return _WRITE_SQL.match(query) is not None
    return isinstance(query, sa.sql.dml.UpdateBase)


class Db:
    """The application's database: a `databases.Database` plus what differs per dialect.

    On SQLite, writers in this process take turns through an asyncio lock, first come first
    served. SQLite has one write lock per file, and a writer that finds it taken sleeps and
    polls (the busy timeout): under a steady stream of job transactions a request could poll
    for many seconds, or fail with "database is locked", while others kept winning the lock.
    """

    def __init__(self, url: str, *, connect_timeout: float = CONNECT_TIMEOUT):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("postgresql+asyncpg://"):
            url = "postgresql://" + url[len("postgresql+asyncpg://"):]
        self.database = Database(url, **({} if self.is_sqlite else
                                         # no floor of idle connections: asyncpg would log a traceback
                                         # at every try to restore it while the database is down
                                         {"min_size": 0, "max_size": 20, "reset": _keep_session,
                                          # a database that does not answer fails a request within
                                          # this (503), rather than after asyncpg's default minute
                                          "timeout": connect_timeout}))
        self._sqlite_pool: ReusingSQLitePool | None = None
        self._write_lock = asyncio.Lock()
        self.batcher: WriteBatcher | None = None  # SQLite: group commit of write units
        self._checkpointer: WalCheckpointer | None = None  # SQLite: WAL checkpoints off the loop's thread
        self._point_reader: sqlite3.Connection | None = None  # SQLite: small reads on the loop's thread
        self._after_cancel: set[asyncio.Future] = set()

    def __repr__(self) -> str:
        return f"Db({DatabaseURL(self.url).obscure_password!r})"

    async def connect(self) -> None:
        """Open the connection (pool) and, on SQLite, switch the file to WAL."""
        try:
            await self._connect()
        except (OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            where = DatabaseURL(self.url).obscure_password
            raise DatabaseUnavailable(f"cannot open the database at JOBMON_DATABASE_URL={where}: "
                                      f"{exc or type(exc).__name__}") from exc

    async def _connect(self) -> None:
        if self.is_sqlite:
            path = DatabaseURL(self.url).database
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            # as many idle connections as requests run at once: past it each request would open and
            # close a connection (a thread and two PRAGMAs) of its own
            self._sqlite_pool = ReusingSQLitePool(path, max_idle=SQLITE_IDLE_CONNECTIONS)
            # databases opens a new aiosqlite connection (and thread) per use; reuse them instead
            install_sqlite_pool(self.database, self._sqlite_pool)
            self.batcher = WriteBatcher(self.writing, self._sqlite_pool)
            self._checkpointer = WalCheckpointer(path, self.writing)
            # WAL readers do not wait for the writer; a short busy timeout for the rare cases they do
            self._point_reader = sqlite3.connect(path, isolation_level=None, timeout=0.05, check_same_thread=False)
            self._point_reader.execute("PRAGMA query_only=1")
        await self.database.connect()
        if not self.is_sqlite:
            await self.database.fetch_val("SELECT 1")  # the pool opens no connection by itself

    @_outages_translated
    async def ping(self) -> None:
        """A trivial query: raises when the database does not answer."""
        await self.database.fetch_val("SELECT 1")

    def pool_usage(self) -> tuple[int, int, int | None]:
        """(connections in use, idle, the pool's maximum; None where there is none: SQLite opens
        one more when all are busy and keeps up to SQLITE_IDLE_CONNECTIONS idle)."""
        if self._sqlite_pool is not None:
            return self._sqlite_pool.in_use, self._sqlite_pool.idle, None
        return postgres_pool_usage(self.database)

    async def disconnect(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        await self.database.disconnect()
        if self._point_reader is not None:
            self._point_reader.close()
            self._point_reader = None
        if self._sqlite_pool is not None:
            await self._sqlite_pool.close()

    @contextlib.asynccontextmanager
    async def writing(self, writes: bool = True):
        """Hold this process's turn to write to SQLite (a no-op on PostgreSQL or for reads)."""
        task = asyncio.current_task()
        if not writes or not self.is_sqlite or _sqlite_writer.get() is task:
            yield
            return
        async with self._write_lock:
            token = _sqlite_writer.set(task)
            try:
                yield
            finally:
                _sqlite_writer.reset(token)
                if self._checkpointer is not None:
                    self._checkpointer.wrote()

    @contextlib.asynccontextmanager
    async def transaction(self, **options):
        """A write transaction (on SQLite it takes the write lock at once); `options` go to
        `databases` (PostgreSQL: `isolation`, `readonly`)."""
        async with self.writing():
            transaction = self.database.transaction(**options)
            held = connection_depth(self.database)  # uses of the task's connection outside this transaction
            await self._step(transaction.start(), held)
            try:
                yield transaction
            except BaseException as exc:
                try:
                    await self._step(transaction.rollback(), held)
                except Exception:
                    pass  # the database went away: it drops the transaction; the error below says why
                if isinstance(exc, Exception) and (error := translated(exc)) is not exc:
                    raise error from exc
                raise
            await self._step(transaction.commit(), held)

    async def _step(self, step, held: int) -> None:
        """Run BEGIN, COMMIT or ROLLBACK; if it fails, or the task is cancelled meanwhile, free the
        connection the transaction took (`databases` would keep it out of the pool for good)."""
        try:
            await step
        except BaseException as exc:
            if connection_depth(self.database) > held:
                await release_task_connection(self.database, self.is_sqlite)
            if isinstance(exc, Exception) and (error := translated(exc)) is not exc:
                raise error from exc
            raise

    # -- write units (server/db/units.py) -----------------------------------------------------------
    @_outages_translated
    async def run_unit(self, unit: Unit | Recipe, then: Callable[[Any], Awaitable[None]] | None = None):
        """Run a write unit in a transaction of its own (on SQLite: grouped with the other units
        queued meanwhile, in one trip to a connection's thread) and return its result once committed;
        `then(result)` is awaited after the commit (even when the caller was cancelled meanwhile: a
        submitted unit runs to its end, and what follows its commit, such as publishing its events,
        happens too). Given as a recipe (a function that makes the unit), a unit can run in a batch
        without a savepoint of its own (see WriteBatcher._commit)."""
        if self.is_sqlite:
            if _sqlite_writer.get() is asyncio.current_task():
                raise RuntimeError("run_unit inside a write transaction: use run_inline")
            future = self.batcher.submit(unit)
        else:
            future = asyncio.ensure_future(self._run_unit_postgres(make(unit)))
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():  # committed meanwhile
                self._finish_cancelled(then, future)
            else:
                self._after_cancel.add(future)
                future.add_done_callback(functools.partial(self._finish_cancelled, then))
            raise
        if then is not None:
            await then(result)
        return result

    def _finish_cancelled(self, then, future: asyncio.Future) -> None:
        self._after_cancel.discard(future)
        if future.cancelled() or future.exception() is not None or then is None:
            return
        task = asyncio.ensure_future(then(future.result()))
        self._after_cancel.add(task)
        task.add_done_callback(self._after_cancel.discard)

    async def _run_unit_postgres(self, unit: Unit):
        async with self.database.connection() as connection:
            raw = connection.raw_connection

            async def fetch(sql: str, params: dict) -> list[tuple]:
                text, names = _positional(sql)
                return [tuple(row) for row in await raw.fetch(text, *[params[name] for name in names])]

            async with raw.transaction():
                return await drive_async(fetch, unit)

    async def run_inline(self, unit: Unit):
        """Run a write unit statement by statement inside the transaction this task holds."""
        return await drive_async(self.raw_fetch, unit)

    @_outages_translated
    async def fetch_all(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_all(query, values)

    @_outages_translated
    async def fetch_dicts(self, query, values=None) -> list[dict]:
        """Rows as plain dicts: many times cheaper to read than `databases` Records, for big results."""
        async with self.writing(_writes(query)):
            rows = await self.database.fetch_all(query, values)
        if not rows:
            return []
        keys = list(rows[0]._mapping.keys())
        return [dict(zip(keys, row._mapping.values())) for row in rows]

    @_outages_translated
    async def fetch_one(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_one(query, values)

    @_outages_translated
    async def fetch_val(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_val(query, values)

    @_outages_translated
    async def execute(self, query, values=None):
        """Run a statement; its return value is backend-specific, so callers use RETURNING."""
        async with self.writing(_writes(query)):
            return await self.database.execute(query, values)

    # The hot paths (inserting a job's customers, recording a batch) skip SQLAlchemy: compiling
    # a statement costs milliseconds, and on SQLite every driver call is a trip to the
    # connection's thread. These run SQL text with `:name` parameters straight on the driver,
    # on the task's connection, so they join its transaction like any other query.
    @_outages_translated
    async def raw_fetch(self, sql: str, params: dict | None = None) -> list[tuple]:
        """Rows (as tuples) of one statement; on SQLite one trip to the connection's thread."""
        params = params or {}
        async with self.writing(_writes(sql)), self.database.connection() as connection:
            raw = connection.raw_connection
            if self.is_sqlite:
                return list(await raw.execute_fetchall(sql, params))
            text, names = _positional(sql)
            return [tuple(row) for row in await raw.fetch(text, *[params[name] for name in names])]

    @_outages_translated
    async def point_read(self, sql: str, params: dict | None = None) -> list[tuple]:
        """Rows of a small read by a unique index (a token, a session): on SQLite right here on the
        event loop's thread, in tens of microseconds (the trip to a pooled connection's thread costs
        more than the query: a thread wake-up, a loop wake-up, the GIL changing hands); on PostgreSQL
        (or should SQLite be busy) as `raw_fetch`."""
        if self._point_reader is not None and _sqlite_writer.get() is None:
            try:
                return self._point_reader.execute(sql, params or {}).fetchall()
            except sqlite3.OperationalError:  # busy (rare in WAL mode): wait off the loop's thread
                pass
        return await self.raw_fetch(sql, params)

    @_outages_translated
    async def insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Many rows into one table, the fastest way each driver has (COPY on PostgreSQL)."""
        async with self.writing(), self.database.connection() as connection:
            raw = connection.raw_connection
            if self.is_sqlite:
                await raw.executemany(_insert_sql(table, columns), rows)
            else:
                await raw.copy_records_to_table(table, records=rows, columns=columns)

    @_outages_translated
    async def raw_executemany(self, sql: str, rows: list[dict]) -> None:
        """One statement for each parameter set, in one driver call."""
        async with self.writing(_writes(sql)), self.database.connection() as connection:
            raw = connection.raw_connection
            if self.is_sqlite:
                await raw.executemany(sql, rows)
            else:
                text, names = _positional(sql)
                await raw.executemany(text, [[row[name] for name in names] for row in rows])


async def _keep_session(connection) -> None:
    """Release a PostgreSQL connection to the pool without asyncpg's reset query.

    asyncpg still rolls back an open transaction; the reset query (RESET ALL, UNLISTEN, unlock
    advisory locks) would cost a round trip per query and is not needed: nothing here keeps
    session state (locks are transaction-scoped, settings are SET LOCAL, no LISTEN).
    """


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.lru_cache(maxsize=256)
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` parameters as PostgreSQL's `$n` (`::type` casts are left alone)."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", number, sql), tuple(names)

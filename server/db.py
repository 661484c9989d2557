"""Tables, the database connection and schema migrations.

Every timestamp column holds milliseconds since the Unix epoch (UTC) as an integer: it sorts,
indexes and compares the same way on SQLite and PostgreSQL; `timeutil.iso` formats it at the
edge. The schema is versioned in `schema_version`; `migrate` brings any older database up to
`SCHEMA_VERSION` on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import re
import sqlite3
from pathlib import Path

import aiosqlite
import asyncpg
import sqlalchemy as sa
from databases import Database
from databases.core import DatabaseURL
from sqlalchemy.schema import CreateIndex, CreateTable

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_sessions_user", "user_id"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_api_tokens_user", "user_id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("action_name", sa.String(32), nullable=False),
    sa.Column("action_code", sa.Integer, nullable=False),
    sa.Column("cluster", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("customer_count", sa.Integer, nullable=False),
    sa.Column("done", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("parent_job_id", sa.String(36), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    # fixed at creation so a batch's request_id stays the same across restarts
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.BigInteger, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("stuck_alerted", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_jobs_user_created", "user_id", "created_at", "job_id"),
    sa.Index("ix_jobs_user_status_created", "user_id", "status", "created_at", "job_id"),
    sa.Index("ix_jobs_user_idempotency", "user_id", "idempotency_key", unique=True),
    sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    sa.Index("ix_jobs_created", "created_at", "job_id"),
    sa.Index("ix_jobs_parent", "parent_job_id"),
    # admin list (admin.py): each sort key alone, after status and after user_id, so a status or
    # user filter walks its own slice in order instead of filtering a walk over every job
    sa.Index("ix_jobs_updated", "updated_at", "job_id"),
    sa.Index("ix_jobs_finished", "finished_at", "job_id"),
    sa.Index("ix_jobs_duration", "duration_ms", "job_id"),
    sa.Index("ix_jobs_status_created", "status", "created_at", "job_id"),
    sa.Index("ix_jobs_status_updated", "status", "updated_at", "job_id"),
    sa.Index("ix_jobs_status_finished", "status", "finished_at", "job_id"),
    sa.Index("ix_jobs_status_duration", "status", "duration_ms", "job_id"),
    sa.Index("ix_jobs_user_updated", "user_id", "updated_at", "job_id"),
    sa.Index("ix_jobs_user_finished", "user_id", "finished_at", "job_id"),
    sa.Index("ix_jobs_user_duration", "user_id", "duration_ms", "job_id"),
    # the bounded error-message search reads the newest jobs that have a message
    sa.Index("ix_jobs_error_created", "created_at", sqlite_where=sa.text("error_message IS NOT NULL"),
             postgresql_where=sa.text("error_message IS NOT NULL")),
)

job_customers = sa.Table(
    "job_customers",
    metadata,
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id"), primary_key=True),
    # position in the job: batch number is seq // jobs.batch_size
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("cid", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=True),
    sa.Index("ix_job_customers_cid", "cid", "job_id"),
    sa.Index("ix_job_customers_job_status", "job_id", "status", "seq"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    # increases per user in commit order: see jobs.JobStore._next_event_ids
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_job_events_user_event", "user_id", "event_id", unique=True),
    sa.Index("ix_job_events_job", "job_id", "id"),
    sa.Index("ix_job_events_created", "created_at"),
)

# Alerts (alerts.py): the id says what it is about (`job_failed:<job_id>`), so a second node
# raising the same alert finds it already there; replayed to listeners by `at`.
job_alerts = sa.Table(
    "job_alerts",
    metadata,
    sa.Column("alert_id", sa.String(160), primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=True),  # the job's owner; admins see every alert
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=True),
    sa.Column("cluster", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_job_alerts_user_at", "user_id", "at"),
    sa.Index("ix_job_alerts_at", "at"),
)

event_counters = sa.Table(
    "event_counters",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("last_event_id", sa.BigInteger, nullable=False),
)

# Aggregates kept in the same transaction as every job change, so stats never scan `jobs`.
job_counts = sa.Table(
    "job_counts",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

daily_stats = sa.Table(
    "daily_stats",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("action_name", sa.String(32), primary_key=True),
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("created", sa.BigInteger, nullable=False, default=0),
    sa.Column("success", sa.BigInteger, nullable=False, default=0),
    sa.Column("failed", sa.BigInteger, nullable=False, default=0),
    sa.Column("partial", sa.BigInteger, nullable=False, default=0),
    sa.Column("cancelled", sa.BigInteger, nullable=False, default=0),
    sa.Column("duration_sum_ms", sa.BigInteger, nullable=False, default=0),
    sa.Column("duration_count", sa.BigInteger, nullable=False, default=0),
    sa.Index("ix_daily_stats_user_day", "user_id", "day"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("username", sa.String(64), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(200), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Index("ix_audit_kind_subject_at", "kind", "subject", "at"),
    sa.Index("ix_audit_at", "at"),
    sa.Index("ix_audit_user_at", "user_id", "at"),
    sa.Index("ix_audit_kind_id", "kind", "id"),
    sa.Index("ix_audit_username_id", "username", "id"),
)

appstatus_cache = sa.Table(
    "appstatus_cache",
    metadata,
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("cid", sa.String(64), primary_key=True),
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("cached_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_appstatus_cache_expires", "expires_at"),
)

# Finished jobs per log-spaced processing-time bucket (histogram.py), kept by JobStore.finish:
# the admin stats read p95 from it without touching `jobs`.
duration_histogram = sa.Table(
    "duration_histogram",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("action_name", sa.String(32), primary_key=True),
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

# Where the retention task (retention.py) got to, shared by every node.
retention_state = sa.Table(
    "retention_state",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("job_id", sa.String(36), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Per cluster and per user whose request counted (user 0: the background cleanup), so a user's
# stats show their own scope and an admin's the sums.
cache_counters = sa.Table(
    "cache_counters",
    metadata,
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("hits", sa.BigInteger, nullable=False),
    sa.Column("misses", sa.BigInteger, nullable=False),
    # misses that found an entry past its TTL
    sa.Column("expired", sa.BigInteger, nullable=False),
    # expired entries deleted by the background cleanup
    sa.Column("cleaned", sa.BigInteger, nullable=False, default=0),
)

# Who is fetching an entry from upstream right now: the cross-node half of single-flight (see
# cache.py). A claim ends when its fetch ends, or at expires_at if its node died.
appstatus_claims = sa.Table(
    "appstatus_claims",
    metadata,
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("cid", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(36), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_appstatus_claims_owner", "owner"),
)

# Bumped after every write to the entries of a (cluster, app): a node may answer from a copy of
# a job's entries it read before only while this number has not moved (see cache.py).
appstatus_generations = sa.Table(
    "appstatus_generations",
    metadata,
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

SCHEMA_VERSION = 1

# What a unique or foreign-key violation raises: `databases` passes the driver's own exception on
INTEGRITY_ERRORS = (sa.exc.IntegrityError, sqlite3.IntegrityError,
                    asyncpg.exceptions.IntegrityConstraintViolationError)

# Steps that bring a database at version N-1 to version N; a fresh database is created at
# SCHEMA_VERSION directly from `metadata`. Add a step (and bump SCHEMA_VERSION) for each change.
MIGRATIONS: dict[int, list[str]] = {}


class DatabaseUnavailable(Exception):
    """The database named by JOBMON_DATABASE_URL could not be opened."""


class _ImmediateConnection(aiosqlite.Connection):
    """An aiosqlite connection whose transactions take the write lock at BEGIN.

    A deferred BEGIN that reads first and writes later fails with SQLITE_BUSY (not waiting on the
    busy timeout) when another writer committed in between; BEGIN IMMEDIATE waits instead.
    """

    def execute(self, sql, parameters=None):  # type: ignore[override]
        if sql == "BEGIN":
            sql = "BEGIN IMMEDIATE"
        return super().execute(sql, parameters)


class _ReusingSQLitePool:
    """Keeps open SQLite connections for reuse: opening one per query costs milliseconds."""

    _memref = None  # databases' SQLiteBackend.disconnect reads it (for in-memory databases)

    def __init__(self, path: str, max_idle: int = 16, busy_timeout: float = 30.0):
        self._path = path
        self._idle: list[aiosqlite.Connection] = []
        self._max_idle = max_idle
        self._busy_timeout = busy_timeout

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle:
            return self._idle.pop()
        connection = _ImmediateConnection(self._connect, iter_chunk_size=256)
        await connection.__aenter__()
        return connection

    async def release(self, connection: aiosqlite.Connection) -> None:
        if connection.in_transaction:
            await connection.rollback()
        if len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            await connection.close()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


# The task that holds a Db's SQLite write lock (so its own writes inside a transaction go on)
_sqlite_writer: contextvars.ContextVar[asyncio.Task | None] = contextvars.ContextVar("sqlite_writer", default=None)

_WRITE_SQL = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


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

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("postgresql+asyncpg://"):
            url = "postgresql://" + url[len("postgresql+asyncpg://"):]
        self.database = Database(url, **({} if self.is_sqlite else
                                         {"min_size": 2, "max_size": 20, "reset": _keep_session}))
        self._sqlite_pool: _ReusingSQLitePool | None = None
        self._write_lock = asyncio.Lock()

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
            self._sqlite_pool = _ReusingSQLitePool(path)
            # databases opens a new aiosqlite connection (and thread) per use; reuse them instead
            self.database._backend._pool = self._sqlite_pool  # type: ignore[attr-defined]
        await self.database.connect()

    async def disconnect(self) -> None:
        await self.database.disconnect()
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

    @contextlib.asynccontextmanager
    async def transaction(self):
        """A write transaction (on SQLite it takes the write lock at once)."""
        async with self.writing():
            transaction = self.database.transaction()
            await self._uncancelled(transaction.start())
            try:
                yield transaction
            except BaseException:
                await self._uncancelled(transaction.rollback())
                raise
            await self._uncancelled(transaction.commit())

    async def _uncancelled(self, step) -> None:
        """Run BEGIN, COMMIT or ROLLBACK; if the task is cancelled meanwhile, free the connection.

        The statement still runs on the connection's thread, but `databases` then never releases
        the connection: on SQLite it would stay out of the pool holding the write lock (every
        writer then waits for the busy timeout), on PostgreSQL it would leak from the pool.
        """
        try:
            await step
        except asyncio.CancelledError:
            connection = self.database.connection()  # this task's, still counted as in use
            if self.is_sqlite:
                backend = connection._connection
                raw, backend._connection = backend._connection, None
                connection._connection_counter = 0
                self.database._connection = None
                if raw is not None:
                    # queued after the statement; closing rolls back what it left open
                    await asyncio.shield(asyncio.ensure_future(raw.close()))
            else:
                # asyncpg's pool resets (rolls back) a released connection
                await asyncio.shield(asyncio.ensure_future(connection.__aexit__()))
            raise

    async def fetch_all(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_all(query, values)

    async def fetch_dicts(self, query, values=None) -> list[dict]:
        """Rows as plain dicts: many times cheaper to read than `databases` Records, for big results."""
        async with self.writing(_writes(query)):
            rows = await self.database.fetch_all(query, values)
        if not rows:
            return []
        keys = list(rows[0]._mapping.keys())
        return [dict(zip(keys, row._mapping.values())) for row in rows]

    async def fetch_one(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_one(query, values)

    async def fetch_val(self, query, values=None):
        async with self.writing(_writes(query)):
            return await self.database.fetch_val(query, values)

    async def execute(self, query, values=None):
        """Run a statement; its return value is backend-specific, so callers use RETURNING."""
        async with self.writing(_writes(query)):
            return await self.database.execute(query, values)

    # The hot paths (inserting a job's customers, recording a batch) skip SQLAlchemy: compiling
    # a statement costs milliseconds, and on SQLite every driver call is a trip to the
    # connection's thread. These run SQL text with `:name` parameters straight on the driver,
    # on the task's connection, so they join its transaction like any other query.
    async def raw_fetch(self, sql: str, params: dict | None = None) -> list[tuple]:
        """Rows (as tuples) of one statement; on SQLite one trip to the connection's thread."""
        params = params or {}
        async with self.writing(_writes(sql)), self.database.connection() as connection:
            raw = connection.raw_connection
            if self.is_sqlite:
                return list(await raw.execute_fetchall(sql, params))
            text, names = _positional(sql)
            return [tuple(row) for row in await raw.fetch(text, *[params[name] for name in names])]

    async def insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Many rows into one table, the fastest way each driver has (COPY on PostgreSQL)."""
        async with self.writing(), self.database.connection() as connection:
            raw = connection.raw_connection
            if self.is_sqlite:
                await raw.executemany(_insert_sql(table, columns), rows)
            else:
                await raw.copy_records_to_table(table, records=rows, columns=columns)

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


def _dialect(db: Db):
    if db.is_sqlite:
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect()
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


async def _create_all(db: Db) -> None:
    dialect = _dialect(db)
    for table in metadata.sorted_tables:
        await db.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in table.indexes:
            await db.execute(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))


async def migrate(db: Db) -> int:
    """Create or upgrade the schema to SCHEMA_VERSION; return the version found before."""
    async with db.transaction():
        if not db.is_sqlite:
            # one node migrates at a time; the others wait here, then find the work done
            await db.execute("SELECT pg_advisory_xact_lock(4242001)")
        await db.execute(
            str(CreateTable(schema_version, if_not_exists=True).compile(dialect=_dialect(db)))
        )
        found = await db.fetch_val(sa.select(schema_version.c.version).where(schema_version.c.id == 1))
        if found is None:
            await _create_all(db)
            await db.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
            logger.info("created database schema version %s", SCHEMA_VERSION)
            return 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {found} is newer than this server's {SCHEMA_VERSION}: "
                "upgrade the server"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await db.execute(statement)
            logger.info("upgraded database schema to version %s", version)
        if found < SCHEMA_VERSION:
            await db.execute(
                schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION)
            )
        return found

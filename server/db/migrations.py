"""Creating the schema, and upgrading an older database to SCHEMA_VERSION on start.

The schema is versioned in `schema_version`; a fresh database is created at SCHEMA_VERSION
directly from `metadata`, an older one is brought up step by step from MIGRATIONS.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Union

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from server.db.engine import Db
from server.db.schema import metadata, schema_version

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6

Step = Union[str, Callable[[Db], Awaitable[None]]]


def _create_tables(*names: str) -> Callable[[Db], Awaitable[None]]:
    """A step that creates these tables of `metadata`, with their indexes, in the db's dialect."""

    async def step(db: Db) -> None:
        await _create_all(db, [metadata.tables[name] for name in names])

    step.__name__ = f"create {', '.join(names)}"
    return step


def _add_column(table: str, column: str) -> Callable[[Db], Awaitable[None]]:
    """A step that adds a column of `metadata` to an existing table, unless it is there already
    (an earlier step that created the table from `metadata` made it with the column)."""

    async def step(db: Db) -> None:
        if db.is_sqlite:
            present = {row[1] for row in await db.raw_fetch(f"PRAGMA table_info({table})")}
        else:
            present = {row[0] for row in await db.raw_fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = :t", {"t": table})}
        if column not in present:
            spec = metadata.tables[table].c[column]
            kind = spec.type.compile(dialect=_dialect(db))
            await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    step.__name__ = f"add {table}.{column}"
    return step


def _recreate_index(table: str, name: str) -> Callable[[Db], Awaitable[None]]:
    """A step that replaces an index by its definition in `metadata`, in the db's dialect."""

    async def step(db: Db) -> None:
        index = next(index for index in metadata.tables[table].indexes if index.name == name)
        await db.execute(f"DROP INDEX IF EXISTS {name}")
        await db.execute(str(CreateIndex(index, if_not_exists=True).compile(dialect=_dialect(db))))

    step.__name__ = f"recreate {name}"
    return step


# Steps that bring a database at version N-1 to version N: SQL both dialects accept, or a
# function of the db. A fresh database is created at SCHEMA_VERSION directly from `metadata`.
# Add a step (and bump SCHEMA_VERSION) for each change.
MIGRATIONS: dict[int, list[Step]] = {
    # pipeline jobs and deployments; job events name their topic
    2: [
        "ALTER TABLE job_events ADD COLUMN topic VARCHAR(16) DEFAULT 'job' NOT NULL",
        _create_tables("pipeline_jobs", "deployments"),
    ],
    # counters behind the dashboard summary; why a deployment failed
    3: [
        _create_tables("pipeline_counts", "live_services"),
        _add_column("deployments", "failure_reason"),
    ],
    # each node's report of its own system metrics (GET /admin/system)
    4: [
        _create_tables("node_reports"),
    ],
    # the shortest and longest duration of each processing-time bucket (percentiles are clamped to them)
    5: [
        _add_column("duration_histogram", "min_ms"),
        _add_column("duration_histogram", "max_ms"),
    ],
    # fewer index writes per agent report: partial idempotency indexes, no index of its own for the
    # timeout sweep (ix_pipeline_jobs_status_created finds running jobs)
    6: [
        "DROP INDEX IF EXISTS ix_pipeline_jobs_status_heartbeat",
        _recreate_index("pipeline_jobs", "ix_pipeline_jobs_user_idempotency"),
        _recreate_index("deployments", "ix_deployments_user_idempotency"),
    ],
}


def _dialect(db: Db):
    if db.is_sqlite:
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect()
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


async def _create_all(db: Db, tables=None) -> None:
    dialect = _dialect(db)
    for table in tables if tables is not None else metadata.sorted_tables:
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
            for step in MIGRATIONS[version]:
                await (db.execute(step) if isinstance(step, str) else step(db))
            logger.info("upgraded database schema to version %s", version)
        if found < SCHEMA_VERSION:
            await db.execute(
                schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION)
            )
        return found

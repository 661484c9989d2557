"""Upgrades: a database made at schema version 1 (kept as tests/fixtures), filled, is upgraded on
start, and every row is still there; the new tables work."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import BACKENDS, database_url, db_rows, on_database

FIXTURES = Path(__file__).parent / "fixtures"


async def _build_v1(db) -> None:
    dialect = "sqlite" if db.is_sqlite else "postgresql"
    lines = (FIXTURES / f"schema_v1_{dialect}.sql").read_text().splitlines()
    sql = "\n".join(line for line in lines if not line.startswith("--"))
    for statement in (s.strip() for s in sql.split(";")):
        if statement:
            await db.execute(statement)
    await db.execute("INSERT INTO users (id, username, password_hash, role, created_at, disabled) "
                     "VALUES (1, 'old-user', 'x', 'user', 1, false)")
    await db.execute(
        "INSERT INTO jobs (job_id, user_id, action_name, action_code, cluster, status, customer_count, done, "
        "failed, created_at, updated_at, batch_size, attempts, cancel_requested, stuck_alerted) VALUES "
        "('00000000-0000-4000-8000-000000000001', 1, 'PE-Enable', 2, 'sim', 'SUCCESS', 1, 1, 0, 5, 6, 100, 1, "
        "false, false)")
    await db.execute("INSERT INTO event_counters (user_id, last_event_id) VALUES (1, 2)")
    for event_id, kind in ((1, "created"), (2, "status")):
        await db.execute(
            "INSERT INTO job_events (user_id, event_id, job_id, kind, payload, created_at) VALUES "
            f"(1, {event_id}, '00000000-0000-4000-8000-000000000001', '{kind}', '{{}}', {event_id})")


def _upgrade_from(url: str, downgrade) -> int:
    """A database made at version 1 and upgraded, then taken back by `downgrade` to an older
    version's shape, upgraded again: the version the upgrade started from."""
    from server.db import migrate

    on_database(url, _build_v1, migrated=True)
    on_database(url, migrate, migrated=True)
    on_database(url, downgrade, migrated=True)
    return on_database(url, migrate, migrated=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_1_database_is_upgraded_and_keeps_every_row(backend, tmp_path):
    from server.db import SCHEMA_VERSION, migrate

    url, handle = database_url(backend, tmp_path)
    try:
        on_database(url, _build_v1, migrated=True)
        found = on_database(url, migrate, migrated=True)
        assert found == 1
        assert db_rows(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert db_rows(url, "SELECT username FROM users") == [("old-user",)]
        assert db_rows(url, "SELECT job_id, status FROM jobs") == [("00000000-0000-4000-8000-000000000001", "SUCCESS")]
        # old events keep their ids and are Set Action events
        assert db_rows(url, "SELECT event_id, kind, topic FROM job_events ORDER BY event_id") == [
            (1, "created", "job"), (2, "status", "job")]
        assert db_rows(url, "SELECT COUNT(*) FROM pipeline_jobs") == [(0,)]
        assert db_rows(url, "SELECT COUNT(*) FROM deployments") == [(0,)]
        # a second start finds the work done
        assert on_database(url, migrate, migrated=True) == SCHEMA_VERSION
    finally:
        if handle is not None:
            handle.drop()


async def _to_v2(db) -> None:
    """A database as schema version 2 left it: no counters, no live services, deployments without
    failure_reason; one deployment in it."""
    await db.execute("DROP TABLE pipeline_counts")
    await db.execute("DROP TABLE live_services")
    await db.execute("ALTER TABLE deployments DROP COLUMN failure_reason")
    await db.execute("UPDATE schema_version SET version = 2")
    await db.execute(
        "INSERT INTO deployments (id, user_id, service_name, version, status, regression_checked, created_at, "
        "updated_at) VALUES ('00000000-0000-4000-8000-000000000002', 1, 'api', '1.0', 'pending', false, 5, 6)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_2_database_gets_the_pipeline_counters_and_failure_reasons(backend, tmp_path):
    from server.db import SCHEMA_VERSION, migrate

    url, handle = database_url(backend, tmp_path)
    try:
        assert _upgrade_from(url, _to_v2) == 2
        assert db_rows(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert db_rows(url, "SELECT id, failure_reason FROM deployments") == [
            ("00000000-0000-4000-8000-000000000002", None)]
        assert db_rows(url, "SELECT COUNT(*) FROM pipeline_counts") == [(0,)]
        assert db_rows(url, "SELECT COUNT(*) FROM live_services") == [(0,)]
        assert on_database(url, migrate, migrated=True) == SCHEMA_VERSION
    finally:
        if handle is not None:
            handle.drop()


def test_a_database_newer_than_the_server_is_refused(tmp_path):
    from server.db import SCHEMA_VERSION, migrate

    url = f"sqlite:///{tmp_path / 'jobmon.db'}"
    on_database(url, lambda db: db.execute(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}"))
    with pytest.raises(RuntimeError, match="newer than this server"):
        on_database(url, migrate, migrated=True)


async def _to_v3(db) -> None:
    """A database as schema version 3 left it: no node_reports; one pipeline job in it."""
    await db.execute("DROP TABLE node_reports")
    await db.execute("UPDATE schema_version SET version = 3")
    await db.execute(
        "INSERT INTO pipeline_counts (user_id, name, n) VALUES (1, 'active', 4)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_3_database_gets_the_node_reports_table(backend, tmp_path):
    from server.db import SCHEMA_VERSION, migrate

    url, handle = database_url(backend, tmp_path)
    try:
        assert _upgrade_from(url, _to_v3) == 3
        assert db_rows(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert db_rows(url, "SELECT user_id, name, n FROM pipeline_counts") == [(1, "active", 4)]
        assert db_rows(url, "SELECT username FROM users") == [("old-user",)]
        # the new table takes a node's report
        db_rows(url, "INSERT INTO node_reports (node_id, host, pid, started_at, reported_at, interval_ms, sockets, "
                     "jobs_running, fanout_queue, upstream_in_flight, db_pool_in_use, db_pool_idle) "
                     "VALUES ('h:1:abcdef', 'h', 1, 5, 6, 5000, 0, 0, 0, 0, 0, 0)")
        assert db_rows(url, "SELECT node_id, reported_at FROM node_reports") == [("h:1:abcdef", 6)]
        assert on_database(url, migrate, migrated=True) == SCHEMA_VERSION
    finally:
        if handle is not None:
            handle.drop()


async def _to_v5(db) -> None:
    """A database as schema version 5 left it: full (not partial) idempotency indexes and an index
    for the timeout sweep; pipeline jobs with and without a key in it."""
    for name, table, columns in (("ix_pipeline_jobs_user_idempotency", "pipeline_jobs", "user_id, idempotency_key"),
                                 ("ix_deployments_user_idempotency", "deployments", "user_id, idempotency_key")):
        await db.execute(f"DROP INDEX {name}")
        await db.execute(f"CREATE UNIQUE INDEX {name} ON {table} ({columns})")
    await db.execute("CREATE INDEX ix_pipeline_jobs_status_heartbeat ON pipeline_jobs (status, heartbeat_at)")
    await db.execute("UPDATE schema_version SET version = 5")
    for n, key, status in ((1, "'k-1'", "running"), (2, "NULL", "running"), (3, "NULL", "success")):
        await db.execute(
            "INSERT INTO pipeline_jobs (job_id, user_id, job_type, repo, agent_id, status, tags, metadata, "
            f"created_at, updated_at, idempotency_key) VALUES ('00000000-0000-4000-8000-00000000000{n}', 1, 'build', "
            f"'org/repo', 'agent-1', '{status}', '[]', '{{}}', {n}, {n}, {key})")


async def _index_definitions(db) -> dict[str, str]:
    if db.is_sqlite:
        rows = await db.raw_fetch("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                  "AND tbl_name IN ('pipeline_jobs', 'deployments')")
    else:
        rows = await db.raw_fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                                  "('pipeline_jobs', 'deployments')")
    return {name: " ".join(sql.split()) for name, sql in rows}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_5_database_gets_the_indexes_of_a_new_one(backend, tmp_path):
    from server.db import SCHEMA_VERSION, migrate

    url, handle = database_url(backend, tmp_path)
    try:
        on_database(url, _build_v1, migrated=True)
        on_database(url, migrate, migrated=True)
        fresh = on_database(url, _index_definitions, migrated=True)
        on_database(url, _to_v5, migrated=True)
        assert on_database(url, migrate, migrated=True) == 5
        assert db_rows(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        upgraded = on_database(url, _index_definitions, migrated=True)
        assert upgraded == fresh  # the same indexes as a database made at this version
        assert "ix_pipeline_jobs_status_heartbeat" not in upgraded
        assert "WHERE" in upgraded["ix_pipeline_jobs_user_idempotency"].upper()
        # a key is still one per user; jobs without one are as many as they like
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            db_rows(url, "INSERT INTO pipeline_jobs (job_id, user_id, job_type, repo, agent_id, status, tags, metadata, "
                         "created_at, updated_at, idempotency_key) VALUES ('00000000-0000-4000-8000-000000000009', "
                         "1, 'build', 'org/repo', 'agent-1', 'queued', '[]', '{}', 9, 9, 'k-1')")
        assert db_rows(url, "SELECT job_id FROM pipeline_jobs WHERE status = 'running' AND "
                            "COALESCE(heartbeat_at, updated_at) < 10 ORDER BY job_id") == [
            ("00000000-0000-4000-8000-000000000001",), ("00000000-0000-4000-8000-000000000002",)]
        if backend == "sqlite":  # the sweep's query still finds running jobs through an index
            plan = db_rows(url, "EXPLAIN QUERY PLAN SELECT job_id FROM pipeline_jobs WHERE status = 'running' "
                                "AND COALESCE(heartbeat_at, updated_at) < 10")
            assert "USING INDEX ix_pipeline_jobs_status_created (status=?)" in " ".join(str(row) for row in plan)
    finally:
        if handle is not None:
            handle.drop()

"""The tables, as SQLAlchemy Core metadata.

Every timestamp column holds milliseconds since the Unix epoch (UTC) as an integer: it sorts,
indexes and compares the same way on SQLite and PostgreSQL; `timeutil.iso` formats it at the
edge.

Who reads and writes each table (nothing else sends SQL to it):
- users, sessions, api_tokens: accounts.store; audit_log: accounts.audit
- jobs, job_customers, job_events, event_counters: jobs.store (every change, and the user's reads);
  jobs.events reads the event log; jobs.retention prunes old events and customer rows;
  admin.queries is the admin read model over jobs, job_customers and job_events
- job_counts, daily_stats, duration_histogram: written by jobs.store in each change's
  transaction, read by stats (counts, live, aggregates; aggregates' verify recounts them from jobs)
- job_alerts: realtime.alerts; retention_state: jobs.retention; schema_version: db.migrations
- pipeline_jobs, deployments (schema v2), pipeline_counts, live_services (schema v3): pipelines.store
- node_reports (schema v4): system.reports
- appstatus_cache, appstatus_claims, appstatus_generations, cache_counters: appstatus.cache
  (which reads a job's CIDs from job_customers inside its own lookup query, in one round trip)
"""

from __future__ import annotations

import sqlalchemy as sa

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
    # what the event is about: "job" (a Set Action: job-update), "pipeline" (pipeline-update) or
    # "deployment" (deployment-update); all share the user's event id sequence (schema v2)
    sa.Column("topic", sa.String(16), nullable=False, server_default="job"),
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
# the admin stats read p95 from it without touching `jobs`. min_ms / max_ms (schema v5; null in
# rows counted before) are the shortest and longest duration counted in the bucket, so no
# percentile is ever shown beyond the durations really seen.
duration_histogram = sa.Table(
    "duration_histogram",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("action_name", sa.String(32), primary_key=True),
    sa.Column("cluster", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("min_ms", sa.BigInteger, nullable=True),
    sa.Column("max_ms", sa.BigInteger, nullable=True),
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


# Pipeline jobs reported by CI/CD agents (schema v2). Lists are keyset pages newest first, per
# user or for admins, optionally by status, agent or repo: each has its index.
HAS_KEY = sa.text("idempotency_key IS NOT NULL")

pipeline_jobs = sa.Table(
    "pipeline_jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("job_type", sa.String(32), nullable=False),
    sa.Column("repo", sa.String(200), nullable=False),
    sa.Column("ref", sa.String(200), nullable=True),
    sa.Column("commit_sha", sa.String(64), nullable=True),
    sa.Column("commit_message", sa.Text, nullable=True),
    sa.Column("commit_author", sa.String(200), nullable=True),
    sa.Column("agent_id", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("tags", sa.Text, nullable=False),  # JSON list of strings
    sa.Column("metadata", sa.Text, nullable=False),  # JSON object
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("logs_url", sa.String(2000), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Index("ix_pipeline_jobs_user_created", "user_id", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_user_status_created", "user_id", "status", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_user_agent_created", "user_id", "agent_id", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_user_repo_created", "user_id", "repo", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_created", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_status_created", "status", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_agent_created", "agent_id", "created_at", "job_id"),
    sa.Index("ix_pipeline_jobs_repo_created", "repo", "created_at", "job_id"),
    # (the timeout sweep finds running jobs through ix_pipeline_jobs_status_created; schema v6 dropped
    # an index of its own, which every report wrote to.) Partial (schema v6): a record without an
    # idempotency key costs this index nothing on each agent report
    sa.Index("ix_pipeline_jobs_user_idempotency", "user_id", "idempotency_key", unique=True,
             sqlite_where=HAS_KEY, postgresql_where=HAS_KEY),
)

# Deployments of a service version through staging and production (schema v2).
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("service_name", sa.String(100), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("commit_sha", sa.String(64), nullable=True),
    sa.Column("commit_message", sa.Text, nullable=True),
    sa.Column("commit_author", sa.String(200), nullable=True),
    sa.Column("build_job_id", sa.String(36), nullable=True),
    sa.Column("test_job_id", sa.String(36), nullable=True),
    sa.Column("cluster", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("staging_job_id", sa.String(36), nullable=True),
    sa.Column("staged_at", sa.BigInteger, nullable=True),
    sa.Column("production_job_id", sa.String(36), nullable=True),
    sa.Column("live_at", sa.BigInteger, nullable=True),
    sa.Column("rolled_back_at", sa.BigInteger, nullable=True),
    sa.Column("rolled_back_to", sa.String(100), nullable=True),
    sa.Column("rollback_reason", sa.Text, nullable=True),
    sa.Column("error_rate", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("requests_per_sec", sa.Float, nullable=True),
    sa.Column("metrics_at", sa.BigInteger, nullable=True),
    sa.Column("failure_reason", sa.Text, nullable=True),  # schema v3: the reason given to /fail
    sa.Column("regression_checked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Index("ix_deployments_user_created", "user_id", "created_at", "id"),
    sa.Index("ix_deployments_user_service_created", "user_id", "service_name", "created_at", "id"),
    sa.Index("ix_deployments_created", "created_at", "id"),
    sa.Index("ix_deployments_service_created", "service_name", "created_at", "id"),
    # the regression check: live deployments on a cluster not yet checked
    sa.Index("ix_deployments_status_live", "status", "live_at"),
    sa.Index("ix_deployments_user_idempotency", "user_id", "idempotency_key", unique=True,
             sqlite_where=HAS_KEY, postgresql_where=HAS_KEY),
)


# Counters kept by pipelines.store in the same transaction as each change (schema v3), so the
# dashboard summary never counts rows: `active` (pending, queued or running pipeline jobs),
# `failed:<day>` (pipeline jobs that ended failed, timeout or error that UTC day) and
# `deployments:<day>` (deployments created that day).
pipeline_counts = sa.Table(
    "pipeline_counts",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

# Which deployment of each service is live now, per user (schema v3): set when one goes live,
# given back to the previous live one when it is rolled back. The summary's live_by_service.
live_services = sa.Table(
    "live_services",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("service_name", sa.String(100), primary_key=True),
    sa.Column("deployment_id", sa.String(36), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("cluster", sa.String(64), nullable=True),
    sa.Column("live_at", sa.BigInteger, nullable=False),
)

# Each node's latest report of its own system metrics (schema v4), written by system.reports every
# JOBMON_SYSTEM_INTERVAL seconds and read by GET /admin/system; a row whose node stopped reporting
# is shown as gone, then pruned. `interval_ms` is the reporting node's own interval (nodes may differ).
node_reports = sa.Table(
    "node_reports",
    metadata,
    sa.Column("node_id", sa.String(160), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("reported_at", sa.BigInteger, nullable=False),
    sa.Column("interval_ms", sa.Integer, nullable=False),
    sa.Column("cpu_percent", sa.Float, nullable=True),  # of one core, over the last interval
    sa.Column("rss_bytes", sa.BigInteger, nullable=True),
    sa.Column("loop_lag_ms", sa.Float, nullable=True),  # the worst sleep overshoot in the last interval
    sa.Column("loop_lag_avg_ms", sa.Float, nullable=True),
    sa.Column("sockets", sa.Integer, nullable=False),
    sa.Column("jobs_running", sa.Integer, nullable=False),
    sa.Column("fanout_queue", sa.Integer, nullable=False),
    sa.Column("upstream_in_flight", sa.Integer, nullable=False),
    sa.Column("db_pool_in_use", sa.Integer, nullable=False),
    sa.Column("db_pool_idle", sa.Integer, nullable=False),
    sa.Column("db_pool_max", sa.Integer, nullable=True),  # None: no fixed bound (SQLite)
    sa.Index("ix_node_reports_reported", "reported_at"),
)

"""The pipeline store: pipeline jobs and deployments, their checked transitions, counters and summary.

Every change is one transaction, written as a write unit (server/db/units.py: a generator of
statements, so on SQLite many agents' changes commit together in one trip to the database
thread): a conditional UPDATE that only matches a record in a status the
transition may start from (so of two concurrent calls exactly one wins, on SQLite and PostgreSQL
alike), the counters behind the summary, and the change's event (`append_events`, topic
"pipeline" or "deployment", in the user's one event id sequence). After the commit (never before) the
events go to the store's subscribers (the fan-out and the dashboard-summary pusher), as in the job store.

When the UPDATE matches nothing, the record is read to say why: missing or another user's (404),
already where the call would take it with the same values (the agent retried: returned as it is,
nothing written), or an illegal transition (409 naming the current and the requested status).
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Awaitable, Callable, Generator, Mapping, Sequence

import orjson

from server.db import INTEGRITY_ERRORS, Db
from server.db import schema as tables
from server.errors import BadRequest, Conflict, NotFound
from server.ids import time_ordered_id
from server.jobs.cursors import CursorCodec
from server.jobs.events import append_events_unit, publish_events
from server.pipelines.models import (
    ACTIVE_PIPELINE,
    FAILED_PIPELINE,
    DeploymentFailure,
    DeploymentMetrics,
    DeploymentRollback,
    DeploymentStatus,
    DeploymentStep,
    NewDeployment,
    NewPipelineJob,
    PipelineJobCompletion,
    PipelineJobUpdate,
    PipelineStatus,
    public_deployment,
    public_pipeline_job,
)
from server.timeutil import day_of, iso, now_ms, parse_iso

logger = logging.getLogger(__name__)

EventSubscriber = Callable[[list[dict]], Awaitable[None]]

# the columns of each table, in the order the raw queries below return them
JOB_COLUMNS = tuple(column.name for column in tables.pipeline_jobs.columns)
DEPLOYMENT_COLUMNS = tuple(column.name for column in tables.deployments.columns)
RECENT = 5  # jobs and deployments in the summary

P, D = PipelineStatus, DeploymentStatus


class _Table:
    """What the shared change and list code needs to know about one of the two tables."""

    def __init__(self, name: str, key: str, columns: tuple[str, ...], topic: str, shape, what: str):
        self.name, self.key, self.columns, self.topic, self.shape, self.what = name, key, columns, topic, shape, what
        self.select = f"SELECT {', '.join(columns)} FROM {name}"
        self.returning = " RETURNING " + ", ".join(columns)

    def __repr__(self) -> str:
        return f"_Table({self.name})"

    def record(self, row: Sequence) -> dict:
        return self.shape(dict(zip(self.columns, row)))


JOBS = _Table("pipeline_jobs", "job_id", JOB_COLUMNS, "pipeline", public_pipeline_job, "pipeline job")
DEPLOYMENTS = _Table("deployments", "id", DEPLOYMENT_COLUMNS, "deployment", public_deployment, "deployment")


def _marks(prefix: str, values: Sequence) -> tuple[str, dict]:
    """`:p0, :p1, ...` and their parameters."""
    return ", ".join(f":{prefix}{i}" for i in range(len(values))), {f"{prefix}{i}": v for i, v in enumerate(values)}


async def _page(db: Db, table: _Table, filters: Mapping[str, object], statuses: Sequence[str], after, limit: int
                ) -> list[dict]:
    """Up to `limit` rows (as column → value) newest first (keyset on created_at and the key), optionally after a
    position. Several statuses are read as one ordered walk per status, merged: each walks its own
    (…, status, created_at) index however many records the other statuses have."""
    where, params = [], {"limit": limit}
    for i, (column, value) in enumerate(filters.items()):
        where.append(f"{column} = :f{i}")
        params[f"f{i}"] = value
    if after is not None:
        where.append(f"(created_at, {table.key}) < (:after_at, :after_key)")
        params.update(after_at=after[0], after_key=after[1])
    order = f" ORDER BY created_at DESC, {table.key} DESC LIMIT :limit"
    if len(statuses) <= 1:
        if statuses:
            where.append("status = :s0")
            params["s0"] = statuses[0]
        sql = table.select + (" WHERE " + " AND ".join(where) if where else "") + order
    else:
        parts = []
        for i, status in enumerate(statuses):
            params[f"s{i}"] = status
            parts.append(f"SELECT * FROM ({table.select} WHERE " + " AND ".join([*where, f"status = :s{i}"])
                         + order + f") AS part{i}")
        sql = " UNION ALL ".join(parts) + order
    return [dict(zip(table.columns, row)) for row in await db.raw_fetch(sql, params)]


async def pipeline_summary(db: Db, user_id: int | None) -> dict:
    """The dashboard summary of one user, or of everyone (None): counters, the newest active jobs
    and deployments, and what is live per service. A handful of indexed reads, at any table size."""
    today = day_of(now_ms())
    names = {"active": "active", f"failed:{today}": "failed", f"deployments:{today}": "deployments"}
    marks, params = _marks("n", list(names))
    of_user, params["u"] = ("", None) if user_id is None else (" AND user_id = :u", user_id)
    counts = {kind: 0 for kind in names.values()}
    for name, n in await db.raw_fetch(f"SELECT name, SUM(n) FROM pipeline_counts WHERE name IN ({marks}){of_user} "
                                      "GROUP BY name", params):
        counts[names[name]] = int(n)
    live: dict[str, dict] = {}
    rows = await db.raw_fetch("SELECT service_name, version, deployment_id, live_at, cluster FROM live_services"
                              + (" WHERE user_id = :u" if user_id is not None else "")
                              + " ORDER BY service_name, live_at", {"u": user_id})
    for service, version, deployment_id, live_at, cluster in rows:  # for admins: the latest of any user
        live[service] = {"version": version, "deployment_id": deployment_id, "live_at": iso(live_at),
                         "cluster": cluster}
    filters = {} if user_id is None else {"user_id": user_id}
    return {
        "jobs_running": counts["active"],
        "jobs_failed_today": counts["failed"],
        "deployments_today": counts["deployments"],
        "recent_jobs": [JOBS.shape(r) for r in await _page(db, JOBS, filters, ACTIVE_PIPELINE, None, RECENT)],
        "recent_deployments": [DEPLOYMENTS.shape(r) for r in await _page(db, DEPLOYMENTS, filters, (), None, RECENT)],
        "live_by_service": live,
        "as_of": iso(now_ms()),
    }


def _illegal(table: _Table, current: str, requested: str) -> Conflict:
    return Conflict(f"This {table.what} is {current}: it cannot go {requested}", code="illegal_transition",
                    details={"current": current, "requested": requested})


# -- write units (sans-io: they yield statements and get their rows; see server/db/units.py) ----------
Unit = Generator[tuple[str, dict], list[tuple], object]
After = Callable[[dict, int], Unit]


def _count_unit(user_id: int, deltas: dict[str, int]) -> Unit:
    """Add to the user's counters, in one statement."""
    rows = ", ".join(f"(:u, :name{i}, :d{i})" for i in range(len(deltas)))
    params: dict = {"u": user_id}
    for i, (name, delta) in enumerate(deltas.items()):
        params.update({f"name{i}": name, f"d{i}": delta})
    yield (f"INSERT INTO pipeline_counts (user_id, name, n) VALUES {rows} "
           "ON CONFLICT (user_id, name) DO UPDATE SET n = pipeline_counts.n + excluded.n", params)


def _job_finished_unit(job: dict, now: int) -> Unit:
    """Counters of a pipeline job that has just reached a final status."""
    failed = {f"failed:{day_of(now)}": 1} if job["status"] in FAILED_PIPELINE else {}
    yield from _count_unit(job["user_id"], {"active": -1, **failed})


def _create_unit(table: _Table, row: dict, counters: list[str]) -> Unit:
    """Insert a record with its counters and `created` event: (record, events)."""
    columns = list(row)
    yield (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES (" + ", ".join(f":{c}" for c in columns) + ")",
           row)
    yield from _count_unit(row["user_id"], {name: 1 for name in counters})
    record = table.shape(row)
    events = yield from append_events_unit(row["user_id"], table.topic, row[table.key], record, ["created"],
                                           row["created_at"])
    return record, events


def _change_unit(table: _Table, sql: str, values: dict, record_id: str, kind: str, now: int,
                 after: After | None) -> Unit:
    """The conditional UPDATE, what follows from it and its event: (record, events), or (None, [])
    when nothing matched."""
    rows = yield (sql, values)
    if not rows:
        return None, []
    record = table.record(rows[0])
    if after is not None:
        yield from after(record, now)
    events = yield from append_events_unit(record["user_id"], table.topic, record_id, record, [kind], now)
    return record, events


def _time_out_unit(sql: str, params: dict, now: int) -> Unit:
    rows = yield (sql, params)
    jobs = [JOBS.record(row) for row in rows]
    events: list[dict] = []
    for job in jobs:
        yield from _job_finished_unit(job, now)
        events += yield from append_events_unit(job["user_id"], JOBS.topic, job["job_id"], job, ["status"], now)
    return jobs, events


def _set_live_unit(user_id: int, service: str, deployment: dict, live_at: int) -> Unit:
    yield ("INSERT INTO live_services (user_id, service_name, deployment_id, version, cluster, live_at) "
           "VALUES (:u, :s, :id, :version, :cluster, :live_at) ON CONFLICT (user_id, service_name) DO UPDATE SET "
           "deployment_id = excluded.deployment_id, version = excluded.version, cluster = excluded.cluster, "
           "live_at = excluded.live_at",
           {"u": user_id, "s": service, "id": deployment["id"], "version": deployment["version"],
            "cluster": deployment["cluster"], "live_at": live_at})


def _went_live_unit(deployment: dict, now: int) -> Unit:
    """This deployment is now what is live for its service (of its user)."""
    yield from _set_live_unit(deployment["user_id"], deployment["service_name"], deployment, now)


def _rolled_back_unit(deployment: dict, now: int) -> Unit:
    """If it was what is live, the service's previous live deployment is live again (or none)."""
    rows = yield ("DELETE FROM live_services WHERE deployment_id = :id RETURNING user_id", {"id": deployment["id"]})
    if not rows:
        return
    previous = yield (f"{DEPLOYMENTS.select} WHERE user_id = :u AND service_name = :s AND status = :live "
                      "ORDER BY live_at DESC, id DESC LIMIT 1",
                      {"u": deployment["user_id"], "s": deployment["service_name"], "live": D.LIVE.value})
    if previous:
        record = dict(zip(DEPLOYMENT_COLUMNS, previous[0]))
        yield from _set_live_unit(deployment["user_id"], deployment["service_name"], record, record["live_at"])


def _rows_unit(sql: str, params: dict) -> Unit:
    """One statement as a unit: its rows."""
    return (yield (sql, params))


class PipelineStore:
    """Reads and changes pipeline jobs and deployments; every change commits its event with it."""

    def __init__(self, db: Db, cursors: CursorCodec, subscribers: Sequence[EventSubscriber] = ()):
        self.db = db
        self.cursors = cursors
        # called with the new events after each commit that appended some
        self._subscribers = tuple(subscribers)

    def __repr__(self) -> str:
        return f"PipelineStore({self.db!r})"

    async def _publish(self, events: list[dict]) -> None:
        await publish_events(self._subscribers, events)

    async def _run(self, unit: Callable[[], Unit]):
        """Run a write unit, given as the function that makes it (its own transaction, or a group
        commit on SQLite); its events go to the subscribers after the commit. Returns what the unit
        returned besides its events."""
        value, _events = await self.db.run_unit(unit, then=self._published)
        return value

    async def _published(self, result: tuple) -> None:
        if result[1]:
            await self._publish(result[1])

    # -- reading ---------------------------------------------------------------------------------
    async def _row(self, table: _Table, record_id: str) -> dict | None:
        rows = await self.db.raw_fetch(f"{table.select} WHERE {table.key} = :id", {"id": record_id})
        return table.record(rows[0]) if rows else None

    async def _get_for(self, table: _Table, record_id: str, user_id: int, is_admin: bool) -> dict:
        """The record if this user may see it; 404 when it is missing or someone else's."""
        record = await self._row(table, record_id)
        if record is None or (record["user_id"] != user_id and not is_admin):
            raise NotFound(f"No such {table.what}")
        return record

    async def get_job(self, job_id: str, user_id: int, is_admin: bool) -> dict:
        return await self._get_for(JOBS, job_id, user_id, is_admin)

    async def get_deployment(self, deployment_id: str, user_id: int, is_admin: bool) -> dict:
        return await self._get_for(DEPLOYMENTS, deployment_id, user_id, is_admin)

    async def _list(self, table: _Table, kind: str, filters: dict, statuses: Sequence[str], cursor: str | None,
                    limit: int) -> tuple[list[dict], str | None]:
        after = self.cursors.decode(cursor, kind, (int, str)) if cursor else None
        rows = await _page(self.db, table, {k: v for k, v in filters.items() if v is not None}, statuses, after,
                           limit + 1)
        page = rows[:limit]
        next_cursor = (self.cursors.encode(kind, page[-1]["created_at"], page[-1][table.key])
                       if len(rows) > limit else None)
        return [table.shape(row) for row in page], next_cursor

    async def list_jobs(self, *, user_id: int | None, statuses: Sequence[str] = (), agent_id: str | None = None,
                        repo: str | None = None, cursor: str | None = None, limit: int = 50) -> dict:
        """Pipeline jobs newest first (of one user, or everyone's for None), one page per cursor."""
        jobs, next_cursor = await self._list(JOBS, "pipeline-jobs", {"user_id": user_id, "agent_id": agent_id,
                                                                     "repo": repo}, statuses, cursor, limit)
        return {"jobs": jobs, "next_cursor": next_cursor}

    async def list_deployments(self, *, user_id: int | None, statuses: Sequence[str] = (),
                               service_name: str | None = None, cursor: str | None = None, limit: int = 50) -> dict:
        """Deployments newest first (of one user, or everyone's for None), one page per cursor."""
        found, next_cursor = await self._list(DEPLOYMENTS, "deployments",
                                              {"user_id": user_id, "service_name": service_name},
                                              statuses, cursor, limit)
        return {"deployments": found, "next_cursor": next_cursor}

    async def summary(self, user_id: int | None) -> dict:
        """The dashboard summary of one user, or of everyone (None)."""
        return await pipeline_summary(self.db, user_id)

    # -- creating --------------------------------------------------------------------------------
    async def _create(self, table: _Table, row: dict, counters: list[str]) -> tuple[dict, bool]:
        """Insert a record with its counters and `created` event; with an idempotency key this user
        used before, the record made then and created=False."""
        key = row["idempotency_key"]
        if key is not None:
            existing = await self._by_idempotency_key(table, row["user_id"], key)
            if existing is not None:
                return existing, False
        try:
            record = await self._run(functools.partial(_create_unit, table, row, counters))
        except INTEGRITY_ERRORS:
            # a concurrent request with the same idempotency key won the race
            existing = await self._by_idempotency_key(table, row["user_id"], key) if key is not None else None
            if existing is None:
                raise
            return existing, False
        return record, True

    async def _by_idempotency_key(self, table: _Table, user_id: int, key: str) -> dict | None:
        rows = await self.db.raw_fetch(f"{table.select} WHERE user_id = :u AND idempotency_key = :k",
                                       {"u": user_id, "k": key})
        return table.record(rows[0]) if rows else None

    async def create_job(self, user_id: int, body: NewPipelineJob, idempotency_key: str | None = None
                         ) -> tuple[dict, bool]:
        """Store a new pending (or queued) pipeline job; return (job, created)."""
        now = now_ms()
        row = {
            "job_id": time_ordered_id(), "user_id": user_id, "job_type": body.job_type, "repo": body.repo,
            "ref": body.ref, "commit_sha": body.commit_sha, "commit_message": body.commit_message,
            "commit_author": body.commit_author, "agent_id": body.agent_id, "status": body.status,
            "tags": orjson.dumps(body.tags).decode(), "metadata": orjson.dumps(body.metadata).decode(),
            "exit_code": None, "duration_seconds": None, "logs_url": None, "error_message": None,
            "created_at": now, "started_at": None, "updated_at": now, "finished_at": None, "heartbeat_at": None,
            "idempotency_key": idempotency_key,
        }
        return await self._create(JOBS, row, ["active"])

    async def check_jobs(self, fields: Mapping[str, uuid.UUID | None], user_id: int, is_admin: bool) -> None:
        """400 naming the field when one of these pipeline job ids is not a job the user may see."""
        for field, job_id in fields.items():
            if job_id is None:
                continue
            rows = await self.db.raw_fetch("SELECT user_id FROM pipeline_jobs WHERE job_id = :j", {"j": str(job_id)})
            if not rows or (rows[0][0] != user_id and not is_admin):
                raise BadRequest(f"'{field}': no pipeline job {str(job_id)!r} of yours", code="validation_error",
                                 details={"field": field})

    async def create_deployment(self, user_id: int, body: NewDeployment, idempotency_key: str | None = None
                                ) -> tuple[dict, bool]:
        """Store a new pending deployment; return (deployment, created)."""
        now = now_ms()
        row = {
            "id": time_ordered_id(), "user_id": user_id, "service_name": body.service_name, "version": body.version,
            "commit_sha": body.commit_sha, "commit_message": body.commit_message,
            "commit_author": body.commit_author,
            "build_job_id": str(body.build_job_id) if body.build_job_id else None,
            "test_job_id": str(body.test_job_id) if body.test_job_id else None, "cluster": body.cluster,
            "status": D.PENDING.value, "staging_job_id": None, "staged_at": None, "production_job_id": None,
            "live_at": None, "rolled_back_at": None, "rolled_back_to": None, "rollback_reason": None,
            "error_rate": None, "latency_ms": None, "requests_per_sec": None, "metrics_at": None,
            "failure_reason": None, "regression_checked": False, "created_at": now, "updated_at": now,
            "idempotency_key": idempotency_key,
        }
        return await self._create(DEPLOYMENTS, row, [f"deployments:{day_of(now)}"])

    # -- changing --------------------------------------------------------------------------------
    async def _change(self, table: _Table, record_id: str, user_id: int, is_admin: bool, *,
                      allowed_from: Sequence[str], sets: str, params: dict, kind: str,
                      after: After | None = None) -> dict | None:
        """One conditional UPDATE (the record, visible to the user, in one of `allowed_from`), what
        follows from it (`after`) and its event, in one transaction; None when nothing matched."""
        now = now_ms()
        marks, values = _marks("from", allowed_from)
        values.update(params, id=record_id, now=now)
        owner = ""
        if not is_admin:
            owner, values["u"] = " AND user_id = :u", user_id
        sql = (f"UPDATE {table.name} SET {sets}, updated_at = :now WHERE {table.key} = :id AND status IN ({marks})"
               + owner + table.returning)
        return await self._run(functools.partial(_change_unit, table, sql, values, record_id, kind, now, after))

    async def update_job(self, job_id: str, user_id: int, is_admin: bool, body: PipelineJobUpdate) -> dict:
        """A status change while the job runs (queued, running, cancelled), or a heartbeat (no status).

        Asking for the status the job already has is a heartbeat while it is active, and changes
        nothing once it is cancelled (an agent retrying)."""
        requested = body.status
        if requested is None:
            job = await self._change(JOBS, job_id, user_id, is_admin, allowed_from=ACTIVE_PIPELINE,
                                     sets="heartbeat_at = :now", params={}, kind="heartbeat")
            if job is not None:
                return job
            current = await self.get_job(job_id, user_id, is_admin)
            raise _illegal(JOBS, current["status"], "heartbeat")
        if requested == P.CANCELLED.value:
            job = await self._change(
                JOBS, job_id, user_id, is_admin, allowed_from=ACTIVE_PIPELINE, kind="status",
                sets="status = :status, finished_at = :now, duration_seconds = (:now - started_at) / 1000.0",
                params={"status": requested}, after=_job_finished_unit)
        elif requested == P.RUNNING.value:
            started = body.started_ms()
            job = await self._change(
                JOBS, job_id, user_id, is_admin, allowed_from=(P.PENDING.value, P.QUEUED.value), kind="status",
                sets="status = :status, started_at = :started",
                params={"status": requested, "started": now_ms() if started is None else started})
        else:
            job = await self._change(JOBS, job_id, user_id, is_admin, allowed_from=(P.PENDING.value,),
                                     kind="status", sets="status = :status", params={"status": requested})
        if job is not None:
            return job
        current = await self.get_job(job_id, user_id, is_admin)
        if current["status"] == requested:
            if requested in ACTIVE_PIPELINE:
                return await self.update_job(job_id, user_id, is_admin, PipelineJobUpdate())
            return current
        raise _illegal(JOBS, current["status"], requested)

    async def complete_job(self, job_id: str, user_id: int, is_admin: bool, body: PipelineJobCompletion) -> dict:
        """Finish an active job: exit code 0 → success, another → failed, or the status sent. The
        same completion again returns the job unchanged."""
        status = body.final_status()
        job = await self._change(
            JOBS, job_id, user_id, is_admin, allowed_from=ACTIVE_PIPELINE, kind="status",
            sets="status = :status, exit_code = :exit_code, logs_url = :logs_url, error_message = :error_message, "
                 "finished_at = :now, duration_seconds = COALESCE(CAST(:duration AS DOUBLE PRECISION), "
                 "(:now - started_at) / 1000.0)",
            params={"status": status, "exit_code": body.exit_code, "logs_url": body.logs_url,
                    "error_message": body.error_message, "duration": body.duration_seconds},
            after=_job_finished_unit)
        if job is not None:
            return job
        current = await self.get_job(job_id, user_id, is_admin)
        given = body.model_dump(include=body.model_fields_set - {"status"})
        if current["status"] == status and all(current[field] == value for field, value in given.items()):
            return current
        raise _illegal(JOBS, current["status"], status)

    async def time_out(self, cutoff_ms: int, message: str, limit: int = 500) -> list[dict]:
        """Running jobs with no heartbeat or update since `cutoff_ms` become `timeout` (up to
        `limit` at a time). The UPDATE re-checks each row, so when several nodes sweep at once each
        job times out once, on one of them."""
        now = now_ms()
        stale = "status = :running AND COALESCE(heartbeat_at, updated_at) < :cutoff"
        params = {"running": P.RUNNING.value, "timeout": P.TIMEOUT.value, "cutoff": cutoff_ms, "now": now,
                  "message": message, "limit": limit}
        sql = ("UPDATE pipeline_jobs SET status = :timeout, finished_at = :now, updated_at = :now, "
               "duration_seconds = (:now - started_at) / 1000.0, error_message = COALESCE(error_message, :message) "
               f"WHERE {stale} AND job_id IN (SELECT job_id FROM pipeline_jobs WHERE {stale} LIMIT :limit)"
               + JOBS.returning)
        return await self._run(functools.partial(_time_out_unit, sql, params, now))

    async def stage(self, deployment_id: str, user_id: int, is_admin: bool, body: DeploymentStep) -> dict:
        """Deployed to staging (`staged`), or being deployed there (`staging`, with in_progress)."""
        await self.check_jobs({"job_id": body.job_id}, user_id, is_admin)
        if body.in_progress:
            status, allowed, sets = D.STAGING.value, (D.PENDING.value,), "status = :status, staging_job_id = :job"
        else:
            status, allowed = D.STAGED.value, (D.PENDING.value, D.STAGING.value)
            sets = "status = :status, staging_job_id = :job, staged_at = :now"
        return await self._step(deployment_id, user_id, is_admin, status, allowed, sets, {"job": str(body.job_id)},
                                same=lambda d: d["staging_job_id"] == str(body.job_id))

    async def promote(self, deployment_id: str, user_id: int, is_admin: bool, body: DeploymentStep) -> dict:
        """Deployed to production (`live`), or being deployed there (`production`, with in_progress)."""
        await self.check_jobs({"job_id": body.job_id}, user_id, is_admin)
        if body.in_progress:
            status, allowed = D.PRODUCTION.value, (D.STAGED.value,)
            sets, after = "status = :status, production_job_id = :job", None
        else:
            status, allowed = D.LIVE.value, (D.STAGED.value, D.PRODUCTION.value)
            sets, after = "status = :status, production_job_id = :job, live_at = :now", _went_live_unit
        return await self._step(deployment_id, user_id, is_admin, status, allowed, sets, {"job": str(body.job_id)},
                                same=lambda d: d["production_job_id"] == str(body.job_id), after=after)

    async def roll_back(self, deployment_id: str, user_id: int, is_admin: bool, body: DeploymentRollback) -> dict:
        """Undo a deployment that reached staging or production: `rolled_back`."""
        return await self._step(
            deployment_id, user_id, is_admin, D.ROLLED_BACK.value, (D.STAGED.value, D.LIVE.value),
            "status = :status, rolled_back_at = :now, rolled_back_to = :to, rollback_reason = :reason",
            {"to": body.rolled_back_to, "reason": body.reason}, after=_rolled_back_unit,
            same=lambda d: d["rolled_back_to"] == body.rolled_back_to and d["rollback_reason"] == body.reason)

    async def fail(self, deployment_id: str, user_id: int, is_admin: bool, body: DeploymentFailure) -> dict:
        """Give up on a deployment before it went live: `failed`."""
        before_live = (D.PENDING.value, D.STAGING.value, D.STAGED.value, D.PRODUCTION.value)
        return await self._step(deployment_id, user_id, is_admin, D.FAILED.value, before_live,
                                "status = :status, failure_reason = :reason", {"reason": body.reason},
                                same=lambda d: d["failure_reason"] == body.reason)

    async def _step(self, deployment_id: str, user_id: int, is_admin: bool, status: str, allowed: Sequence[str],
                    sets: str, params: dict, *, same: Callable[[dict], bool],
                    after: After | None = None) -> dict:
        """A deployment's status change; the same step again (same values) returns it unchanged."""
        deployment = await self._change(DEPLOYMENTS, deployment_id, user_id, is_admin, allowed_from=allowed,
                                        sets=sets, params={**params, "status": status}, kind="status", after=after)
        if deployment is not None:
            return deployment
        current = await self.get_deployment(deployment_id, user_id, is_admin)
        if current["status"] == status and same(current):
            return current
        raise _illegal(DEPLOYMENTS, current["status"], status)

    async def record_metrics(self, deployment_id: str, user_id: int, is_admin: bool, body: DeploymentMetrics) -> dict:
        """What was observed after the deploy (the values sent replace those before; the others stay)."""
        deployed = (D.STAGED.value, D.PRODUCTION.value, D.LIVE.value, D.ROLLED_BACK.value)
        deployment = await self._change(
            DEPLOYMENTS, deployment_id, user_id, is_admin, allowed_from=deployed, kind="metrics",
            sets="error_rate = COALESCE(CAST(:error_rate AS DOUBLE PRECISION), error_rate), "
                 "latency_ms = COALESCE(CAST(:latency_ms AS DOUBLE PRECISION), latency_ms), "
                 "requests_per_sec = COALESCE(CAST(:requests_per_sec AS DOUBLE PRECISION), requests_per_sec), "
                 "metrics_at = :now",
            params=body.model_dump())
        if deployment is not None:
            return deployment
        current = await self.get_deployment(deployment_id, user_id, is_admin)
        raise _illegal(DEPLOYMENTS, current["status"], "metrics")

    # -- the deploy-regression check ---------------------------------------------------------------
    async def claim_regression_checks(self, live_until_ms: int, live_since_ms: int, limit: int = 100) -> list[dict]:
        """Live deployments on a cluster that went live between the two times and were not checked
        yet, marked checked: each is handed to exactly one caller, on one node."""
        where = ("status = :live AND live_at >= :since AND live_at <= :until AND cluster IS NOT NULL "
                 "AND regression_checked = :no")
        params = {"live": D.LIVE.value, "since": live_since_ms, "until": live_until_ms, "no": False, "yes": True,
                  "limit": limit}
        rows = await self.db.run_unit(functools.partial(
            _rows_unit, f"UPDATE deployments SET regression_checked = :yes WHERE {where} AND id IN "
            f"(SELECT id FROM deployments WHERE {where} ORDER BY live_at LIMIT :limit)" + DEPLOYMENTS.returning, params))
        return [DEPLOYMENTS.record(row) for row in rows]

    async def live_before(self, deployment: dict) -> dict | None:
        """The deployment of the same service (anyone's) that was live before this one went live and
        is still live: what to roll back to."""
        rows = await self.db.raw_fetch(
            f"{DEPLOYMENTS.select} WHERE service_name = :s AND status = :live AND live_at < :at AND id != :id "
            "ORDER BY live_at DESC, id DESC LIMIT 1",
            {"s": deployment["service_name"], "live": D.LIVE.value, "at": parse_iso(deployment["live_at"]),
             "id": deployment["id"]})
        return DEPLOYMENTS.record(rows[0]) if rows else None

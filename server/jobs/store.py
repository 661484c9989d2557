"""The job store: jobs, their customers, their events and the aggregates, in the database.

Every change of a job happens in one transaction that also appends its `job_events` row (with
an event id that increases per user in commit order) and updates the `job_counts` and
`daily_stats` aggregates, so stats never scan the jobs table and a replay never misses a change.
After the commit the store hands the new events to its subscribers (the Socket.IO layer).
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Sequence

import sqlalchemy as sa

from server.db import INTEGRITY_ERRORS, Db
from server.db import schema as tables
from server.errors import BadRequest, Conflict, Forbidden, NotFound
from server.jobs.catalogue import Action
from server.jobs.cursors import CursorCodec
from server.jobs.events import append_events, publish_events
from server.parsing import like_escape
from server.stats import histogram
from server.timeutil import day_of, iso, now_ms

logger = logging.getLogger(__name__)

# the columns of `jobs`, in the order the raw queries below return them
JOB_COLUMNS = tuple(column.name for column in tables.jobs.columns)
RETURNING_JOB = " RETURNING " + ", ".join(JOB_COLUMNS)


class JobStatus(str, enum.Enum):
    QUEUED = "QUEUED"  # stored, waiting for a worker to claim it
    IN_PROGRESS = "IN_PROGRESS"  # a worker is sending its batches
    SUCCESS = "SUCCESS"  # every customer succeeded
    FAILED = "FAILED"  # every customer failed
    PARTIAL = "PARTIAL"  # some customers failed
    CANCELLED = "CANCELLED"  # stopped by its owner before every customer was sent; unsent ones are SKIPPED


FINAL_STATUSES = {JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.PARTIAL, JobStatus.CANCELLED}
ACTIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)


class CustomerStatus(str, enum.Enum):
    PENDING = "PENDING"  # not sent yet, or sent without a recorded answer
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # the job was cancelled before this customer was sent


@dataclass
class Batch:
    """The customers of one batch still waiting for an answer."""

    number: int
    cids: list[str]


@dataclass
class BatchOutcome:
    """What the cluster said about one batch: per-customer results or one error for all."""

    http_status: int | None
    results: dict[str, str | None] = field(default_factory=dict)  # cid -> None (ok) or error
    error: str | None = None  # set when the whole batch failed


EventSubscriber = Callable[[list[dict]], Awaitable[None]]


def public_job(row) -> dict:
    """A job as clients see it."""
    r = row._mapping if hasattr(row, "_mapping") else row
    return {
        "job_id": r["job_id"], "user_id": r["user_id"], "action_name": r["action_name"],
        "action_code": r["action_code"], "cluster": r["cluster"], "status": r["status"],
        "customer_count": r["customer_count"], "done": r["done"], "failed": r["failed"],
        "http_status": r["http_status"], "error_message": r["error_message"],
        "created_at": iso(r["created_at"]), "started_at": iso(r["started_at"]),
        "updated_at": iso(r["updated_at"]), "finished_at": iso(r["finished_at"]),
        "duration_ms": r["duration_ms"], "batch_id": r["batch_id"], "parent_job_id": r["parent_job_id"],
        "idempotency_key": r["idempotency_key"], "cancel_requested": bool(r["cancel_requested"]),
        "attempts": r["attempts"],
    }


def parse_job_id(raw: object, field: str = "job_id") -> str:
    """A job (or other record) id must be a UUID; anything else is a 400 naming `field` before
    touching the database."""
    try:
        return str(uuid.UUID(str(raw)))
    except (ValueError, TypeError):
        raise BadRequest(f"Malformed '{field}': expected a UUID", code="validation_error",
                         details={"field": field}) from None


class JobStore:
    """Reads and changes jobs; every change commits its event and aggregates with it."""

    def __init__(self, db: Db, cursors: CursorCodec, subscribers: Sequence[EventSubscriber] = ()):
        self.db = db
        self.cursors = cursors
        # called with the new events after each commit that appended some (the realtime layer)
        self._subscribers = tuple(subscribers)

    async def _publish(self, events: list[dict]) -> None:
        await publish_events(self._subscribers, events)

    # -- helpers inside a transaction ------------------------------------------------------
    async def _append_events(self, user_id: int, job: dict, kinds: list[str], now: int) -> list[dict]:
        return await append_events(self.db, user_id, "job", job["job_id"], job, kinds, now)

    async def _count(self, user_id: int, status: str, delta: int) -> None:
        await self.db.raw_fetch(
            "INSERT INTO job_counts (user_id, status, n) VALUES (:u, :s, :d) "
            "ON CONFLICT (user_id, status) DO UPDATE SET n = job_counts.n + :d",
            {"u": user_id, "s": status, "d": delta},
        )

    async def _daily(self, row, day_ms: int, **deltas: int) -> None:
        columns = ("created", "success", "failed", "partial", "cancelled", "duration_sum_ms", "duration_count")
        values = {c: deltas.get(c, 0) for c in columns}
        updates = ", ".join(f"{c} = daily_stats.{c} + :{c}" for c in columns)
        await self.db.execute(
            "INSERT INTO daily_stats (day, user_id, action_name, cluster, " + ", ".join(columns) + ") "
            "VALUES (:day, :u, :a, :c, " + ", ".join(f":{c}" for c in columns) + ") "
            "ON CONFLICT (day, user_id, action_name, cluster) DO UPDATE SET " + updates,
            {"day": day_of(day_ms), "u": row["user_id"], "a": row["action_name"], "c": row["cluster"], **values},
        )

    # -- creating ------------------------------------------------------------------------------
    async def create_job(self, *, user_id: int, action: Action, cluster: str, cids: list[str],
                         batch_size: int, idempotency_key: str | None = None, batch_id: str | None = None,
                         parent_job_id: str | None = None) -> tuple[dict, bool]:
        """Store a new QUEUED job with its customers; return (job, created).

        With an idempotency key already used by this user, return that job and created=False.
        """
        if idempotency_key is not None:
            existing = await self.by_idempotency_key(user_id, idempotency_key)
            if existing is not None:
                return existing, False
        job_id = str(uuid.uuid4())
        now = now_ms()
        row = {
            "job_id": job_id, "user_id": user_id, "action_name": action.name, "action_code": action.code,
            "cluster": cluster, "status": JobStatus.QUEUED.value, "customer_count": len(cids), "done": 0,
            "failed": 0, "http_status": None, "error_message": None, "created_at": now, "started_at": None,
            "updated_at": now, "finished_at": None, "duration_ms": None, "batch_id": batch_id,
            "parent_job_id": parent_job_id, "idempotency_key": idempotency_key, "batch_size": batch_size,
            "attempts": 0, "lease_owner": None, "lease_expires_at": None, "cancel_requested": False,
            "stuck_alerted": False,
        }
        try:
            async with self.db.transaction():
                await self.db.execute(tables.jobs.insert().values(**row))
                await self.db.insert_rows("job_customers", ("job_id", "seq", "cid", "status"),
                                          [(job_id, seq, cid, "PENDING") for seq, cid in enumerate(cids)])
                await self._count(user_id, JobStatus.QUEUED.value, 1)
                await self._daily(row, now, created=1)
                job = public_job(row)
                events = await self._append_events(user_id, job, ["created"], now)
        except INTEGRITY_ERRORS:
            # a concurrent request with the same idempotency key won the race
            if idempotency_key is None:
                raise
            existing = await self.by_idempotency_key(user_id, idempotency_key)
            if existing is None:
                raise
            return existing, False
        await self._publish(events)
        return job, True

    async def by_idempotency_key(self, user_id: int, key: str) -> dict | None:
        row = await self.db.fetch_one(sa.select(tables.jobs).where(
            tables.jobs.c.user_id == user_id, tables.jobs.c.idempotency_key == key))
        return public_job(row) if row else None

    # -- reading -------------------------------------------------------------------------------
    async def get_row(self, job_id: str):
        return await self.db.fetch_one(sa.select(tables.jobs).where(tables.jobs.c.job_id == job_id))

    async def get_for(self, job_id: object, user_id: int, is_admin: bool) -> dict:
        """The job if this user may see it: 404 when missing, 403 when it is someone else's."""
        row = await self.get_row(parse_job_id(job_id))
        if row is None:
            raise NotFound("No such job")
        if row.user_id != user_id and not is_admin:
            raise Forbidden("This job belongs to another user")
        return public_job(row)

    async def list_jobs(self, *, user_id: int | None, statuses: list[str] | None = None,
                        action: str | None = None, cluster: str | None = None, text: str | None = None,
                        cursor: str | None = None, limit: int = 50) -> dict:
        """Jobs newest first, one page at a time (keyset on created_at, job_id).

        Plain SQL on the driver: this is the most requested page, and building it through
        SQLAlchemy and `databases` records cost more than the query itself.
        """
        where, params = [], {"limit": limit + 1}
        if user_id is not None:
            where.append("user_id = :user_id")
            params["user_id"] = user_id
        if statuses:
            where.append("status IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")")
            params.update({f"s{i}": status for i, status in enumerate(statuses)})
        if action:
            where.append("action_name = :action")
            params["action"] = action
        if cluster:
            where.append("cluster = :cluster")
            params["cluster"] = cluster
        if text:
            # a job id prefix (ids are lowercase) or a whole CID
            where.append("(job_id LIKE :prefix ESCAPE '\\' "
                         "OR job_id IN (SELECT job_id FROM job_customers WHERE cid = :cid))")
            params.update(prefix=like_escape(text.lower()) + "%", cid=text)
        if cursor:
            created_at, job_id = self.cursors.decode(cursor, "jobs-mine", (int, str))
            where.append("(created_at, job_id) < (:after_at, :after_id)")
            params.update(after_at=created_at, after_id=job_id)
        rows = await self.db.raw_fetch(
            "SELECT " + ", ".join(JOB_COLUMNS) + " FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, job_id DESC LIMIT :limit", params)
        page = [dict(zip(JOB_COLUMNS, row)) for row in rows[:limit]]
        next_cursor = self.cursors.encode("jobs-mine", page[-1]["created_at"], page[-1]["job_id"]) if len(rows) > limit else None
        return {"jobs": [public_job(r) for r in page], "next_cursor": next_cursor}

    async def list_customers(self, job_id: str, *, status: str | None = None, after_seq: int = -1,
                             limit: int = 500) -> dict:
        c = tables.job_customers
        query = sa.select(c).where(c.c.job_id == job_id, c.c.seq > after_seq)
        if status:
            query = query.where(c.c.status == status)
        rows = await self.db.fetch_all(query.order_by(c.c.seq).limit(limit + 1))
        page = rows[:limit]
        return {
            "customers": [{"cid": r.cid, "status": r.status, "http_status": r.http_status,
                           "error_message": r.error_message, "updated_at": iso(r.updated_at)} for r in page],
            "next_cursor": self.cursors.encode("customers", job_id, page[-1].seq) if len(rows) > limit else None,
        }

    async def customer_summary(self, job_id: str) -> list[dict]:
        """Customers grouped by outcome and HTTP status, with an example error."""
        c = tables.job_customers
        rows = await self.db.fetch_all(
            sa.select(c.c.status, c.c.http_status, sa.func.count().label("n"),
                      sa.func.min(c.c.error_message).label("error"))
            .where(c.c.job_id == job_id).group_by(c.c.status, c.c.http_status)
            .order_by(c.c.status, c.c.http_status))
        return [{"status": r.status, "http_status": r.http_status, "count": r.n, "example_error": r.error}
                for r in rows]

    async def cids_with_status(self, job_id: str, statuses: Iterable[CustomerStatus]) -> list[str]:
        """The job's customers in these statuses, in the job's order."""
        c = tables.job_customers
        rows = await self.db.fetch_all(sa.select(c.c.cid).where(
            c.c.job_id == job_id, c.c.status.in_([s.value for s in statuses])).order_by(c.c.seq))
        return [r.cid for r in rows]

    async def customer_results(self, job_id: str) -> list[tuple]:
        """(cid, status, http_status, error_message, updated_at) of each customer, in the job's order."""
        c = tables.job_customers
        rows = await self.db.fetch_all(
            sa.select(c.c.cid, c.c.status, c.c.http_status, c.c.error_message, c.c.updated_at)
            .where(c.c.job_id == job_id).order_by(c.c.seq))
        return [(r.cid, r.status, r.http_status, r.error_message, r.updated_at) for r in rows]

    async def customers_of(self, job_id: str, cids: list[str]) -> set[str]:
        """Which of these CIDs are customers of the job."""
        c = tables.job_customers
        known: set[str] = set()
        for start in range(0, len(cids), 500):
            rows = await self.db.fetch_all(sa.select(c.c.cid).where(c.c.job_id == job_id,
                                                                    c.c.cid.in_(cids[start:start + 500])))
            known.update(row.cid for row in rows)
        return known

    # -- running -------------------------------------------------------------------------------
    async def claim(self, node_id: str, limit: int, lease_ms: int) -> list[str]:
        """Lease up to `limit` runnable jobs (new, or whose node stopped renewing) to this node."""
        j = tables.jobs
        now = now_ms()
        runnable = sa.and_(j.c.status.in_(ACTIVE_STATUSES),
                           sa.or_(j.c.lease_expires_at.is_(None), j.c.lease_expires_at < now))
        candidates = sa.select(j.c.job_id).where(runnable).order_by(j.c.created_at).limit(limit)
        rows = await self.db.fetch_all(
            j.update().where(j.c.job_id.in_(candidates.scalar_subquery()), runnable)
            .values(lease_owner=node_id, lease_expires_at=now + lease_ms, attempts=j.c.attempts + 1)
            .returning(j.c.job_id))
        return [r.job_id for r in rows]

    async def renew_leases(self, node_id: str, job_ids: list[str], lease_ms: int) -> set[str]:
        """Extend this node's leases; return the jobs it still holds or that have just finished.

        `finish` clears the lease, so a job finished here, whose task is still publishing its
        last events, is not taken for one lost to another node.
        """
        if not job_ids:
            return set()
        j = tables.jobs
        rows = await self.db.fetch_all(
            j.update().where(j.c.job_id.in_(job_ids), j.c.lease_owner == node_id)
            .values(lease_expires_at=now_ms() + lease_ms).returning(j.c.job_id))
        held = {r.job_id for r in rows}
        others = [job_id for job_id in job_ids if job_id not in held]
        if others:
            finished = await self.db.fetch_all(sa.select(j.c.job_id).where(
                j.c.job_id.in_(others), j.c.status.not_in(ACTIVE_STATUSES)))
            held.update(r.job_id for r in finished)
        return held

    async def release(self, node_id: str, job_ids: list[str]) -> None:
        """Give leases back (on shutdown) so another node can take the jobs at once."""
        if job_ids:
            j = tables.jobs
            await self.db.execute(j.update().where(j.c.job_id.in_(job_ids), j.c.lease_owner == node_id)
                                  .values(lease_owner=None, lease_expires_at=None))

    async def start(self, job_id: str) -> dict:
        """QUEUED → IN_PROGRESS (a job already in progress, resumed after a restart, stays)."""
        j = tables.jobs
        now = now_ms()
        async with self.db.transaction():
            row = await self.db.fetch_one(
                j.update().where(j.c.job_id == job_id, j.c.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.IN_PROGRESS.value, started_at=now, updated_at=now).returning(j))
            events = []
            if row is not None:
                await self._count(row.user_id, JobStatus.QUEUED.value, -1)
                await self._count(row.user_id, JobStatus.IN_PROGRESS.value, 1)
                events = await self._append_events(row.user_id, public_job(row), ["status"], now)
        await self._publish(events)
        if row is None:
            row = await self.get_row(job_id)
        return public_job(row)

    async def pending_batches(self, job_id: str, batch_size: int) -> list[Batch]:
        """The batches with customers still PENDING, in order."""
        rows = await self.db.raw_fetch(
            "SELECT seq, cid FROM job_customers WHERE job_id = :j AND status = 'PENDING' ORDER BY seq",
            {"j": job_id})
        batches: dict[int, Batch] = {}
        for seq, cid in rows:
            number = seq // batch_size
            batches.setdefault(number, Batch(number, [])).cids.append(cid)
        return list(batches.values())

    async def record_batch(self, job_id: str, batch: Batch, batch_size: int, outcome: BatchOutcome,
                           *, progress_event: bool = True) -> dict:
        """Store one batch's outcome per customer, the job's progress and (if asked) a progress event.

        The runner paces progress events per job; progress it holds back is written later by
        `record_progress`, so a client always sees the latest counts.
        """
        now = now_ms()
        # the batch's customers still waiting for an answer (a batch re-sent after a restart
        # finds the ones recorded before gone)
        in_batch = ("WHERE job_id = :j AND seq >= :first AND seq < :end AND status = 'PENDING'")
        where = {"j": job_id, "first": batch.number * batch_size, "end": (batch.number + 1) * batch_size}
        async with self.db.transaction():
            failed = 0
            if outcome.error is not None:
                rows = await self.db.raw_fetch(
                    "UPDATE job_customers SET status = 'FAILED', http_status = :h, error_message = :e, "
                    "updated_at = :now " + in_batch + " RETURNING seq",
                    {**where, "h": outcome.http_status, "e": outcome.error, "now": now})
                done = failed = len(rows)
                first_error = outcome.error
            else:
                by_error: dict[str, list[str]] = {}
                for cid, error in outcome.results.items():
                    if error is not None:
                        by_error.setdefault(error, []).append(cid)
                for error, cids in by_error.items():
                    marks = ", ".join(f":c{i}" for i in range(len(cids)))
                    rows = await self.db.raw_fetch(
                        "UPDATE job_customers SET status = 'FAILED', http_status = :h, error_message = :e, "
                        f"updated_at = :now {in_batch} AND cid IN ({marks}) RETURNING seq",
                        {**where, "h": outcome.http_status, "e": error, "now": now,
                         **{f"c{i}": cid for i, cid in enumerate(cids)}})
                    failed += len(rows)
                rows = await self.db.raw_fetch(
                    "UPDATE job_customers SET status = 'SUCCESS', http_status = :h, error_message = NULL, "
                    "updated_at = :now " + in_batch + " RETURNING seq",
                    {**where, "h": outcome.http_status, "now": now})
                done = failed + len(rows)
                first_error = next(iter(by_error), None)
            values = {"j": job_id, "d": done, "f": failed, "now": now}
            sets = "done = done + :d, failed = failed + :f, updated_at = :now"
            if failed:
                sets += ", http_status = :h, error_message = COALESCE(error_message, :e)"
                values.update(h=outcome.http_status, e=first_error)
            (updated,) = await self.db.raw_fetch(
                f"UPDATE jobs SET {sets} WHERE job_id = :j" + RETURNING_JOB, values)
            job = public_job(dict(zip(JOB_COLUMNS, updated)))
            events = (await self._append_events(job["user_id"], job, ["progress"], now)
                      if done and progress_event else [])
        await self._publish(events)
        return job

    async def record_progress(self, job_id: str) -> None:
        """Append a progress event with the job's current counts (while it is still running)."""
        j = tables.jobs
        now = now_ms()
        async with self.db.transaction():
            # FOR UPDATE (PostgreSQL): wait for a batch being recorded, so counts never go backwards
            row = await self.db.fetch_one(sa.select(j).where(j.c.job_id == job_id).with_for_update())
            if row is None or row.status != JobStatus.IN_PROGRESS.value:
                return  # a finished job's status event already carries its final counts
            events = await self._append_events(row.user_id, public_job(row), ["progress"], now)
        await self._publish(events)

    async def finish(self, job_id: str) -> dict:
        """Close a job whose batches are all answered (or that was cancelled): its final status."""
        c, j = tables.job_customers, tables.jobs
        now = now_ms()
        async with self.db.transaction():
            # locked until commit (PostgreSQL; SQLite's writer holds the file): a concurrent finish
            # (cancel and runner) or start waits, then sees this one's result, so the aggregates
            # move once and from the status the job really had
            row = await self.db.fetch_one(sa.select(j).where(j.c.job_id == job_id).with_for_update())
            if row is None or JobStatus(row.status) in FINAL_STATUSES:
                return public_job(row) if row else {}
            skipped = 0
            if row.cancel_requested:
                rows = await self.db.fetch_all(c.update().where(
                    c.c.job_id == job_id, c.c.status == CustomerStatus.PENDING.value)
                    .values(status=CustomerStatus.SKIPPED.value, updated_at=now).returning(c.c.seq))
                skipped = len(rows)
            status, message = _final_status(row, skipped)
            duration = now - (row.started_at or row.created_at)
            http_status = row.http_status if row.failed else (row.http_status or 200 if row.done else None)
            updated = await self.db.fetch_one(j.update().where(j.c.job_id == job_id).values(
                status=status.value, finished_at=now, updated_at=now, duration_ms=duration,
                error_message=message, http_status=http_status, lease_owner=None, lease_expires_at=None,
            ).returning(j))
            await self._count(row.user_id, row.status, -1)
            await self._count(row.user_id, status.value, 1)
            await self._daily(row, now, **{status.value.lower(): 1, "duration_sum_ms": duration, "duration_count": 1})
            await histogram.add_finished(self.db, day_of(now), row.action_name, row.cluster, duration)
            job = public_job(updated)
            events = await self._append_events(row.user_id, job, ["status"], now)
        await self._publish(events)
        return job

    async def request_cancel(self, job_id: str) -> dict:
        """Cancel a job: a QUEUED one at once; an IN_PROGRESS one sends no further batch.

        The request is an event of its own (`cancel_requested`) in the job's history, whatever the
        job ends as: one whose every customer was already sent ends with the status its answers give.
        Asking again while the job is still stopping changes nothing.
        """
        j = tables.jobs
        now = now_ms()
        async with self.db.transaction():
            row = await self.db.fetch_one(
                j.update().where(j.c.job_id == job_id, j.c.status.in_(ACTIVE_STATUSES),
                                 j.c.cancel_requested.is_(False))
                .values(cancel_requested=True, updated_at=now).returning(j))
            events = []
            if row is not None:
                events = await self._append_events(row.user_id, public_job(row), ["cancel_requested"], now)
        await self._publish(events)
        if row is None:
            current = await self.get_row(job_id)
            if current is not None and current.status in ACTIVE_STATUSES:
                return public_job(current)  # asked before: the job is stopping
            raise Conflict(f"The job is already {current.status if current else 'gone'}; only a queued or "
                           "running job can be cancelled")
        if row.status == JobStatus.QUEUED.value and row.lease_owner is None:
            return await self.finish(job_id)
        return public_job(row)

    async def customer_outcomes(self, cluster: str, from_ms: int, to_ms: int) -> tuple[int, int]:
        """(answered, failed): the customers of Set Actions on `cluster` the cluster answered between
        the two times (a job's customers count by when each was answered; jobs created up to one
        range length before it are looked at, so a job that spans its start counts in part)."""
        (answered, failed), = await self.db.raw_fetch(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN c.status = 'FAILED' THEN 1 ELSE 0 END), 0) "
            "FROM jobs j JOIN job_customers c ON c.job_id = j.job_id "
            "WHERE j.created_at >= :lookback AND j.created_at < :to AND j.cluster = :cluster "
            "AND c.status IN ('SUCCESS', 'FAILED') AND c.updated_at >= :from AND c.updated_at < :to",
            {"cluster": cluster, "from": from_ms, "to": to_ms, "lookback": from_ms - (to_ms - from_ms)})
        return int(answered), int(failed)

    async def flag_stuck(self, stuck_after_ms: int) -> list[dict]:
        """Jobs IN_PROGRESS longer than the limit, not yet alerted; marks them alerted."""
        j = tables.jobs
        rows = await self.db.fetch_all(
            j.update().where(j.c.status == JobStatus.IN_PROGRESS.value, j.c.stuck_alerted.is_(False),
                             j.c.started_at < now_ms() - stuck_after_ms)
            .values(stuck_alerted=True).returning(j))
        return [public_job(r) for r in rows]


def _final_status(row, skipped: int) -> tuple[JobStatus, str | None]:
    """The final status of a job and the message a user reads in its tooltip.

    A cancel that came after the last batch was sent kept no customer from being sent (none is
    skipped): the job ends as its answers say, and its history keeps the `cancel_requested` event.
    """
    if row.cancel_requested and skipped:
        return JobStatus.CANCELLED, f"Cancelled by its owner; {skipped} customer(s) were not sent"
    if row.failed == 0:
        return JobStatus.SUCCESS, None
    reason = row.error_message or "failed on the cluster"
    if row.failed >= row.customer_count:
        return JobStatus.FAILED, (reason if row.customer_count == 1
                                  else f"All {row.customer_count} customers failed: {reason}")
    return JobStatus.PARTIAL, f"{row.failed} of {row.customer_count} customers failed: {reason}"

"""Retention: a background task that prunes old job events and old finished jobs' customer rows.

Jobs themselves and the aggregates (job_counts, daily_stats, duration_histogram) are kept, so
every figure and the job list stay whole. Deletes go in bounded chunks, each its own short
transaction, so writers are never held up for long. One node at a time does the work (a lease
row in `retention_state`), and where it got to among finished jobs is kept there too, so a run
only looks at jobs finished since the last one.

    JOBMON_EVENT_RETENTION_DAYS  job events older than this go (replay then says `resync`)
    JOBMON_RETENTION_DAYS        customer rows of jobs finished longer ago go; 0 keeps them
    JOBMON_RETENTION_INTERVAL    seconds between runs
    JOBMON_RETENTION_CHUNK       rows per delete statement
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import sqlalchemy as sa

from server.config import Settings
from server.db import Db
from server.db import schema as tables
from server.db.outage import OutageLog
from server.errors import DatabaseOutage
from server.periodic import OUTAGE_RETRY_SECONDS
from server.timeutil import iso, now_ms

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
STATE = "customers"
JOBS_PER_STEP = 500
PAUSE_SECONDS = 0.005  # between chunks: lets other writers take the (SQLite) write lock


class RetentionTask:
    """Runs `run_once` every `retention_interval` seconds until stopped."""

    def __init__(self, db: Db, settings: Settings):
        self.db = db
        self.event_days = settings.event_retention_days
        self.customer_days = settings.retention_days
        self.interval = settings.retention_interval
        self.chunk = settings.retention_chunk
        self.node_id = f"retention-{uuid.uuid4().hex[:12]}"
        self._task: asyncio.Task | None = None
        self.runs = 0
        self.last_run: dict | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="jobmon-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._release()
        except Exception:
            logger.exception("could not release the retention lease")

    def status(self) -> dict:
        """The policy and what this node's last run did."""
        return {"event_retention_days": self.event_days, "retention_days": self.customer_days,
                "interval_seconds": self.interval, "chunk": self.chunk, "node": self.node_id,
                "runs": self.runs, "last_run": self.last_run, "last_error": self.last_error}

    async def _loop(self) -> None:
        delay = self.interval
        paused = OutageLog(logger, "retention")
        while True:
            try:
                await self.run_once()
                paused.succeeded()
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except DatabaseOutage as outage:
                # each chunk commits on its own: the run goes on where it stopped once the database answers
                self.last_error = f"{outage.code}: {outage.message}"
                delay = min(self.interval, OUTAGE_RETRY_SECONDS)
                paused.failed(outage, delay)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(max(delay * 2, 1.0), 3600.0)
                logger.exception("retention run failed; trying again in %s seconds.", delay)
            await asyncio.sleep(delay)

    async def run_once(self, now: int | None = None) -> dict:
        """Prune what is past its retention as of `now`; return what was removed."""
        now = now_ms() if now is None else now
        result = {"at": iso(now), "events": 0, "customers": 0, "jobs": 0, "skipped": False}
        if not await self._take_lease(now):
            result["skipped"] = True  # another node is on it
        else:
            try:
                result["events"] = await self._prune_events(now - self.event_days * DAY_MS)
                if self.customer_days > 0:
                    result["jobs"], result["customers"] = await self._prune_customers(
                        now - self.customer_days * DAY_MS)
            finally:
                await self._release()
        self.runs += 1
        self.last_run = result
        self.last_error = None
        if result["events"] or result["customers"]:
            logger.info("retention removed %s job events and %s customer rows of %s jobs",
                        result["events"], result["customers"], result["jobs"])
        return result

    async def _prune_events(self, cutoff: int) -> int:
        e = tables.job_events
        removed = 0
        while True:
            oldest = sa.select(e.c.id).where(e.c.created_at < cutoff).order_by(e.c.created_at).limit(self.chunk)
            rows = await self.db.fetch_all(e.delete().where(e.c.id.in_(oldest.scalar_subquery())).returning(e.c.id))
            removed += len(rows)
            if len(rows) < self.chunk:
                return removed
            await asyncio.sleep(PAUSE_SECONDS)

    async def _prune_customers(self, cutoff: int) -> tuple[int, int]:
        """Delete customer rows of jobs finished before `cutoff`, oldest first, from the watermark on."""
        j, c, state = tables.jobs, tables.job_customers, tables.retention_state
        row = await self.db.fetch_one(sa.select(state).where(state.c.name == STATE))
        mark = (row.finished_at, row.job_id) if row and row.finished_at is not None else None
        jobs_done = customers = 0
        while True:
            query = sa.select(j.c.job_id, j.c.finished_at, j.c.customer_count).where(
                j.c.finished_at.isnot(None), j.c.finished_at < cutoff)
            if mark is not None:
                query = query.where(sa.tuple_(j.c.finished_at, j.c.job_id) > sa.tuple_(*[sa.literal(v) for v in mark]))
            batch = await self.db.fetch_all(query.order_by(j.c.finished_at, j.c.job_id).limit(JOBS_PER_STEP))
            group: list[str] = []
            size = 0
            for job in batch:
                if job.customer_count > self.chunk:
                    # a big job by seq ranges: each statement removes at most `chunk` rows
                    for start in range(0, job.customer_count, self.chunk):
                        customers += await self._delete(c.c.job_id == job.job_id, c.c.seq >= start,
                                                         c.c.seq < start + self.chunk)
                    continue
                if size + job.customer_count > self.chunk:
                    customers += await self._delete(c.c.job_id.in_(group))
                    group, size = [], 0
                group.append(job.job_id)
                size += job.customer_count
            if group:
                customers += await self._delete(c.c.job_id.in_(group))
            if batch:
                mark = (batch[-1].finished_at, batch[-1].job_id)
                jobs_done += len(batch)
                await self._save_mark(mark)
                await self._take_lease(now_ms())  # still at it: keep the lease
            if len(batch) < JOBS_PER_STEP:
                return jobs_done, customers

    async def _delete(self, *conditions) -> int:
        c = tables.job_customers
        deleted = await self.db.fetch_all(c.delete().where(*conditions).returning(c.c.seq))
        await asyncio.sleep(PAUSE_SECONDS)
        return len(deleted)

    async def _save_mark(self, mark: tuple[int, str]) -> None:
        state = tables.retention_state
        await self.db.execute(state.update().where(state.c.name == STATE).values(
            finished_at=mark[0], job_id=mark[1], updated_at=now_ms()))

    async def _take_lease(self, now: int) -> bool:
        """Become the one node pruning, for a while; False when another node holds the lease."""
        state = tables.retention_state
        lease_ms = int(max(self.interval * 2, 600) * 1000)
        await self.db.execute(
            "INSERT INTO retention_state (name, updated_at) VALUES (:n, :t) ON CONFLICT (name) DO NOTHING",
            {"n": STATE, "t": now_ms()})
        rows = await self.db.fetch_all(
            state.update().where(state.c.name == STATE, sa.or_(
                state.c.lease_owner.is_(None), state.c.lease_owner == self.node_id,
                state.c.lease_expires_at < now_ms()))
            .values(lease_owner=self.node_id, lease_expires_at=now_ms() + lease_ms).returning(state.c.name))
        return bool(rows)

    async def _release(self) -> None:
        state = tables.retention_state
        await self.db.execute(state.update().where(state.c.name == STATE, state.c.lease_owner == self.node_id)
                              .values(lease_owner=None, lease_expires_at=None))

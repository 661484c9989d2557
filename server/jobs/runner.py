"""Runs jobs: claims them from the database under a lease, sends their batches, records outcomes.

Any node may run any job. A node holds a lease on the jobs it runs and renews it; when a node
dies its leases expire and another node (or the same one restarted) claims the jobs and sends
only the batches that have no recorded answer. Each batch carries the request id
`<job_id>:<batch_no>`, so a batch that reached the cluster before the crash is dropped there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Awaitable, Callable

from server.db.outage import OutageLog
from server.errors import AppError, DatabaseOutage
from server.jobs.store import Batch, BatchOutcome, JobStore
from server.upstream.client import TmsClient, UpstreamError
from server.upstream.clusters import ClusterRegistry

logger = logging.getLogger(__name__)

OUTAGE_RETRY_SECONDS = 2.0  # how often a node looks for the database again while it is down

# called after every batch with the job as it now is and the whole-batch error, if any
BatchDone = Callable[[dict, UpstreamError | None], Awaitable[None]]


class _ProgressPacer:
    """Lets one job write a progress event at most every `interval` seconds.

    A batch recorded without an event marks the job as moved; a timer then writes a progress
    event with the job's current counts once the interval has passed, so progress that moved is
    always shown within two intervals, and a 100,000-customer job writes a few events a second.
    """

    def __init__(self, store: JobStore, job_id: str, interval: float):
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self._last = float("-inf")  # loop time of the last progress event
        self._moved = False
        self._writing = False
        self._timer: asyncio.Task | None = None

    def claim(self) -> bool:
        """True if the batch about to be recorded may write its own progress event."""
        now = asyncio.get_running_loop().time()
        if now - self._last < self.interval:
            return False
        self._last = now
        self._moved = False
        return True

    def moved(self) -> None:
        """A batch was recorded without an event: make sure one follows."""
        self._moved = True
        if self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(), name=f"progress-{self.job_id}")

    async def _flush_later(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._moved:
                await asyncio.sleep(max(0.0, self._last + self.interval - loop.time()))
                if not self._moved:
                    return  # a batch wrote its own event meanwhile
                self._moved = False
                self._last = loop.time()
                self._writing = True
                try:
                    await self.store.record_progress(self.job_id)
                except DatabaseOutage:
                    pass  # the job's next batch, or its status event, carries the counts
                except Exception:
                    logger.exception("writing the progress event of job %s failed", self.job_id)
                finally:
                    self._writing = False
        finally:
            self._timer = None

    async def settle(self) -> None:
        """Before the job's status event: drop a pending flush, wait for one being written."""
        timer = self._timer
        if timer is None:
            return
        if not self._writing:
            timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class JobRunner:
    """The background worker of one server process."""

    def __init__(self, store: JobStore, clusters: ClusterRegistry, client: TmsClient, *,
                 job_concurrency: int, batch_concurrency: int, lease_seconds: float,
                 on_batch_done: BatchDone | None = None, poll_seconds: float = 1.0,
                 progress_interval: float = 0.25):
        self.store = store
        self.on_batch_done = on_batch_done
        self.clusters = clusters
        self.client = client
        self.node_id = f"node-{uuid.uuid4().hex[:12]}"
        self.job_concurrency = job_concurrency
        self.batch_concurrency = batch_concurrency
        self.lease_ms = int(lease_seconds * 1000)
        self.poll_seconds = min(poll_seconds, lease_seconds / 3)
        self.progress_interval = progress_interval
        # user tokens live only in this process's memory: never stored, never logged. A job
        # resumed elsewhere after a crash continues with the cluster's service token.
        self._user_tokens: dict[str, str] = {}
        self._running: dict[str, asyncio.Task] = {}
        self._lost: dict[str, asyncio.Event] = {}  # set when another node took the job over
        self._unreleased: set[str] = set()  # jobs stopped by a database outage, their leases still held
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        # one log line when a database outage pauses the claims, one when they resume
        self._claims_paused = OutageLog(logger, "claiming jobs")
        self._renewals_paused = OutageLog(logger, "renewing job leases")

    def submit(self, job_id: str, user_token: str | None) -> None:
        """A job was just created here: remember its token and claim it without waiting."""
        if user_token:
            self._user_tokens[job_id] = user_token
        self._wake.set()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._claim_loop(), name="jobmon-claim"),
                       asyncio.create_task(self._lease_loop(), name="jobmon-lease")]

    async def stop(self) -> None:
        """Stop claiming, stop running jobs, and give their leases back for another node."""
        self._stopping = True
        for task in self._tasks + list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._running.values(), return_exceptions=True)
        try:
            await self.store.release(self.node_id, [*self._running, *self._unreleased])
        except Exception:
            logger.exception("could not release job leases on shutdown")
        self._running.clear()

    async def _claim_loop(self) -> None:
        delay = self.poll_seconds
        while not self._stopping:
            try:
                if self._unreleased:
                    # jobs a database outage stopped here: give them back to be claimed at once
                    # (by this node or another) rather than after their lease
                    await self.store.release(self.node_id, list(self._unreleased))
                    self._unreleased.clear()
                free = self.job_concurrency - len(self._running)
                if free > 0:
                    for job_id in await self.store.claim(self.node_id, free, self.lease_ms):
                        task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
                        self._running[job_id] = task
                        task.add_done_callback(lambda _t, j=job_id: self._running.pop(j, None))
                self._claims_paused.succeeded()
                delay = self.poll_seconds
            except DatabaseOutage as outage:
                # no traceback per attempt, and no long back-off: the jobs resume soon after it answers
                delay = max(self.poll_seconds, min(OUTAGE_RETRY_SECONDS, self.lease_ms / 3000))
                self._claims_paused.failed(outage, delay)
            except Exception:
                delay = min(delay * 2, 30.0)
                logger.exception("claiming jobs failed; trying again in %s seconds.", delay)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _lease_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease_ms / 3000)
            running = list(self._running)  # jobs claimed while renewing are not judged on this round
            try:
                held = await self.store.renew_leases(self.node_id, running, self.lease_ms)
                self._renewals_paused.succeeded()
            except DatabaseOutage as outage:
                self._renewals_paused.failed(outage, self.lease_ms / 3000)
                continue
            except Exception:
                logger.exception("renewing job leases failed; trying again in %s seconds.", self.lease_ms / 3000)
                continue
            for job_id in running:
                lost = self._lost.get(job_id)
                if job_id not in held and lost is not None and not lost.is_set():
                    # another node took it over (this one stalled past its lease): let it finish
                    # there. The job sends no further batch here; it is not cancelled, since a
                    # task cancelled inside a database transaction could leave it half done.
                    logger.warning("lost the lease of job %s; stopping it here", job_id)
                    lost.set()

    async def _run(self, job_id: str) -> None:
        try:
            await self._execute(job_id)
        except asyncio.CancelledError:
            raise
        except DatabaseOutage:
            # its batches in flight were sent; the ones whose answer could not be recorded are sent
            # again (same request_id) when the job resumes
            logger.warning("job %s stopped: the database is unavailable; it resumes when the database "
                           "answers", job_id)
            self._unreleased.add(job_id)
        except Exception:
            logger.exception("job %s failed inside the runner; another attempt will pick it up", job_id)
            try:
                await self.store.release(self.node_id, [job_id])
            except Exception:
                logger.exception("could not release job %s", job_id)
        finally:
            self._user_tokens.pop(job_id, None)
            self._lost.pop(job_id, None)
            # a slot is free: look for more work now
            self._wake.set()

    async def _execute(self, job_id: str) -> None:
        row = await self.store.get_row(job_id)
        if row is None:
            return
        if row.cancel_requested:
            await self.store.finish(job_id)
            return
        try:
            cluster = self.clusters.get(row.cluster)
        except AppError:
            cluster = None
        await self.store.start(job_id)
        batches = await self.store.pending_batches(job_id, row.batch_size)
        token = self._user_tokens.get(job_id)
        cancelled = asyncio.Event()
        lost = self._lost.setdefault(job_id, asyncio.Event())
        pacer = _ProgressPacer(self.store, job_id, self.progress_interval)

        async def send(batch: Batch) -> None:
            error: UpstreamError | None = None
            if cluster is None:
                outcome = BatchOutcome(None, error=f"Cluster '{row.cluster}' is no longer configured")
            else:
                try:
                    results = await self.client.set_action(
                        cluster, row.action_name, row.action_code, batch.cids,
                        request_id=f"{job_id}:{batch.number}", user_token=token)
                    outcome = BatchOutcome(200, results={cid: (None if r.ok else r.error)
                                                         for cid, r in results.items()})
                except UpstreamError as exc:
                    error = exc
                    outcome = BatchOutcome(exc.http_status, error=exc.message)
            with_event = pacer.claim()
            job = await self.store.record_batch(job_id, batch, row.batch_size, outcome,
                                                progress_event=with_event)
            if not with_event:
                pacer.moved()
            if job.get("cancel_requested"):
                cancelled.set()
            if self.on_batch_done is not None:
                try:
                    await self.on_batch_done(job, error)
                except Exception:
                    logger.exception("after-batch callback failed")

        # batch_concurrency workers take the batches in order from one iterator: a task per
        # batch would be 100,000 waiting tasks for a job of 100,000 customers sent one by one
        pending = iter(batches)
        failed = asyncio.Event()  # a worker could not record its batch: the others take no new one

        async def worker() -> None:
            for batch in pending:
                if cancelled.is_set() or lost.is_set() or failed.is_set():
                    return
                try:
                    await send(batch)
                except BaseException:
                    failed.set()
                    raise

        try:
            # every worker ends (the batches in flight are answered) before the job is given up
            outcomes = await asyncio.gather(*(worker() for _ in range(min(self.batch_concurrency, len(batches)))),
                                            return_exceptions=True)
            errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if errors:
                raise errors[0]
            await pacer.settle()
        finally:
            pacer.cancel()
        if lost.is_set():
            return  # the node that took the job over finishes it
        await self.store.finish(job_id)

"""Timeouts: a running pipeline job with no heartbeat or update for JOBMON_PIPELINE_TIMEOUT seconds
becomes `timeout`.

Every node sweeps; the store's conditional UPDATE re-checks each row as it changes it, so when
several nodes sweep at once each job times out once, on one of them, and only that node publishes
its `pipeline-update`.
"""

from __future__ import annotations

import logging

from server.periodic import PeriodicTask
from server.pipelines.store import PipelineStore
from server.timeutil import now_ms

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500  # jobs timed out per transaction


class PipelineTimeouts:
    """Sweeps for silent running jobs every quarter of the timeout (at most every 30 seconds)."""

    def __init__(self, pipelines: PipelineStore, timeout_seconds: float):
        self.pipelines = pipelines
        self.timeout_seconds = timeout_seconds
        # every quarter of the period, at most every 30 s
        every = min(max(timeout_seconds / 4, 0.05), 30.0)  # a quarter of the period, at most 30 s
        self._periodic = PeriodicTask(every, "pipeline timeout sweep", self.sweep, "jobmon-pipeline-timeouts")

    def __repr__(self) -> str:
        return f"PipelineTimeouts(timeout={self.timeout_seconds:g}s)"

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def sweep(self) -> int:
        """Time out the jobs silent for longer than the timeout; return how many."""
        cutoff = now_ms() - int(self.timeout_seconds * 1000)
        message = f"No heartbeat or update for {self.timeout_seconds:g} s"
        total = 0
        while True:
            jobs = await self.pipelines.time_out(cutoff, message, limit=SWEEP_BATCH)
            total += len(jobs)
            if len(jobs) < SWEEP_BATCH:
                break
        if total:
            logger.info("%s pipeline job(s) timed out", total)
        return total

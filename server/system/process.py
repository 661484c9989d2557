"""What a node measures of its own process: CPU use, resident memory, and event-loop lag.

Standard library only: CPU from `time.process_time` deltas (every thread of the process),
memory from `/proc/self/statm` (Linux; elsewhere unknown, None), and the event loop's lag from a
sampler task that sleeps a fixed time and records how late it woke up: a loop busy with other
work (a long callback, a blocking call) wakes it late by as long as it was held up.
"""

from __future__ import annotations

import asyncio
import os
import time

LAG_SAMPLE_SECONDS = 0.25  # the sampler's sleep: a finer grain costs a wake-up per sample


def rss_bytes() -> int | None:
    """The process's resident memory now, in bytes (None where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU time used by this process between two readings, as a percentage of one core (above 100
    when several of its threads were busy at once)."""

    MIN_SPAN = 0.05

    def __init__(self):
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def __repr__(self) -> str:
        return f"CpuMeter(since={self._wall:.1f})"

    def percent(self) -> float | None:
        """Since the last reading (or since made); None when under MIN_SPAN seconds have passed
        (too short to mean anything; the next reading then covers that time too)."""
        cpu, wall = time.process_time(), time.monotonic()
        used, elapsed = cpu - self._cpu, wall - self._wall
        if elapsed < self.MIN_SPAN:
            return None
        self._cpu, self._wall = cpu, wall
        return round(100.0 * used / elapsed, 1)


class LoopLagSampler:
    """A task that sleeps LAG_SAMPLE_SECONDS at a time on the event loop and keeps how late each
    wake-up was: the worst and the mean since the last `take()`."""

    def __init__(self, sample_seconds: float = LAG_SAMPLE_SECONDS):
        self.sample_seconds = sample_seconds
        self._task: asyncio.Task | None = None
        self._worst = 0.0
        self._total = 0.0
        self._samples = 0

    def __repr__(self) -> str:
        return f"LoopLagSampler(every {self.sample_seconds:g} s, {self._samples} samples pending)"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobmon-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.sample_seconds)
            self._record(loop.time() - before - self.sample_seconds)

    def _record(self, late: float) -> None:
        late = max(late, 0.0)
        self._worst = max(self._worst, late)
        self._total += late
        self._samples += 1

    def take(self) -> tuple[float | None, float | None]:
        """(worst, mean) lag in milliseconds since the last call, and start over; (None, None)
        when no sample has completed since (a loop blocked right now shows at the next call)."""
        if self._samples == 0:
            return None, None
        worst_ms, mean_ms = self._worst * 1000, self._total / self._samples * 1000
        self._worst, self._total, self._samples = 0.0, 0.0, 0
        return round(worst_ms, 2), round(mean_ms, 2)

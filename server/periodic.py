"""The loop of every periodic background task: run some work every N seconds until cancelled,
backing off (doubling, up to a minute) while it fails, and logging the next delay. While the
database is unavailable the work pauses: one log line, a try every few seconds (not a minute
later), one log line when it answers again."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from server.db.outage import OutageLog
from server.errors import DatabaseOutage

logger = logging.getLogger(__name__)

OUTAGE_RETRY_SECONDS = 5.0  # at most this long between tries while the database is unavailable


async def every(seconds: float, what: str, work: Callable[[], Awaitable[object]]) -> None:
    """Await `work()` every `seconds` (the first time after one period) until the task is cancelled."""
    delay = seconds
    paused = OutageLog(logger, what)
    while True:
        await asyncio.sleep(delay)
        try:
            await work()
            paused.succeeded()
            delay = seconds
        except asyncio.CancelledError:
            raise
        except DatabaseOutage as outage:
            delay = min(seconds, OUTAGE_RETRY_SECONDS)
            paused.failed(outage, delay)
        except Exception:
            delay = min(max(delay * 2, seconds), 60.0)
            logger.exception("%s failed; trying again in %s seconds.", what, delay)


class PeriodicTask:
    """A background task that runs `work` every `seconds` (see `every`), started and stopped with
    the server."""

    def __init__(self, seconds: float, what: str, work: Callable[[], Awaitable[object]], name: str):
        self.seconds = seconds
        self._what = what
        self._work = work
        self._name = name
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"PeriodicTask({self._what!r}, every {self.seconds:g} s)"

    async def start(self) -> None:
        self._task = asyncio.create_task(every(self.seconds, self._what, self._work), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

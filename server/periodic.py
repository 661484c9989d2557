"""The loop of every periodic background task: run some work every N seconds until cancelled,
backing off (doubling, up to a minute) while it fails, and logging the next delay."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

logger = logging.getLogger(__name__)


async def every(seconds: float, what: str, work: Callable[[], Awaitable[object]]) -> None:
    """Await `work()` every `seconds` (the first time after one period) until the task is cancelled."""
    delay = seconds
    while True:
        await asyncio.sleep(delay)
        try:
            await work()
            delay = seconds
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = min(max(delay * 2, seconds), 60.0)
            logger.exception("%s failed; trying again in %s seconds.", what, delay)

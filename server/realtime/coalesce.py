"""Coalesced pushes: after a change of some key (a user, or None for the admins' all-users
figures), push once soon, and at most once every `min_gap` seconds per key; changes that come
meanwhile are folded into the next push. live_stats (job-stats) and dashboard_push
(dashboard-summary) push this way."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable

from server.errors import DatabaseOutage

logger = logging.getLogger(__name__)


class Coalesced:
    """`changed(key)` schedules `push(key)`; one pending push per key, `min_gap` apart."""

    def __init__(self, min_gap: float, push: Callable[[Hashable], Awaitable[None]], what: str):
        self.min_gap = min_gap
        self._push = push
        self.what = what  # named in the log when a push fails
        self._timers: dict[Hashable, asyncio.Task] = {}
        self._last: dict[Hashable, float] = {}  # loop time of each key's last push

    def __repr__(self) -> str:
        return f"Coalesced({self.what}, pending={len(self._timers)})"

    @property
    def pending(self) -> int:
        return len(self._timers)

    def changed(self, key: Hashable) -> None:
        if key not in self._timers:
            self._timers[key] = asyncio.create_task(self._push_later(key))

    async def _push_later(self, key: Hashable) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(max(0.0, self._last.get(key, float("-inf")) + self.min_gap - loop.time()))
            self._last[key] = loop.time()
            # a change from now on schedules another push
            self._timers.pop(key, None)
            await self._push(key)
        except asyncio.CancelledError:
            raise
        except DatabaseOutage as outage:  # the next change, or the periodic push, brings it up to date
            logger.info("pushing %s for %s skipped: %s", self.what, "admins" if key is None else f"user {key}",
                        outage.code)
        except Exception:
            logger.exception("pushing %s for %s failed", self.what, "admins" if key is None else f"user {key}")
        finally:
            if self._timers.get(key) is asyncio.current_task():
                del self._timers[key]

    def forget_older(self, seconds: float) -> None:
        """Drop what is remembered of keys not pushed for this long (the memory stays bounded)."""
        cutoff = asyncio.get_running_loop().time() - seconds
        for key in [k for k, at in self._last.items() if at < cutoff]:
            del self._last[key]

    async def stop(self) -> None:
        tasks = list(self._timers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()

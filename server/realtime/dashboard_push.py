"""Live `dashboard-summary`: the pipeline summary pushed to the sockets that asked for it
(`subscribe {"dashboard": true}`) after a user's pipeline jobs or deployments change.

As with `job-stats` (live_stats.py): a change schedules one push per user and one of the
all-users summary for the admins, at most every SUMMARY_MIN_GAP seconds, so a burst of agent
reports costs one summary query and one emit. The node where the change happened computes it
and emits it through the Socket.IO manager (Redis when configured), reaching every node's sockets.
"""

from __future__ import annotations

import asyncio
import logging

from server.db import Db
from server.pipelines.store import pipeline_summary
from server.realtime.emitter import Emitter, dashboard_room

logger = logging.getLogger(__name__)

SUMMARY_MIN_GAP = 0.5  # seconds between pushes of one user's summary (or of the admins')
TOPICS = ("pipeline", "deployment")


class DashboardPush:
    """Coalesced, change-triggered `dashboard-summary` pushes."""

    def __init__(self, db: Db, emitter: Emitter, *, multi_node: bool):
        self.db = db
        self.emitter = emitter
        self.multi_node = multi_node  # with Redis, sockets on other nodes may be subscribed
        self._subscribed: dict[str, int | None] = {}  # this node's subscribed sockets: sid -> summary key
        self._timers: dict[int | None, asyncio.Task] = {}  # None: the admins' all-users summary
        self._last: dict[int | None, float] = {}

    def __repr__(self) -> str:
        return f"DashboardPush(subscribed={len(self._subscribed)}, pending={len(self._timers)})"

    async def summary(self, user_id: int | None) -> dict:
        """The summary of one user, or of everyone (None)."""
        return await pipeline_summary(self.db, user_id)

    def joined(self, sid: str, user_id: int | None) -> None:
        """A socket of this node joined `dashboard_room(user_id)`."""
        self._subscribed[sid] = user_id

    def left(self, sid: str) -> None:
        self._subscribed.pop(sid, None)

    async def changed(self, events: list[dict]) -> None:
        """The pipeline store's subscriber: a user's records changed, so did their summary and the admins'."""
        for user_id in {event["user_id"] for event in events if event.get("topic") in TOPICS}:
            for key in (user_id, None):
                if key not in self._timers:
                    self._timers[key] = asyncio.create_task(self._push_later(key))

    async def _push_later(self, key: int | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(max(0.0, self._last.get(key, float("-inf")) + SUMMARY_MIN_GAP - loop.time()))
            self._last[key] = loop.time()
            # a change from now on schedules another push
            self._timers.pop(key, None)
            if not self.multi_node and key not in self._subscribed.values():
                return  # nobody would get it
            await self.emitter.emit("dashboard-summary", await self.summary(key), dashboard_room(key))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("pushing dashboard-summary for %s failed", "admins" if key is None else f"user {key}")
        finally:
            if self._timers.get(key) is asyncio.current_task():
                del self._timers[key]
            cutoff = loop.time() - 60
            for old in [k for k, at in self._last.items() if at < cutoff]:
                del self._last[old]

    async def stop(self) -> None:
        tasks = list(self._timers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()

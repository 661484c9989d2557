"""Live `dashboard-summary`: the pipeline summary pushed to the sockets that asked for it
(`subscribe {"dashboard": true}`) after a user's pipeline jobs or deployments change.

As with `job-stats` (live_stats.py): a change schedules one push per user and one of the
all-users summary for the admins, at most every SUMMARY_MIN_GAP seconds, so a burst of agent
reports costs one summary query and one emit. The node where the change happened computes it
and emits it through the Socket.IO manager (Redis when configured), reaching every node's sockets.
"""

from __future__ import annotations

from server.db import Db
from server.pipelines.store import pipeline_summary
from server.realtime.coalesce import Coalesced
from server.realtime.emitter import Emitter, dashboard_room

SUMMARY_MIN_GAP = 0.5  # seconds between pushes of one user's summary (or of the admins')
TOPICS = ("pipeline", "deployment")


class DashboardPush:
    """Coalesced, change-triggered `dashboard-summary` pushes."""

    def __init__(self, db: Db, emitter: Emitter, *, multi_node: bool):
        self.db = db
        self.emitter = emitter
        self.multi_node = multi_node  # with Redis, sockets on other nodes may be subscribed
        self._subscribed: dict[str, int | None] = {}  # this node's subscribed sockets: sid -> summary key
        self._pushes = Coalesced(SUMMARY_MIN_GAP, self._push, "dashboard-summary")  # key None: the admins'

    def __repr__(self) -> str:
        return f"DashboardPush(subscribed={len(self._subscribed)}, pending={self._pushes.pending})"

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
            self._pushes.changed(user_id)
            self._pushes.changed(None)

    async def _push(self, key: int | None) -> None:
        if not self.multi_node and key not in self._subscribed.values():
            return  # nobody would get it
        await self.emitter.emit("dashboard-summary", await self.summary(key), dashboard_room(key))
        self._pushes.forget_older(60)

    async def push_here(self, user_ids: set[int]) -> None:
        """A fresh summary to this node's subscribed sockets of these users, and to its subscribed
        admins: after catching up events the bus lost (catchup.py), as the pushes of that time went
        over the same bus."""
        keys = set(self._subscribed.values())
        for key in sorted(keys & user_ids) + ([None] if user_ids and None in keys else []):
            await self.emitter.emit("dashboard-summary", await self.summary(key), dashboard_room(key),
                                    this_node_only=True)

    async def stop(self) -> None:
        await self._pushes.stop()

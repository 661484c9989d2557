"""Live `job-stats`: pushed to a user's sockets after their jobs change, and periodically.

A change schedules one push per user (and one of the all-users figures for the admins), at most
every STATS_MIN_GAP seconds: a burst of changes costs one query and one emit. The push is
computed by the node where the job changed and sent through the Socket.IO manager (Redis when
configured), so every node's sockets get it; every `stats_interval` each node also sends its own
sockets their current figures.
"""

from __future__ import annotations

from server.db import Db
from server.realtime.coalesce import Coalesced
from server.realtime.emitter import ADMINS_ROOM, Emitter, stats_room
from server.realtime.fanout import Fanout
from server.stats.live import job_stats

STATS_MIN_GAP = 0.5  # seconds between change-triggered job-stats of one user (or of the admins)


class LiveStats:
    """Coalesced change-triggered and periodic `job-stats` pushes."""

    def __init__(self, db: Db, emitter: Emitter, fanout: Fanout, *, multi_node: bool):
        self.db = db
        self.emitter = emitter
        self.fanout = fanout  # which sockets this node has
        self.multi_node = multi_node  # with Redis, sockets on other nodes may want a push
        self._pushes = Coalesced(STATS_MIN_GAP, self._push, "job-stats")  # key None: the admins' figures

    def __repr__(self) -> str:
        return f"LiveStats(pending={self._pushes.pending})"

    async def stop(self) -> None:
        await self._pushes.stop()

    async def job_events(self, events: list[dict]) -> None:
        """The job store's subscriber: a created or finished job changes its owner's figures."""
        for event in events:
            if event["kind"] in ("created", "status") and event.get("topic", "job") == "job":
                self.changed(event["user_id"])

    def changed(self, user_id: int) -> None:
        for key in (user_id, None):
            self._pushes.changed(key)

    async def _push(self, key: int | None) -> None:
        if not self.multi_node and not self._has_local(key):
            return  # nobody would get it
        room = ADMINS_ROOM if key is None else stats_room(key)
        await self.emitter.emit("job-stats", await job_stats(self.db, key), room)

    def _has_local(self, key: int | None) -> bool:
        if key is None:
            return bool(self.fanout.admins)
        return any(not self.fanout.sockets[sid].principal.is_admin for sid in self.fanout.by_user.get(key, ()))

    async def push_periodic(self) -> None:
        """Every stats_interval: this node's sockets get their current figures."""
        users = {s.principal.user_id for s in self.fanout.sockets.values() if not s.principal.is_admin}
        await self._push_here(users, admins=bool(self.fanout.admins))
        self._pushes.forget_older(60)

    async def push_here(self, user_ids: set[int]) -> None:
        """Fresh figures to this node's sockets of these users, and to its admins: after catching up
        events the bus lost (catchup.py), as the pushes of that time went over the same bus."""
        local = {user_id for user_id in user_ids if self._has_local(user_id)}
        await self._push_here(local, admins=bool(user_ids and self.fanout.admins))

    async def _push_here(self, user_ids: set[int], *, admins: bool) -> None:
        for user_id in user_ids:
            await self.emitter.emit("job-stats", await job_stats(self.db, user_id), stats_room(user_id),
                                    this_node_only=True)
        if admins:
            await self.emitter.emit("job-stats", await job_stats(self.db, None), ADMINS_ROOM, this_node_only=True)

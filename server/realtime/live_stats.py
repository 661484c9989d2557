"""Live `job-stats`: pushed to a user's sockets after their jobs change, and periodically.

A change schedules one push per user (and one of the all-users figures for the admins), at most
every STATS_MIN_GAP seconds: a burst of changes costs one query and one emit. The push is
computed by the node where the job changed and sent through the Socket.IO manager (Redis when
configured), so every node's sockets get it; every `stats_interval` each node also sends its own
sockets their current figures, which also tells a dashboard or wallboard its data is fresh.

The periodic push costs nothing for a user with no socket on the node, and no query for one whose
figures cannot have changed: a user's figures change only with their job events, so each tick
reads the event counters of the node's users (one query) and recomputes only the figures of users
whose counter moved (on any node) or whose UTC day turned; the others get the figures computed
before with a new `as_of`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from server.db import Db
from server.realtime.coalesce import Coalesced
from server.realtime.emitter import ADMINS_ROOM, Emitter, stats_room
from server.realtime.fanout import Fanout
from server.stats.live import job_stats
from server.timeutil import iso, now_ms

STATS_MIN_GAP = 0.5  # seconds between change-triggered job-stats of one user (or of the admins)
COUNTER_CHUNK = 500  # users per event-counter query


async def event_markers(db: Db, user_ids: list[int], admins: bool) -> dict[int | None, int]:
    """Per user, their last event id; for None (the admins' all-users figures) the sum of them all.
    A user's job-stats figures cannot change without their marker moving."""
    markers: dict[int | None, int] = {}
    for start in range(0, len(user_ids), COUNTER_CHUNK):
        chunk = user_ids[start:start + COUNTER_CHUNK]
        marks = ", ".join(f":u{i}" for i in range(len(chunk)))
        rows = await db.raw_fetch(f"SELECT user_id, last_event_id FROM event_counters WHERE user_id IN ({marks})",
                                  {f"u{i}": user_id for i, user_id in enumerate(chunk)})
        markers.update({int(user_id): int(last) for user_id, last in rows})
    if admins:
        (total,), = await db.raw_fetch("SELECT COALESCE(SUM(last_event_id), 0) FROM event_counters", {})
        markers[None] = int(total)
    return markers


class LiveStats:
    """Coalesced change-triggered and periodic `job-stats` pushes."""

    def __init__(self, db: Db, emitter: Emitter, fanout: Fanout, *, multi_node: bool):
        self.db = db
        self.emitter = emitter
        self.fanout = fanout  # which sockets this node has
        self.multi_node = multi_node  # with Redis, sockets on other nodes may want a push
        self._pushes = Coalesced(STATS_MIN_GAP, self._push, "job-stats")  # key None: the admins' figures
        # key -> ((event marker, UTC day), figures) of the last periodic computation on this node
        self._computed: dict[int | None, tuple[tuple[int, str], dict]] = {}

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
        """Every stats_interval: this node's sockets get their current figures (recomputed only
        for the users whose figures may have changed)."""
        users = sorted({s.principal.user_id for s in self.fanout.sockets.values() if not s.principal.is_admin})
        admins = bool(self.fanout.admins)
        # users who left this node are forgotten: memory follows the sockets
        keep = set(users) | ({None} if admins else set())
        for key in [k for k in self._computed if k not in keep]:
            del self._computed[key]
        if keep:
            markers = await event_markers(self.db, users, admins)
            now = now_ms()
            day = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date().isoformat()
            for key in users + ([None] if admins else []):
                room = ADMINS_ROOM if key is None else stats_room(key)
                await self.emitter.emit("job-stats", await self._figures(key, (markers.get(key, 0), day), now),
                                        room, this_node_only=True)
        self._pushes.forget_older(60)

    async def _figures(self, key: int | None, marker: tuple[int, str], now: int) -> dict:
        computed = self._computed.get(key)
        if computed is not None and computed[0] == marker:
            return {**computed[1], "as_of": iso(now)}
        figures = await job_stats(self.db, key)
        self._computed[key] = (marker, figures)
        return figures

    async def push_here(self, user_ids: set[int]) -> None:
        """Fresh figures to this node's sockets of these users, and to its admins: after catching up
        events the bus lost (catchup.py), as the pushes of that time went over the same bus."""
        for user_id in sorted(user_id for user_id in user_ids if self._has_local(user_id)):
            await self.emitter.emit("job-stats", await job_stats(self.db, user_id), stats_room(user_id),
                                    this_node_only=True)
        if user_ids and self.fanout.admins:
            await self.emitter.emit("job-stats", await job_stats(self.db, None), ADMINS_ROOM, this_node_only=True)

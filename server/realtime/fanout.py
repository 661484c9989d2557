"""Delivering `job-update` events to this node's sockets: per user in event-id order, each once.

Every committed job event goes onto a bus: straight into this node's queue, or with Redis
configured through a pub/sub channel that every node reads. One consumer task per node takes
them in arrival order. Events of one user can arrive out of order (two nodes commit them), so
the consumer keeps, per user, the last id it delivered: a duplicate is dropped, and a gap is
filled from the database first. That is safe because event ids are assigned in commit order: once
id n has committed, every smaller id of that user has committed too.

Each socket also has a cursor (the last own-user id it was sent), so a socket that replays missed
events with `resume` and then goes live again never gets one twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import engineio
import orjson
import socketio

from server.accounts.store import Principal
from server.jobs.events import JobEventLog, client_event
from server.timeutil import iso

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000  # events waiting for delivery on this node; past it, clients are told to resync
GAP_FILL_LIMIT = 1000  # a larger gap (a node that was cut off) becomes a resync instead


@dataclass(eq=False, slots=True)
class SocketState:
    """What this node knows about one of its connected sockets."""

    sid: str
    eio_sid: str
    principal: Principal
    cursor: int | None = None  # last own-user event id sent; None: from the next live one on
    resuming: bool = False  # a replay is running: live events wait for it (see Fanout.deliver)
    subscriptions: set[str] = field(default_factory=set)
    job_feed: Any = None  # an admin's filter of others' job-updates (admin_feed.JobFeed); None: all of them
    allowance: float = 0.0  # rate limiter tokens (see Realtime)
    checked_at: float = 0.0


def encode_event(sio: socketio.AsyncServer, event: str, data: Any) -> engineio.packet.Packet:
    """One Engine.IO packet for a Socket.IO event, encoded once and sent to many sockets."""
    pkt = sio.packet_class(socketio.packet.EVENT, namespace="/", data=[event, data])
    return engineio.packet.Packet(engineio.packet.MESSAGE, pkt.encode())


class Fanout:
    """The per-node consumer of job events, and the registry of this node's sockets."""

    def __init__(self, sio: socketio.AsyncServer, events: JobEventLog, redis_url: str = "", channel: str = "jobmon"):
        self.sio = sio
        self.events = events
        self.sockets: dict[str, SocketState] = {}
        self.by_user: dict[int, set[str]] = {}
        self.admins: set[str] = set()
        self.delivered = 0  # socket deliveries, for metrics and benchmarks
        self._last: dict[int, int] = {}  # user id -> last event id delivered to live sockets here
        self._queue: asyncio.Queue[list[dict]] = asyncio.Queue()
        self._redis_url = redis_url
        self._channel = f"{channel}:job-events"
        self._redis = None
        self._tasks: list[asyncio.Task] = []
        # held while an event is sent: a resume changes a socket's cursor only between sends
        self.lock = asyncio.Lock()
        self._overflow_tasks: set[asyncio.Task] = set()

    # -- sockets ---------------------------------------------------------------------------
    def add(self, state: SocketState) -> None:
        self.sockets[state.sid] = state
        self.by_user.setdefault(state.principal.user_id, set()).add(state.sid)
        if state.principal.is_admin:
            self.admins.add(state.sid)

    def remove(self, sid: str) -> SocketState | None:
        state = self.sockets.pop(sid, None)
        if state is not None:
            sids = self.by_user.get(state.principal.user_id)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self.by_user[state.principal.user_id]
            self.admins.discard(sid)
        return state

    @property
    def queue_depth(self) -> int:
        """Batches of committed events waiting for this node's consumer."""
        return self._queue.qsize()

    def last_delivered(self, user_id: int) -> int | None:
        return self._last.get(user_id)

    async def send(self, sids, packet: engineio.packet.Packet) -> None:
        """Queue one encoded packet on each socket (no task per socket, unlike a room emit)."""
        for sid in sids:
            state = self.sockets.get(sid)
            if state is not None:
                await self.sio.eio.send_packet(state.eio_sid, packet)
                self.delivered += 1

    async def send_resync(self, state: SocketState, reason: str) -> None:
        """Tell one socket to refetch its state (it could not be brought up to date by replay)."""
        await self.send([state.sid], encode_event(self.sio, "resync", {"reason": reason}))

    async def resync_user(self, user_id: int) -> None:
        """This node lost events of a user: their sockets (and admins) refetch."""
        for sid in list(self.by_user.get(user_id, ())) + list(self.admins):
            state = self.sockets.get(sid)
            if state is not None:
                state.cursor = None
                await self.send_resync(state, "events_lost")

    # -- the bus ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._consume(), name="jobmon-fanout"))
        if self._redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(self._redis_url)
            self._tasks.append(asyncio.create_task(self._subscribe(), name="jobmon-fanout-redis"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, events: list[dict]) -> None:
        """Hand committed events to every node (this one included)."""
        if self._redis is not None:
            try:
                await self._redis.publish(self._channel, orjson.dumps(events))
                return
            except Exception:
                # the other nodes' clients will fill the gap from the database on their next event
                logger.exception("publishing job events to Redis failed; delivering on this node only")
        self._enqueue(events)

    def _enqueue(self, events: list[dict]) -> None:
        if self._queue.qsize() >= QUEUE_LIMIT:
            logger.error("fan-out queue full; dropping %s events (their users are told to resync)", len(events))
            for event in events:
                self._last.pop(event["user_id"], None)
                # keep a reference so the task is not garbage collected mid-way
                task = asyncio.get_running_loop().create_task(self.resync_user(event["user_id"]))
                self._overflow_tasks.add(task)
                task.add_done_callback(self._overflow_tasks.discard)
            return
        self._queue.put_nowait(events)

    async def _subscribe(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._enqueue(orjson.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Redis subscription for job events failed; trying again in %s seconds.", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    # -- delivery --------------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            events = await self._queue.get()
            for event in events:
                try:
                    await self._deliver_in_order(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("delivering job event %s of user %s failed",
                                     event.get("event_id"), event.get("user_id"))

    async def _deliver_in_order(self, event: dict) -> None:
        user_id, event_id = event["user_id"], event["event_id"]
        last = self._last.get(user_id)
        if last is not None and event_id <= last:
            return  # already delivered (it arrived late, after a gap fill)
        if last is not None and event_id > last + 1:
            missing = await self.events.read(user_id, last, min(event_id - last - 1, GAP_FILL_LIMIT + 1))
            if len(missing) > GAP_FILL_LIMIT:
                logger.warning("user %s: %s events missed by this node; telling clients to resync",
                               user_id, event_id - last - 1)
                self._last[user_id] = event_id
                await self.resync_user(user_id)
                return
            for name, payload in missing:
                if payload["event_id"] < event_id:
                    await self._deliver(user_id, name, payload)
        name, payload = client_event(event.get("topic", "job"), event_id, event["kind"], event["job"],
                                     iso(event.get("at")))
        await self._deliver(user_id, name, payload)

    async def _deliver(self, user_id: int, name: str, payload: dict) -> None:
        """Send one event to the user's live sockets whose cursor is behind it, and to admins."""
        event_id = payload["event_id"]
        async with self.lock:
            self._last[user_id] = event_id
            targets = []
            for sid in self.by_user.get(user_id, ()):
                state = self.sockets[sid]
                if not state.resuming and (state.cursor is None or state.cursor < event_id):
                    state.cursor = event_id
                    targets.append(sid)
            job = payload["job"] if name == "job-update" else None
            targets += [sid for sid in self.admins
                        if self.sockets[sid].principal.user_id != user_id and not self.sockets[sid].resuming
                        and (job is None or self.sockets[sid].job_feed is None
                             or self.sockets[sid].job_feed.matches(job))]
            if targets:
                await self.send(targets, encode_event(self.sio, name, payload))

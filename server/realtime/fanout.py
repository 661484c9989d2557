"""Delivering `job-update` events to this node's sockets: per user in event-id order, each once.

Every committed job event goes onto a bus: straight into this node's queue, or with Redis
configured through a pub/sub channel that every node reads. One consumer task per node takes
them in arrival order. Events of one user can arrive out of order (two nodes commit them), so
the consumer keeps, per user, the last id it delivered: a duplicate is dropped, and a gap is
filled from the database first. That is safe because event ids are assigned in commit order: once
id n has committed, every smaller id of that user has committed too.

Each socket also has a cursor (the last own-user id it was sent), so a socket that replays missed
events with `resume` and then goes live again never gets one twice.

The bus keeps nothing: what is published while a node's subscription is down never reaches it.
`catchup.BusCatchUp` then reads the users' counters and hands the consumer a catch-up request; the
consumer fills each user up to it from the database, between live events, so the order and the
once-only delivery hold for both. Where a node starts from for a user it has delivered nothing of
yet (its baseline) is read when a socket connects, before it joins (see `set_baseline`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import engineio
import orjson
import socketio

from server.accounts.store import Principal
from server.jobs.events import JobEventLog, client_event
from server.realtime.direct_write import websocket_frame, write_now
from server.timeutil import iso

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000  # events waiting for delivery on this node; past it, clients are told to resync
GAP_FILL_LIMIT = 1000  # a larger gap (a node that was cut off) becomes a resync instead
PUBLISH_TIMEOUT = 2.0  # seconds a publish may wait for Redis (a silent network) before delivering here only
SUBSCRIBE_RETRY_MAX = 5.0  # seconds between attempts to subscribe again: events flow soon after Redis is back


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


@dataclass(slots=True)
class _Baseline:
    """Where this node starts from for some users: their counters when a socket connected."""

    counters: dict[int, int]  # user id -> last committed event id
    replace: set[int]  # users no other socket here waits on: their position moves up to the counter
    all_users: bool  # an admin's: every user's counter


@dataclass(slots=True)
class _CatchUp:
    """Bring this node's sockets up to these event ids (user id -> id) from the event log."""

    targets: dict[int, int]
    done: asyncio.Future  # set to the users that got events or a resync


def encode_event(sio: socketio.AsyncServer, event: str, data: Any) -> engineio.packet.Packet:
    """One Engine.IO packet for a Socket.IO event, encoded once and sent to many sockets."""
    # binary=False: the payloads are JSON data, never bytes (and walking them to find out costs)
    pkt = sio.packet_class(socketio.packet.EVENT, namespace="/", data=[event, data], binary=False)
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
        self.queued = 0  # of those, the ones queued behind others (a busy, slow or polling socket)
        self.dropped: collections.Counter[str] = collections.Counter()  # events not delivered live, by reason
        self.caught_up = 0  # users brought up to date from the event log after the bus lost their events
        # user id -> last event id delivered to live sockets here (None: unknown, the next one goes out as it is)
        self._last: dict[int, int | None] = {}
        # users with nothing delivered here yet: the event id they are watched from (one per user at most)
        self._floor: dict[int, int] = {}
        self._seeded_all = False  # an admin's baseline of every user is in place (while admins stay)
        self._queue: asyncio.Queue[list[dict] | _Baseline | _CatchUp] = asyncio.Queue()
        self._redis_url = redis_url
        self._channel = f"{channel}:job-events"
        self._redis = None
        self.bus_live = False  # the Redis subscription is confirmed and has not failed since
        self._on_subscribed: list[Callable[[], None]] = []
        self._outbox: list[dict] = []  # events for the next PUBLISH, and the future their publishers await
        self._outbox_sent: asyncio.Future | None = None
        self._outbox_ready = asyncio.Event()
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
            if not self.admins:
                self._seeded_all = False  # the next admin reads everyone's counters again
        return state

    @property
    def queue_depth(self) -> int:
        """Batches of committed events waiting for this node's consumer."""
        return self._queue.qsize()

    def last_delivered(self, user_id: int) -> int | None:
        return self._last.get(user_id)

    async def send(self, sids, packet: engineio.packet.Packet) -> None:
        """Send one encoded packet to each socket: framed once and written to its WebSocket when
        nothing is queued ahead of it there, queued on it otherwise (no task per socket, unlike a
        room emit)."""
        eio_sockets = self.sio.eio.sockets
        frame = None
        for sid in sids:
            state = self.sockets.get(sid)
            if state is None:
                continue
            socket = eio_sockets.get(state.eio_sid)
            if socket is not None:
                if frame is None:
                    frame = websocket_frame(packet)
                if write_now(socket, frame):
                    self.delivered += 1
                    continue
            await self.sio.eio.send_packet(state.eio_sid, packet)
            self.delivered += 1
            self.queued += 1

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
            self._tasks.append(asyncio.create_task(self._publisher(), name="jobmon-fanout-publish"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._outbox_sent is not None and not self._outbox_sent.done():
            self._outbox_sent.set_result(None)  # stopping: what was not published is read back by the others
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, events: list[dict]) -> None:
        """Hand committed events to every node (this one included); with Redis, return once they
        are published (or, Redis failing, queued for this node)."""
        if self._redis is None:
            self._enqueue(events)
            return
        # into the next PUBLISH: events committed while one is in flight go out together in the
        # next, so under load a message carries many (each message costs every node a wake-up and
        # a parse), and an idle node publishes at once
        self._outbox.extend(events)
        if self._outbox_sent is None:
            self._outbox_sent = asyncio.get_running_loop().create_future()
        sent = self._outbox_sent
        self._outbox_ready.set()
        await asyncio.shield(sent)

    async def _publisher(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            events, sent = self._outbox, self._outbox_sent
            self._outbox, self._outbox_sent = [], None
            if events:
                await self._publish_now(events)
            if sent is not None and not sent.done():
                sent.set_result(None)

    async def _publish_now(self, events: list[dict]) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):  # a silent network must not hold the changes
                await self._redis.publish(self._channel, orjson.dumps(events))
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # the other nodes catch up from the database once their subscription is back (catchup.py)
            logger.exception("publishing job events to Redis failed; delivering on this node only")
        self._enqueue(events)

    def _enqueue(self, events: list[dict]) -> None:
        if self._queue.qsize() >= QUEUE_LIMIT:
            logger.error("fan-out queue full; dropping %s events (their users are told to resync)", len(events))
            self.dropped["queue_full"] += len(events)
            for event in events:
                self._last[event["user_id"]] = None  # its clients resync: no gap fill before the next one
                # keep a reference so the task is not garbage collected mid-way
                task = asyncio.get_running_loop().create_task(self.resync_user(event["user_id"]))
                self._overflow_tasks.add(task)
                task.add_done_callback(self._overflow_tasks.discard)
            return
        self._queue.put_nowait(events)

    def when_subscribed(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the Redis subscription is confirmed (again): whatever was
        published while it was down is lost, and must be read from the database."""
        self._on_subscribed.append(callback)

    async def _subscribe(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        self._enqueue(orjson.loads(message["data"]))
                    elif kind == "subscribe":  # also after redis-py reconnected by itself
                        delay = 0.5
                        self.bus_live = True
                        for callback in self._on_subscribed:
                            callback()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.bus_live = False
                logger.exception("Redis subscription for job events failed; trying again in %s seconds.", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SUBSCRIBE_RETRY_MAX)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    # -- catching up (catchup.BusCatchUp decides when) ------------------------------------------
    def watched_users(self) -> set[int] | None:
        """The users whose events this node's sockets get: None (every user) with an admin connected."""
        return None if self.admins else set(self.by_user)

    def set_baseline(self, counters: dict[int, int], *, sid: str, all_users: bool) -> None:
        """Socket `sid` joined, with these counters read just before: where catching up starts from
        for users this node has delivered nothing of. A user no other socket here waits on (no admin,
        no other socket of theirs) starts from their counter: events before it are the past, which
        the new client fetched or will `resume`."""
        def alone(user_id: int) -> bool:
            sids = self.by_user.get(user_id)
            return not sids or (len(sids) == 1 and sid in sids)

        others_admin = bool(self.admins - {sid})
        replace = set() if others_admin else {user_id for user_id in counters if alone(user_id)}
        self._queue.put_nowait(_Baseline(counters, replace, all_users))

    async def catch_up(self, targets: dict[int, int]) -> set[int]:
        """Deliver each user's events up to the target id that this node has not delivered (in
        order, once; a resync past GAP_FILL_LIMIT), between live events; return the users that
        got some."""
        if not targets:
            return set()
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_CatchUp(targets, done))
        return await done

    def _apply_baseline(self, baseline: _Baseline) -> None:
        for user_id, counter in baseline.counters.items():
            if user_id in baseline.replace:
                last = self._last.get(user_id)
                if last is None or last < counter:
                    self._last[user_id] = counter
            elif user_id not in self._last and user_id not in self._floor:
                # with the admins' baseline in place, a user it did not have started after it
                self._floor[user_id] = 0 if self._seeded_all and self.admins else counter
        if baseline.all_users and self.admins:
            self._seeded_all = True

    def _position(self, user_id: int) -> int | None:
        """The last event id of the user this node has delivered, or is watching them from."""
        if user_id in self._last:
            return self._last[user_id]
        floor = self._floor.get(user_id)
        if floor is None and self._seeded_all and self.admins:
            return 0  # a user whose first event came after the admins' baseline: all of it is new
        return floor

    async def _catch_up(self, targets: dict[int, int]) -> set[int]:
        caught = set()
        for user_id, target in targets.items():
            last = self._position(user_id)
            if last is None:  # no baseline (its read failed, or the clients resync): from here on
                if user_id in self._last:
                    self._last[user_id] = target
                else:
                    self._floor[user_id] = target
            elif last < target:
                await self._fill(user_id, last, target)
                caught.add(user_id)
        self.caught_up += len(caught)
        return caught

    async def _fill(self, user_id: int, after: int, upto: int) -> bool:
        """Deliver the user's events after `after` up to `upto` from the event log; past
        GAP_FILL_LIMIT of them, tell the clients to resync instead (and return False)."""
        missing = await self.events.read(user_id, after, min(upto - after, GAP_FILL_LIMIT + 1))
        if len(missing) > GAP_FILL_LIMIT:
            logger.warning("user %s: %s events missed by this node; telling clients to resync",
                           user_id, upto - after)
            self._last[user_id] = upto
            self.dropped["gap_too_large"] += upto - after
            await self.resync_user(user_id)
            return False
        for name, payload in missing:
            if payload["event_id"] <= upto:
                await self._deliver(user_id, name, payload)
        return True

    # -- delivery --------------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Baseline):
                self._apply_baseline(item)
                continue
            if isinstance(item, _CatchUp):
                await self._run_catch_up(item)
                continue
            for event in item:
                try:
                    await self._deliver_in_order(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("delivering job event %s of user %s failed",
                                     event.get("event_id"), event.get("user_id"))

    async def _run_catch_up(self, item: _CatchUp) -> None:
        try:
            caught = await self._catch_up(item.targets)
        except asyncio.CancelledError:
            item.done.cancel()
            raise
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(caught)

    async def _deliver_in_order(self, event: dict) -> None:
        user_id, event_id = event["user_id"], event["event_id"]
        last = self._position(user_id)
        if last is not None and event_id <= last:
            return  # already delivered (it arrived late, after a gap fill or a catch-up)
        if last is not None and event_id > last + 1 and not await self._fill(user_id, last, event_id - 1):
            self._last[user_id] = event_id
            return
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

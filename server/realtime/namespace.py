"""The Socket.IO side: authenticated connections, rooms, handlers, and pushing events.

Rooms: every socket joins `user:<id>`; admins (with admin rights) also join `admins`, everyone
else `stats:<id>` (so an admin's dashboard gets the all-users `job-stats` only); `subscribe` adds
`job:<id>` after an ownership check. Clients never name a room themselves.

What goes where:
- `job-update`: through `fanout.Fanout`, in per-user event-id order, each event once per socket.
- `job-stats`: computed by the node where a job changed, at most every STATS_MIN_GAP per user
  (and for admins), sent through the Socket.IO manager (Redis when configured) so every node's
  sockets get it; and every `stats_interval` by each node to its own sockets.
- `job-alert`: raised by `alerts.Alerts`, sent to the owner's room and `admins`.

A socket whose session or token ends is disconnected at once on the node that ended it, and by
every other node at its next revalidation (every `socket_revalidate` seconds).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import socketio
import sqlalchemy as sa

from server.db import schema as tables
from server.accounts.store import Principal
from server.realtime.alerts import Alerts
from server.config import Settings
from server.errors import AppError
from server.realtime.engineio_compat import install_fast_writer
from server.realtime.fanout import Fanout, SocketState, encode_event, read_events
from server.jobs.store import parse_job_id
from server.services import Services
from server.stats.live import job_stats
from server.timeutil import now_ms, parse_iso

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024  # a bigger Socket.IO message closes that connection (Engine.IO)
REPLAY_LIMIT = 5000  # past this many missed events a client is told to resync instead
MAX_SUBSCRIPTIONS = 100  # job rooms per socket
MAX_EVENT_ID = 2**53  # what a JavaScript client can hold exactly
RATE = 20.0  # messages per second a socket may send, on average...
BURST = 40.0  # ...with bursts up to this many
STATS_MIN_GAP = 0.5  # seconds between change-triggered job-stats of one user (or of the admins)
ADMINS_ROOM = "admins"


class _OrjsonPacker:
    """The `json` module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def stats_room(user_id: int) -> str:
    return f"stats:{user_id}"


def job_room(job_id: str) -> str:
    return f"job:{job_id}"


def _ack_error(code: str, message: str, status: int = 400) -> dict:
    return {"error": {"code": code, "message": message, "details": None, "status": status}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Realtime:
    """Owns the Socket.IO server: connection checks, rooms, handlers and emits."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.services: Services | None = None
        self.fanout: Fanout | None = None
        self.alerts: Alerts | None = None
        manager = (socketio.AsyncRedisManager(settings.redis_url, channel=f"{settings.redis_channel}:socketio")
                   if settings.redis_url else None)
        allowed = set(settings.allowed_origins)

        def origin_allowed(origin: str | None, environ: dict) -> bool:
            # same-origin pages always, plus the configured allow-list; never "any origin"
            if origin is None:
                return True
            own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
            return origin.rstrip("/") == own or origin.rstrip("/") in allowed

        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            cors_allowed_origins=origin_allowed,
            cors_credentials=True,
            max_http_buffer_size=MAX_MESSAGE_BYTES,
            http_compression=False,  # broadcasts are small and many: compressing costs more than it saves
            json=_OrjsonPacker,
        )
        install_fast_writer()
        self._tasks: list[asyncio.Task] = []
        self._spawned: set[asyncio.Task] = set()
        self._stats_timers: dict[int | None, asyncio.Task] = {}
        self._stats_last: dict[int | None, float] = {}
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("resume", self._handler(self.on_resume))
        self.sio.on("subscribe", self._handler(self.on_subscribe))
        self.sio.on("unsubscribe", self._handler(self.on_unsubscribe))
        self.sio.on("get-stats", self._handler(self.on_get_stats))
        self.sio.on("watch-appstatus", self._handler(self.on_watch_appstatus))
        self.sio.on("unwatch-appstatus", self._handler(self.on_unwatch_appstatus))
        self.sio.on("*", self.on_unknown)

    @property
    def connected_count(self) -> int:
        """Sockets connected to this node."""
        return len(self.fanout.sockets) if self.fanout else 0

    def attach(self, services: Services) -> None:
        """Start serving with the running server's services (built in the lifespan)."""
        self.services = services
        services.realtime = self
        self.fanout = Fanout(self.sio, services.db, self.settings.redis_url, self.settings.redis_channel)
        self.fanout.on_overflow = self._resync_user
        self.alerts = Alerts(services.db, services.jobs, self.emit_alert,
                             stuck_after_ms=int(self.settings.stuck_after * 1000),
                             cluster_failures=self.settings.cluster_alert_after)
        services.jobs.add_listener(self.publish_job_events)
        services.runner.add_batch_listener(self.alerts.batch_done)

    async def start(self) -> None:
        """Start the fan-out and the periodic work (revalidation, stats, stuck jobs, pruning)."""
        await self.fanout.start()
        s = self.settings
        self._tasks = [
            asyncio.create_task(self._every(s.socket_revalidate, "revalidating sockets", self.revalidate)),
            asyncio.create_task(self._every(s.stats_interval, "periodic job-stats", self.push_periodic_stats)),
            asyncio.create_task(self._every(min(s.stuck_after / 2, 30.0), "stuck-job check",
                                            self.alerts.check_stuck)),
            asyncio.create_task(self._every(3600.0, "pruning alerts", self._prune_alerts)),
        ]

    async def stop(self) -> None:
        """Stop the background work."""
        tasks = self._tasks + list(self._spawned) + list(self._stats_timers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self.fanout is not None:
            await self.fanout.stop()
        await self.sio.shutdown()
        await self._close_manager()

    async def _close_manager(self) -> None:
        # python-socketio's Redis manager has no close(): stop its listener task, close its connections
        manager = self.sio.manager
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Future):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for name in ("pubsub", "redis"):
            connection = getattr(manager, name, None)
            if connection is not None and hasattr(connection, "aclose"):
                try:
                    await connection.aclose()
                except Exception:
                    logger.warning("closing the Socket.IO manager's Redis %s failed", name, exc_info=True)

    async def _every(self, seconds: float, what: str, work) -> None:
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

    def _spawn(self, coro) -> None:
        # keep a reference so the task is not garbage collected mid-way
        task = asyncio.create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- connection ------------------------------------------------------------------------
    async def _authenticate(self, environ: dict, auth: Any) -> Principal:
        """The principal of a new socket, or a refusal whose message a client can show."""
        refuse = socketio.exceptions.ConnectionRefusedError
        authn = self.services.auth
        if isinstance(auth, dict) and auth.get("token") is not None:
            token = auth["token"]
            if not isinstance(token, str) or len(token) > 200:
                raise refuse("auth.token must be an API token string", {"code": "invalid_token"})
            principal = await authn.from_token(token)
            if principal is None:
                raise refuse("Invalid or revoked API token", {"code": "invalid_token"})
            return principal
        cookie_header = environ.get("HTTP_COOKIE")
        principal = await authn.from_cookie_header(cookie_header)
        if principal is not None:
            return principal
        if cookie_header and "jobmon_session=" in cookie_header:
            raise refuse("Your session has expired or was ended; log in again", {"code": "session_expired"})
        raise refuse("Log in first, or connect with auth: {token: <API token>}", {"code": "unauthorized"})

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        principal = await self._authenticate(environ, auth)
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        state = SocketState(sid, eio_sid, principal, allowance=BURST,
                            checked_at=asyncio.get_running_loop().time())
        await self.sio.save_session(sid, {"principal": principal})
        await self.sio.enter_room(sid, user_room(principal.user_id))
        await self.sio.enter_room(sid, ADMINS_ROOM if principal.is_admin else stats_room(principal.user_id))
        self.fanout.add(state)

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        self.fanout.remove(sid)

    async def disconnect_credential(self, *, session_id: str | None = None, token_id: int | None = None) -> None:
        """Disconnect this node's sockets that use a session or token that just ended."""
        for state in list(self.fanout.sockets.values()):
            p = state.principal
            if (session_id is not None and p.session_id == session_id) or \
                    (token_id is not None and p.token_id == token_id):
                await self.sio.disconnect(state.sid)

    async def revalidate(self) -> int:
        """Disconnect local sockets whose session or token has ended (on any node); return how many."""
        sockets = list(self.fanout.sockets.values())
        sessions = {s.principal.session_id for s in sockets if s.principal.session_id}
        tokens = {s.principal.token_id for s in sockets if s.principal.token_id is not None}
        live_sessions = await self._live(tables.sessions, sessions, with_expiry=True)
        live_tokens = await self._live(tables.api_tokens, tokens, with_expiry=False)
        dropped = 0
        for state in sockets:
            p = state.principal
            if (p.session_id and p.session_id not in live_sessions) or \
                    (p.token_id is not None and p.token_id not in live_tokens):
                await self.sio.disconnect(state.sid)
                dropped += 1
        return dropped

    async def _live(self, table: sa.Table, ids: set, *, with_expiry: bool) -> set:
        users = tables.users
        live: set = set()
        ids_list = sorted(ids)
        for start in range(0, len(ids_list), 500):
            query = (sa.select(table.c.id).select_from(table.join(users, users.c.id == table.c.user_id))
                     .where(table.c.id.in_(ids_list[start:start + 500]), table.c.revoked_at.is_(None),
                            sa.not_(users.c.disabled)))
            if with_expiry:
                query = query.where(table.c.expires_at > now_ms())
            live.update(r.id for r in await self.services.db.fetch_all(query))
        return live

    # -- handlers --------------------------------------------------------------------------
    def _handler(self, work):
        """Wrap an event handler: rate limit, one payload argument, errors as acks."""

        async def handle(sid: str, *args: Any) -> dict:
            state = self.fanout.sockets.get(sid)
            if state is None:
                return _ack_error("unauthorized", "Not connected", 401)
            if not self._allow(state):
                return _ack_error("rate_limited", f"Too many messages: at most {RATE:g} per second", 429)
            try:
                return await work(state, args[0] if args else None)
            except AppError as exc:
                return _ack_error(exc.code, exc.message, exc.status)
            except Exception:
                logger.exception("Socket.IO handler %s failed", work.__name__)
                return _ack_error("internal_error", "Internal server error", 500)

        return handle

    def _allow(self, state: SocketState) -> bool:
        """A token bucket per socket: a flood gets errors and costs others nothing."""
        now = asyncio.get_running_loop().time()
        state.allowance = min(BURST, state.allowance + (now - state.checked_at) * RATE)
        state.checked_at = now
        if state.allowance < 1.0:
            return False
        state.allowance -= 1.0
        return True

    async def on_unknown(self, event: str, sid: str, *args: Any) -> dict:
        state = self.fanout.sockets.get(sid)
        if state is not None and not self._allow(state):
            return _ack_error("rate_limited", f"Too many messages: at most {RATE:g} per second", 429)
        return _ack_error("unknown_event", f"Unknown event {str(event)[:64]!r}: use resume, subscribe, "
                                           "unsubscribe, get-stats, watch-appstatus or unwatch-appstatus", 400)

    async def on_resume(self, state: SocketState, data: Any) -> dict:
        """Replay the user's job-update events after `last_event_id`, in order, then ack.

        Optional `alerts_since` (ISO time) also replays the job-alerts raised since then.
        """
        wanted = "Send {\"last_event_id\": <non-negative integer>} (and optionally \"alerts_since\")"
        if not isinstance(data, dict):
            return _ack_error("validation_error", wanted)
        last = data.get("last_event_id")
        if last is not None and (not _is_int(last) or not 0 <= last <= MAX_EVENT_ID):
            return _ack_error("validation_error", wanted)
        if last is None and data.get("alerts_since") is None:
            return _ack_error("validation_error", wanted)
        since_ms = None
        if data.get("alerts_since") is not None:
            raw = data["alerts_since"]
            try:
                if not isinstance(raw, str) or len(raw) > 40:
                    raise ValueError
                since_ms = parse_iso(raw)
            except (ValueError, OverflowError):
                return _ack_error("validation_error", "alerts_since must be an ISO 8601 time like "
                                                      "2026-01-01T00:00:00Z")
        result: dict = {}
        if last is not None:
            async with self.fanout.lock:
                if state.resuming:
                    return _ack_error("busy", "A resume is already running on this connection", 409)
                state.resuming = True
                state.cursor = last
            try:
                result = await self._replay(state, last)
            finally:
                state.resuming = False
        if since_ms is not None:
            principal = state.principal
            alerts = await self.alerts.since(since_ms, None if principal.is_admin else principal.user_id)
            for alert in alerts:
                await self.fanout.send([state.sid], encode_event(self.sio, "job-alert", alert))
            result["alerts"] = len(alerts)
        if last is not None and state.principal.is_admin and result.get("recovered") is not False:
            # event ids are per user: an admin can replay only their own; the rest means refetch
            await self._send_resync(state, "admin_view")
            result.update(recovered=False, reason="admin_view")
        return result

    async def _replay(self, state: SocketState, last: int) -> dict:
        """Send the socket its user's events after `last`, until it has caught up with this node."""
        user_id = state.principal.user_id
        counter = await self.services.db.fetch_val(
            sa.select(tables.event_counters.c.last_event_id).where(tables.event_counters.c.user_id == user_id)) or 0
        if last > counter:
            return await self._resync_socket(state, "unknown_event_id")
        cursor, replayed = last, 0
        while True:
            rows = await read_events(self.services.db, user_id, cursor, REPLAY_LIMIT + 1 - replayed)
            if cursor == last and ((rows and rows[0]["event_id"] != last + 1) or (not rows and counter > last)):
                return await self._resync_socket(state, "events_expired")
            if replayed + len(rows) > REPLAY_LIMIT:
                return await self._resync_socket(state, "too_many_missed_events")
            for row in rows:
                await self.fanout.send([state.sid], encode_event(self.sio, "job-update", row))
            if rows:
                cursor, replayed = rows[-1]["event_id"], replayed + len(rows)
            async with self.fanout.lock:
                # live delivery to this socket resumes only once it has every event this node sent
                node_last = self.fanout.last_delivered(user_id)
                if node_last is None or node_last <= cursor or not rows:
                    state.cursor = max(cursor, state.cursor or 0)
                    state.resuming = False
                    return {"replayed": replayed, "last_event_id": cursor}

    async def _resync_socket(self, state: SocketState, reason: str) -> dict:
        async with self.fanout.lock:
            state.cursor = None
            state.resuming = False
        await self._send_resync(state, reason)
        return {"recovered": False, "reason": reason}

    async def _send_resync(self, state: SocketState, reason: str) -> None:
        await self.fanout.send([state.sid], encode_event(self.sio, "resync", {"reason": reason}))

    async def _resync_user(self, user_id: int) -> None:
        """This node lost events of a user: their sockets (and admins) refetch."""
        for sid in list(self.fanout.by_user.get(user_id, ())) + list(self.fanout.admins):
            state = self.fanout.sockets.get(sid)
            if state is not None:
                state.cursor = None
                await self._send_resync(state, "events_lost")

    async def on_subscribe(self, state: SocketState, data: Any) -> dict:
        """Join `job:<id>` (app-status updates of one job) after an ownership check."""
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        if job_id not in state.subscriptions and len(state.subscriptions) >= MAX_SUBSCRIPTIONS:
            return _ack_error("too_many_subscriptions", f"At most {MAX_SUBSCRIPTIONS} jobs per connection: "
                                                        "unsubscribe from one first", 429)
        state.subscriptions.add(job_id)
        await self.sio.enter_room(state.sid, job_room(job_id))
        return {"ok": True}

    async def on_unsubscribe(self, state: SocketState, data: Any) -> dict:
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        state.subscriptions.discard(job_id)
        await self.sio.leave_room(state.sid, job_room(job_id))
        return {"ok": True}

    async def _owned_job(self, state: SocketState, data: Any) -> str | dict:
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), str) or len(data["job_id"]) > 64:
            return _ack_error("validation_error", "Send {\"job_id\": \"<uuid>\"}")
        p = state.principal
        job = await self.services.jobs.get_for(parse_job_id(data["job_id"]), p.user_id, p.is_admin)
        return job["job_id"]

    async def on_watch_appstatus(self, state: SocketState, data: Any) -> dict:
        """`{"job_id", "app"?, "ttl_seconds"?}`: subscribe to the job, and keep its app status
        fresh (fetched again as it expires) while this socket stays subscribed."""
        app, ttl_seconds = self.services.scope.watch_params(data)
        subscribed = await self.on_subscribe(state, data)
        if "error" in subscribed:
            return subscribed
        return await self.services.scope.watch(state.sid, parse_job_id(data["job_id"]), app, ttl_seconds)

    async def on_unwatch_appstatus(self, state: SocketState, data: Any) -> dict:
        """`{"job_id", "app"?}`: stop keeping that job's app status fresh for this socket."""
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        return self.services.scope.unwatch(state.sid, job_id, data)

    async def on_get_stats(self, state: SocketState, data: Any) -> dict:
        """The current job-stats payload: the user's own, or all users' for an admin."""
        p = state.principal
        return await job_stats(self.services.db, None if p.is_admin else p.user_id)

    # -- pushing ---------------------------------------------------------------------------
    async def publish_job_events(self, events: list[dict]) -> None:
        """The job store's listener: fan the events out; stats and alerts follow from them."""
        await self.fanout.publish(events)
        for event in events:
            if event["kind"] in ("created", "status"):
                self._stats_changed(event["user_id"])
            if event["kind"] == "status" and event["job"]["status"] in ("FAILED", "PARTIAL"):
                self._spawn(self.alerts.job_finished(event["job"]))

    async def emit_alert(self, alert: dict) -> None:
        """Send a job-alert to its owner's sockets and the admins', on every node."""
        rooms = [user_room(alert["user_id"]), ADMINS_ROOM] if alert["user_id"] is not None else ADMINS_ROOM
        await self.sio.emit("job-alert", alert, room=rooms)

    def _stats_changed(self, user_id: int) -> None:
        for key in (user_id, None):  # None: the all-users figures for the admins
            if key not in self._stats_timers:
                self._stats_timers[key] = asyncio.create_task(self._push_stats_later(key))

    async def _push_stats_later(self, key: int | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(max(0.0, self._stats_last.get(key, float("-inf")) + STATS_MIN_GAP - loop.time()))
            self._stats_last[key] = loop.time()
            # a change from now on schedules another push
            self._stats_timers.pop(key, None)
            room = ADMINS_ROOM if key is None else stats_room(key)
            if not self.settings.redis_url and not self._has_local(key):
                return  # nobody would get it (with Redis, sockets on other nodes might)
            await self.sio.emit("job-stats", await job_stats(self.services.db, key), room=room)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("pushing job-stats for %s failed", "admins" if key is None else f"user {key}")
        finally:
            if self._stats_timers.get(key) is asyncio.current_task():
                del self._stats_timers[key]

    def _has_local(self, key: int | None) -> bool:
        if key is None:
            return bool(self.fanout.admins)
        return any(not self.fanout.sockets[sid].principal.is_admin for sid in self.fanout.by_user.get(key, ()))

    async def push_periodic_stats(self) -> None:
        """Every stats_interval: this node's sockets get their current figures."""
        users = {s.principal.user_id for s in self.fanout.sockets.values() if not s.principal.is_admin}
        for user_id in users:
            stats = await job_stats(self.services.db, user_id)
            await self.sio.emit("job-stats", stats, room=stats_room(user_id), ignore_queue=True)
        if self.fanout.admins:
            stats = await job_stats(self.services.db, None)
            await self.sio.emit("job-stats", stats, room=ADMINS_ROOM, ignore_queue=True)
        cutoff = asyncio.get_running_loop().time() - 60
        for key in [k for k, at in self._stats_last.items() if at < cutoff]:
            del self._stats_last[key]

    async def _prune_alerts(self) -> None:
        await self.alerts.prune(now_ms() - self.settings.event_retention_days * 86_400_000)

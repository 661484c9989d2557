"""The Socket.IO namespace: authenticated connections, rooms, and the client's events.

Rooms are described in `emitter`. Clients never name a room themselves.

What goes where, and why:
- `job-update`, `pipeline-update`, `deployment-update` (and `resync`): through `fanout.Fanout`,
  which encodes each event once and writes it to every target socket (`direct_write`), in per-user
  event-id order, each event once per socket; `resume` replays from the event log through the same
  path. A room emit could not keep the per-socket order and cursor that replay needs.
- `job-stats`, `job-alert`, `appstatus-update`, `dashboard-summary`: through `sio.emit` (the
  `emitter.Emitter`), i.e. python-socketio's manager, which with Redis reaches every node's
  sockets; on each node `direct_write.DirectEmitManager` encodes each once and writes it to the
  room's sockets the same way.

The design's admin protocol is served as aliases on the same server (also mounted at
`/admin/socket.io`): `subscribe:jobs` / `unsubscribe:jobs` set an admin socket's job feed
(`admin_feed`, applied by the fan-out), `request:job-stats` sends `job-stats`; their errors are
also sent as an `error` event.

A socket whose session or token ends is disconnected at once on the node that ended it, and by
every other node at its next revalidation (every `socket_revalidate` seconds).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import socketio

from server.accounts.auth import Authenticator
from server.accounts.store import Accounts, Principal
from server.appstatus.scope import JobScope
from server.config import Settings
from server.errors import AppError, DatabaseOutage, Forbidden, error_ack
from server.jobs.events import JobEventLog
from server.jobs.store import JobStore, parse_job_id
from server.metrics import Metrics
from server.parsing import is_int
from server.periodic import every
from server.realtime.admin_feed import UNSUBSCRIBED, JobFeed, parse_job_feed
from server.realtime.alerts import Alerts
from server.realtime.catchup import BusCatchUp
from server.realtime.dashboard_push import DashboardPush
from server.realtime.direct_write import DirectEmitManager, RedisManager, install_direct_writes
from server.realtime.emitter import ADMINS_ROOM, dashboard_room, job_room, stats_room, user_room
from server.realtime.fanout import Fanout, SocketState, encode_event
from server.realtime.live_stats import LiveStats
from server.realtime.socketio_compat import close_redis_manager, install_fast_writer, install_lean_sockets
from server.stats.live import job_stats
from server.timeutil import now_ms, parse_iso

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024  # a bigger Socket.IO message closes that connection (Engine.IO)
REPLAY_LIMIT = 5000  # past this many missed events a client is told to resync instead
MAX_SUBSCRIPTIONS = 100  # job rooms per socket
MAX_EVENT_ID = 2**53  # what a JavaScript client can hold exactly
RATE = 20.0  # messages per second a socket may send, on average...
BURST = 40.0  # ...with bursts up to this many


class _OrjsonPacker:
    """The `json` module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


class Realtime:
    """Owns the Socket.IO server: connection checks, rooms, handlers and emits."""

    def __init__(self, sio: socketio.AsyncServer, settings: Settings, *, auth: Authenticator, accounts: Accounts,
                 jobs: JobStore, events: JobEventLog, fanout: Fanout, alerts: Alerts, live_stats: LiveStats,
                 scope: JobScope, dashboard: DashboardPush, metrics: Metrics, catchup: BusCatchUp):
        self.sio = sio
        self.settings = settings
        self.auth = auth
        self.accounts = accounts
        self.jobs = jobs
        self.events = events
        self.fanout = fanout
        self.alerts = alerts
        self.live_stats = live_stats
        self.scope = scope
        self.dashboard = dashboard
        self.metrics = metrics
        self.catchup = catchup
        self._tasks: list[asyncio.Task] = []
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("resume", self._handler(self.on_resume))
        sio.on("subscribe", self._handler(self.on_subscribe))
        sio.on("unsubscribe", self._handler(self.on_unsubscribe))
        sio.on("get-stats", self._handler(self.on_get_stats))
        sio.on("watch-appstatus", self._handler(self.on_watch_appstatus))
        sio.on("unwatch-appstatus", self._handler(self.on_unwatch_appstatus))
        # the design's admin protocol, as aliases (see admin_feed): errors also come as an `error` event
        sio.on("subscribe:jobs", self._alias("subscribe:jobs", self.on_subscribe_jobs))
        sio.on("unsubscribe:jobs", self._alias("unsubscribe:jobs", self.on_unsubscribe_jobs))
        sio.on("request:job-stats", self._alias("request:job-stats", self.on_request_job_stats))
        sio.on("*", self.on_unknown)

    def __repr__(self) -> str:
        return f"Realtime(sockets={self.connected_count})"

    @property
    def connected_count(self) -> int:
        """Sockets connected to this node."""
        return len(self.fanout.sockets)

    async def start(self) -> None:
        """Start the fan-out and the periodic work (revalidation, stats, stuck jobs, pruning)."""
        await self.fanout.start()
        await self.catchup.start()
        s = self.settings
        self._tasks = [
            asyncio.create_task(every(s.socket_revalidate, "revalidating sockets", self.revalidate)),
            asyncio.create_task(every(s.stats_interval, "periodic job-stats", self.live_stats.push_periodic)),
            asyncio.create_task(every(min(s.stuck_after / 2, 30.0), "stuck-job check", self._check_stuck)),
            asyncio.create_task(every(3600.0, "pruning alerts", self._prune_alerts)),
        ]

    async def stop(self) -> None:
        """Stop the background work."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.live_stats.stop()
        await self.dashboard.stop()
        await self.catchup.stop()
        await self.fanout.stop()
        await self.sio.shutdown()
        await close_redis_manager(self.sio.manager)

    # -- connection ------------------------------------------------------------------------
    async def _authenticate(self, environ: dict, auth: Any) -> Principal:
        """The principal of a new socket, or a refusal whose message a client can show."""
        refuse = socketio.exceptions.ConnectionRefusedError
        authn = self.auth
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

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> bool | None:
        try:
            principal = await self._authenticate(environ, auth)
        except DatabaseOutage as outage:  # the client's reconnection tries again
            self.metrics.socket_connected(accepted=False)
            raise socketio.exceptions.ConnectionRefusedError(
                outage.message, {"code": outage.code}) from None
        except socketio.exceptions.ConnectionRefusedError:
            self.metrics.socket_connected(accepted=False)
            raise
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        state = SocketState(sid, eio_sid, principal, allowance=BURST,
                            checked_at=asyncio.get_running_loop().time())
        # The last wait is before the socket joins its rooms and the Fanout: its CONNECT packet,
        # sent when this handler returns, must be the first thing it gets (a job-stats or a
        # job-update sent to it while the handler waited would go out ahead of it).
        baseline = await self.catchup.read_baseline(state)
        socket = self.sio.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            # it left while the handler waited: python-socketio calls no disconnect handler for a
            # socket still connecting, so refusing it is what forgets it
            return False
        self.metrics.socket_connected(accepted=True)
        await self.sio.save_session(sid, {"principal": principal})  # these awaits never wait
        await self.sio.enter_room(sid, user_room(principal.user_id))
        await self.sio.enter_room(sid, ADMINS_ROOM if principal.is_admin else stats_room(principal.user_id))
        self.fanout.add(state)
        self.catchup.watch(state, baseline)

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        if self.fanout.remove(sid) is not None:  # a refused connection never joined
            self.metrics.socket_disconnected()
        self.dashboard.left(sid)

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
        live_sessions = await self.accounts.live_session_ids(sessions)
        live_tokens = await self.accounts.live_token_ids(tokens)
        dropped = 0
        for state in sockets:
            p = state.principal
            if (p.session_id and p.session_id not in live_sessions) or \
                    (p.token_id is not None and p.token_id not in live_tokens):
                await self.sio.disconnect(state.sid)
                dropped += 1
        return dropped

    # -- handlers --------------------------------------------------------------------------
    def _handler(self, work):
        """Wrap an event handler: rate limit, one payload argument, errors as acks."""

        async def handle(sid: str, *args: Any) -> dict:
            state = self.fanout.sockets.get(sid)
            if state is None:
                return error_ack("unauthorized", "Not connected", 401)
            if not self._allow(state):
                return error_ack("rate_limited", f"Too many messages: at most {RATE:g} per second", 429)
            try:
                return await work(state, args[0] if args else None)
            except AppError as exc:
                return exc.to_ack()
            except Exception:
                logger.exception("Socket.IO handler %s failed", work.__name__)
                return error_ack("internal_error", "Internal server error", 500)

        return handle

    def _alias(self, event: str, work):
        """Wrap a handler of the design's admin protocol: as `_handler`, and an error is also sent
        to the socket as an `error` event `{"event", "code", "message", "status", "details"}` (its
        clients listen for that rather than read acks)."""
        handle = self._handler(work)

        async def handle_alias(sid: str, *args: Any) -> dict:
            answer = await handle(sid, *args)
            if "error" in answer and sid in self.fanout.sockets:
                await self.fanout.send([sid], encode_event(self.sio, "error", {"event": event, **answer["error"]}))
            return answer

        return handle_alias

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
            return error_ack("rate_limited", f"Too many messages: at most {RATE:g} per second", 429)
        return error_ack("unknown_event", f"Unknown event {str(event)[:64]!r}: use resume, subscribe, "
                                           "unsubscribe, get-stats, watch-appstatus, unwatch-appstatus, "
                                           "subscribe:jobs, unsubscribe:jobs or request:job-stats", 400)

    async def on_resume(self, state: SocketState, data: Any) -> dict:
        """Replay the user's job-update events after `last_event_id`, in order, then ack.

        Optional `alerts_since` (ISO time) also replays the job-alerts raised since then.
        """
        wanted = "Send {\"last_event_id\": <non-negative integer>} (and optionally \"alerts_since\")"
        if not isinstance(data, dict):
            return error_ack("validation_error", wanted)
        last = data.get("last_event_id")
        if last is not None and (not is_int(last) or not 0 <= last <= MAX_EVENT_ID):
            return error_ack("validation_error", wanted)
        if last is None and data.get("alerts_since") is None:
            return error_ack("validation_error", wanted)
        since_ms = None
        if data.get("alerts_since") is not None:
            raw = data["alerts_since"]
            try:
                if not isinstance(raw, str) or len(raw) > 40:
                    raise ValueError
                since_ms = parse_iso(raw)
            except (ValueError, OverflowError):
                return error_ack("validation_error", "alerts_since must be an ISO 8601 time like "
                                                      "2026-01-01T00:00:00Z")
        result: dict = {}
        if last is not None:
            async with self.fanout.lock:
                if state.resuming:
                    return error_ack("busy", "A resume is already running on this connection", 409)
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
            await self.fanout.send_resync(state, "admin_view")
            result.update(recovered=False, reason="admin_view")
        return result

    async def _replay(self, state: SocketState, last: int) -> dict:
        """Send the socket its user's events after `last`, until it has caught up with this node."""
        user_id = state.principal.user_id
        counter = await self.events.last_id(user_id)
        if last > counter:
            return await self._resync_socket(state, "unknown_event_id")
        cursor, replayed = last, 0
        while True:
            rows = await self.events.read(user_id, cursor, REPLAY_LIMIT + 1 - replayed)
            if cursor == last and ((rows and rows[0][1]["event_id"] != last + 1) or (not rows and counter > last)):
                return await self._resync_socket(state, "events_expired")
            if replayed + len(rows) > REPLAY_LIMIT:
                return await self._resync_socket(state, "too_many_missed_events")
            for name, payload in rows:
                await self.fanout.send([state.sid], encode_event(self.sio, name, payload))
            if rows:
                cursor, replayed = rows[-1][1]["event_id"], replayed + len(rows)
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
        await self.fanout.send_resync(state, reason)
        return {"recovered": False, "reason": reason}

    async def on_subscribe(self, state: SocketState, data: Any) -> dict:
        """Join `job:<id>` (app-status updates of one job) after an ownership check; or, with
        `{"dashboard": true}`, get the pipeline summary now and `dashboard-summary` after changes."""
        if _dashboard(data):
            key = None if state.principal.is_admin else state.principal.user_id
            await self.sio.enter_room(state.sid, dashboard_room(key))
            self.dashboard.joined(state.sid, key)
            return {"ok": True, "summary": await self.dashboard.summary(key)}
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        if job_id not in state.subscriptions and len(state.subscriptions) >= MAX_SUBSCRIPTIONS:
            return error_ack("too_many_subscriptions", f"At most {MAX_SUBSCRIPTIONS} jobs per connection: "
                                                        "unsubscribe from one first", 429)
        state.subscriptions.add(job_id)
        await self.sio.enter_room(state.sid, job_room(job_id))
        return {"ok": True}

    async def on_unsubscribe(self, state: SocketState, data: Any) -> dict:
        if _dashboard(data):
            key = None if state.principal.is_admin else state.principal.user_id
            await self.sio.leave_room(state.sid, dashboard_room(key))
            self.dashboard.left(state.sid)
            return {"ok": True}
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        state.subscriptions.discard(job_id)
        await self.sio.leave_room(state.sid, job_room(job_id))
        return {"ok": True}

    async def _owned_job(self, state: SocketState, data: Any) -> str | dict:
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), str) or len(data["job_id"]) > 64:
            return error_ack("validation_error", "Send {\"job_id\": \"<uuid>\"} (or, to subscribe to the "
                                                  "pipeline summary, {\"dashboard\": true})")
        p = state.principal
        job = await self.jobs.get_for(parse_job_id(data["job_id"]), p.user_id, p.is_admin)
        return job["job_id"]

    async def on_watch_appstatus(self, state: SocketState, data: Any) -> dict:
        """`{"job_id", "app"?, "ttl_seconds"?}`: subscribe to the job, and keep its app status
        fresh (fetched again as it expires) while this socket stays subscribed."""
        app, ttl_seconds = self.scope.watch_params(data)
        subscribed = await self.on_subscribe(state, data)
        if "error" in subscribed:
            return subscribed
        return await self.scope.watch(state.sid, parse_job_id(data["job_id"]), app, ttl_seconds)

    async def on_unwatch_appstatus(self, state: SocketState, data: Any) -> dict:
        """`{"job_id", "app"?}`: stop keeping that job's app status fresh for this socket."""
        job_id = await self._owned_job(state, data)
        if isinstance(job_id, dict):
            return job_id
        return self.scope.unwatch(state.sid, job_id, data)

    async def on_get_stats(self, state: SocketState, data: Any) -> dict:
        """The current job-stats payload: the user's own, or all users' for an admin."""
        p = state.principal
        return await job_stats(self.live_stats.db, None if p.is_admin else p.user_id)

    # -- the design's admin protocol (aliases) ----------------------------------------------------
    async def on_subscribe_jobs(self, state: SocketState, data: Any) -> dict:
        """Admins: every user's job-update events from now on, only those matching the filters
        given (`status`, `user`, `action`, `cluster`), replacing the previous ones."""
        _require_admin(state, "subscribe:jobs")
        feed = await parse_job_feed(data, self.accounts.find_user)
        state.job_feed = None if feed == JobFeed() else feed
        return {"ok": True, "filters": feed.public()}

    async def on_unsubscribe_jobs(self, state: SocketState, data: Any) -> dict:
        """Admins: no more job-update events of other users (their own still come)."""
        _require_admin(state, "unsubscribe:jobs")
        state.job_feed = UNSUBSCRIBED
        return {"ok": True}

    async def on_request_job_stats(self, state: SocketState, data: Any) -> dict:
        """The current job-stats (all users' for an admin), sent as a `job-stats` event and acked."""
        stats = await self.on_get_stats(state, data)
        await self.fanout.send([state.sid], encode_event(self.sio, "job-stats", stats))
        return stats

    # -- periodic work -----------------------------------------------------------------------
    async def _check_stuck(self) -> None:
        await self.alerts.jobs_stuck(await self.jobs.flag_stuck(int(self.settings.stuck_after * 1000)))

    async def _prune_alerts(self) -> None:
        await self.alerts.prune(now_ms() - self.settings.event_retention_days * 86_400_000)


def _require_admin(state: SocketState, event: str) -> None:
    """403 `admin_required` unless the socket is an admin's acting as admin (not a read token)."""
    if not state.principal.is_admin:
        raise Forbidden(f"{event} is for admins (a session, or an admin-scoped token): it would show "
                        "every user's jobs", code="admin_required")


def _dashboard(data: Any) -> bool:
    """A subscribe or unsubscribe about the dashboard summary: `{"dashboard": true}`."""
    return isinstance(data, dict) and data.get("dashboard") is True and "job_id" not in data


def create_socketio_server(settings: Settings) -> socketio.AsyncServer:
    """The python-socketio server: Redis manager when configured, origin checks, orjson."""
    manager = (RedisManager(settings.redis_url, channel=f"{settings.redis_channel}:socketio")
               if settings.redis_url else DirectEmitManager())
    allowed = set(settings.allowed_origins)

    def origin_allowed(origin: str | None, environ: dict) -> bool:
        # same-origin pages always, plus the configured allow-list; never "any origin"
        if origin is None:
            return True
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin.rstrip("/") == own or origin.rstrip("/") in allowed

    server = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=origin_allowed,
        cors_credentials=True,
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        http_compression=False,  # broadcasts are small and many: compressing costs more than it saves
        json=_OrjsonPacker,
    )
    install_fast_writer()  # Engine.IO's per-socket writer without a Task per packet
    install_direct_writes(server.eio)  # job events framed once and written to each WebSocket
    install_lean_sockets(server.eio)  # less memory per connection
    return server

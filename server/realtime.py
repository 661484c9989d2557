"""The Socket.IO side: authenticated connections, per-user rooms, and pushing job events.

Rooms: every socket joins `user:<id>`; admins also join `admins`; `subscribe` adds
`job:<id>` after an ownership check. Clients never name a room themselves. With Redis configured
the AsyncRedisManager carries every emit to the sockets on all nodes.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import socketio
import sqlalchemy as sa

from . import db as tables
from .accounts import Principal
from .errors import AppError
from .jobs import parse_job_id
from .config import Settings
from .services import Services
from .stats import job_stats

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
REPLAY_LIMIT = 5000  # past this many missed events a client is told to resync instead


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


def job_room(job_id: str) -> str:
    return f"job:{job_id}"


class Realtime:
    """Owns the Socket.IO server: connection checks, rooms, handlers and emits."""

    def __init__(self, settings: Settings):
        self.services: Services | None = None
        manager = socketio.AsyncRedisManager(settings.redis_url) if settings.redis_url else None
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
            max_http_buffer_size=MAX_MESSAGE_BYTES,
            http_compression=False,
            json=_OrjsonPacker,
        )
        self.connected_count = 0
        # sid -> (session_id, token_id), for disconnecting a socket whose credential ends
        self._credentials: dict[str, tuple[str | None, int | None]] = {}
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("resume", self.on_resume)
        self.sio.on("subscribe", self.on_subscribe)
        self.sio.on("unsubscribe", self.on_unsubscribe)
        self.sio.on("get-stats", self.on_get_stats)
        self.sio.on("*", self.on_unknown)

    def attach(self, services: Services) -> None:
        """Start serving with the running server's services (built in the lifespan)."""
        self.services = services
        services.realtime = self
        services.jobs.add_listener(self.publish_job_events)

    async def start(self) -> None:
        """Start the background work (periodic stats, alerts)."""

    async def stop(self) -> None:
        """Stop the background work."""

    # -- connection ------------------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        auth_service = self.services.auth
        principal: Principal | None = None
        if isinstance(auth, dict) and auth.get("token") is not None:
            token = auth["token"]
            if not isinstance(token, str) or len(token) > 200:
                raise socketio.exceptions.ConnectionRefusedError(
                    {"code": "invalid_token", "message": "auth.token must be an API token string"})
            principal = await auth_service.from_token(token)
            if principal is None:
                raise socketio.exceptions.ConnectionRefusedError(
                    {"code": "invalid_token", "message": "Invalid or revoked API token"})
        else:
            principal = await auth_service.from_cookie_header(environ.get("HTTP_COOKIE"))
            if principal is None:
                raise socketio.exceptions.ConnectionRefusedError(
                    {"code": "unauthorized", "message": "Log in first, or connect with auth: {token}"})
        await self.sio.save_session(sid, {"principal": principal})
        await self.sio.enter_room(sid, user_room(principal.user_id))
        if principal.is_admin:
            await self.sio.enter_room(sid, "admins")
        self._credentials[sid] = (principal.session_id, principal.token_id)
        self.connected_count += 1

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        if self._credentials.pop(sid, None) is not None:
            self.connected_count -= 1

    async def disconnect_credential(self, *, session_id: str | None = None, token_id: int | None = None) -> None:
        """Disconnect this node's sockets that use a session or token that just ended."""
        for sid, (sess, tok) in list(self._credentials.items()):
            if (session_id is not None and sess == session_id) or (token_id is not None and tok == token_id):
                await self.sio.disconnect(sid)

    async def _principal(self, sid: str) -> Principal:
        session = await self.sio.get_session(sid)
        return session["principal"]

    # -- handlers ---------------------------------------------------------------------------
    async def on_unknown(self, event: str, sid: str, *args: Any) -> dict:
        return {"error": {"code": "unknown_event", "message": f"Unknown event {event[:64]!r}"}}

    async def on_resume(self, sid: str, data: Any = None) -> dict:
        """Replay the user's job-update events after `last_event_id`, in order, then ack."""
        principal = await self._principal(sid)
        if not isinstance(data, dict) or not _is_int(data.get("last_event_id")) or data["last_event_id"] < 0:
            return _ack_error("validation_error", "Send {\"last_event_id\": <non-negative integer>}")
        last = data["last_event_id"]
        e = tables.job_events
        rows = await self.services.db.fetch_all(
            sa.select(e.c.event_id, e.c.kind, e.c.payload).where(e.c.user_id == principal.user_id,
                                                                 e.c.event_id > last)
            .order_by(e.c.event_id).limit(REPLAY_LIMIT + 1))
        oldest_kept = await self.services.db.fetch_val(
            sa.select(sa.func.min(e.c.event_id)).where(e.c.user_id == principal.user_id))
        pruned_gap = oldest_kept is not None and oldest_kept > last + 1 and last > 0
        if len(rows) > REPLAY_LIMIT or pruned_gap:
            await self.sio.emit("resync", {"reason": "too many missed events" if rows else "events expired"},
                                to=sid)
            return {"recovered": False}
        for row in rows:
            await self.sio.emit("job-update", {"event_id": row.event_id, "kind": row.kind,
                                               "job": orjson.loads(row.payload)}, to=sid)
        return {"replayed": len(rows)}

    async def on_subscribe(self, sid: str, data: Any = None) -> dict:
        job_id = await self._owned_job(sid, data)
        if isinstance(job_id, dict):
            return job_id
        await self.sio.enter_room(sid, job_room(job_id))
        return {"ok": True}

    async def on_unsubscribe(self, sid: str, data: Any = None) -> dict:
        job_id = await self._owned_job(sid, data)
        if isinstance(job_id, dict):
            return job_id
        await self.sio.leave_room(sid, job_room(job_id))
        return {"ok": True}

    async def _owned_job(self, sid: str, data: Any) -> str | dict:
        principal = await self._principal(sid)
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), str) or len(data["job_id"]) > 64:
            return _ack_error("validation_error", "Send {\"job_id\": \"<uuid>\"}", 400)
        try:
            job = await self.services.jobs.get_for(parse_job_id(data["job_id"]), principal.user_id,
                                                   principal.is_admin)
        except AppError as exc:
            return _ack_error(exc.code, exc.message, exc.status)
        return job["job_id"]

    async def on_get_stats(self, sid: str, data: Any = None) -> dict:
        principal = await self._principal(sid)
        return await job_stats(self.services.db, None if principal.is_admin else principal.user_id)

    # -- pushing ----------------------------------------------------------------------------
    async def publish_job_events(self, events: list[dict]) -> None:
        """Emit committed job events to their owner's room and to admins."""
        for event in events:
            payload = {"event_id": event["event_id"], "kind": event["kind"], "job": event["job"]}
            await self.sio.emit("job-update", payload, room=[user_room(event["user_id"]), "admins"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ack_error(code: str, message: str, status: int = 400) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}

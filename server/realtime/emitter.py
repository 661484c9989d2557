"""The rooms, and the small interface through which components emit Socket.IO events.

Components that push events (alerts, the app-status scope, live job-stats) get an `Emitter`, not
the whole Socket.IO layer: they name an event, its payload and the rooms, and may ask whether a
socket is still in a room. `SocketEmitter` is the real one, over python-socketio's server (so
with Redis configured an emit reaches the sockets of every node).

Rooms: every socket joins `user:<id>`; admins (with admin rights) also join `admins`, everyone
else `stats:<id>` (so an admin's dashboard gets the all-users `job-stats` only); `subscribe` adds
`job:<id>` after an ownership check, and `subscribe {"dashboard": true}` adds `dashboard:<id>` (admins:
`dashboard:admins`). Clients never name a room themselves.
"""

from __future__ import annotations

from typing import Any, Protocol

import socketio

ADMINS_ROOM = "admins"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def stats_room(user_id: int) -> str:
    return f"stats:{user_id}"


def job_room(job_id: str) -> str:
    return f"job:{job_id}"


def dashboard_room(user_id: int | None) -> str:
    """The sockets that asked for a user's `dashboard-summary` (None: the admins' all-users one)."""
    return "dashboard:admins" if user_id is None else f"dashboard:{user_id}"


class Emitter(Protocol):
    """What a component needs to push events to sockets."""

    async def emit(self, event: str, data: Any, rooms: str | list[str], *, this_node_only: bool = False) -> None:
        """Send `event` to every socket in `rooms` (on every node unless `this_node_only`)."""

    def in_room(self, sid: str, room: str) -> bool:
        """Whether this node's socket `sid` is (still) in `room`."""


class SocketEmitter:
    """An Emitter over a python-socketio server."""

    def __init__(self, sio: socketio.AsyncServer):
        self._sio = sio

    def __repr__(self) -> str:
        return f"SocketEmitter({type(self._sio.manager).__name__})"

    async def emit(self, event: str, data: Any, rooms: str | list[str], *, this_node_only: bool = False) -> None:
        await self._sio.emit(event, data, room=rooms, ignore_queue=this_node_only)

    def in_room(self, sid: str, room: str) -> bool:
        return room in self._sio.rooms(sid)

"""A recording Socket.IO client for the realtime tests: python-socketio's AsyncClient over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Callable

import socketio

from support import db_rows

FINAL = ("SUCCESS", "FAILED", "PARTIAL", "CANCELLED")
CIDS = [f"C{i:04d}" for i in range(3)]


class Refused(Exception):
    """The server refused the connection; `reason` is what the client was told (or None)."""

    def __init__(self, reason: dict | None, cause: Exception):
        super().__init__(f"refused: {reason} ({cause})")
        self.reason = reason


class SioClient:
    """Connects like a browser (cookie, Origin) or a listener (token) and records what arrives."""

    def __init__(self, *, reconnect: bool = False, resume: bool = False):
        self.sio = socketio.AsyncClient(reconnection=reconnect, reconnection_delay=0.2,
                                        reconnection_delay_max=0.5)
        self.events: list[tuple[str, Any]] = []
        self.refusal: dict | None = None
        self.disconnects = 0
        self.connects = 0
        self.resume_acks: list[dict] = []
        self._resume = resume
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._refused)
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", self._disconnected)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def _refused(self, data: Any = None) -> None:
        self.refusal = data

    async def _connected(self) -> None:
        self.connects += 1
        if self._resume and self.connects > 1:
            # after a reconnection, ask for what was missed (in a task: handlers must not block)
            asyncio.get_running_loop().create_task(self._resume_now())

    async def _resume_now(self) -> None:
        ack = await self.sio.call("resume", {"last_event_id": self.last_event_id()}, timeout=10)
        self.resume_acks.append(ack)

    async def _disconnected(self, *args: Any) -> None:
        self.disconnects += 1

    async def connect(self, url: str, *, token: Any = None, cookie: str | None = None, origin: str | None = None,
                      auth: Any = None, transports=("websocket",)) -> "SioClient":
        headers = {}
        if cookie is not None:
            headers["Cookie"] = cookie
        if origin is not None:
            headers["Origin"] = origin
        if token is not None:
            auth = {"token": token}
        try:
            await self.sio.connect(url, headers=headers, auth=auth, transports=list(transports), wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            await self.close()
            raise Refused(self.refusal, exc) from None
        return self

    async def close(self) -> None:
        await self.sio.disconnect()
        await self.sio.shutdown()

    @property
    def connected(self) -> bool:
        return self.sio.connected

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    def of(self, name: str) -> list:
        return [data for event, data in self.events if event == name]

    def updates(self, job_id: str | None = None) -> list[dict]:
        return [u for u in self.of("job-update") if job_id is None or u["job"]["job_id"] == job_id]

    def last_event_id(self) -> int:
        ids = [u["event_id"] for u in self.updates()]
        return max(ids) if ids else 0

    def finished(self, job_id: str) -> dict | None:
        for update in self.updates(job_id):
            if update["job"]["status"] in FINAL:
                return update["job"]
        return None

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {self.events[-10:]}")
            await asyncio.sleep(0.01)

    async def wait_finished(self, job_id: str, timeout: float = 20) -> dict:
        return await self.wait_for(lambda: self.finished(job_id), timeout, f"job {job_id} to finish")


def session_cookie(api) -> str:
    """The Cookie header a browser logged in through `api` sends."""
    return f"jobmon_session={api.http.cookies.get('jobmon_session')}"


async def user_events(server, user_id: int) -> list[tuple[int, str]]:
    """(event_id, kind) of every job event of a user, from the database."""
    rows = await asyncio.to_thread(db_rows, server.settings.database_url,
                                   "SELECT event_id, kind FROM job_events WHERE user_id = $1 ORDER BY event_id",
                                   user_id)
    return [(r[0], r[1]) for r in rows]


def db_write(server, sql: str) -> None:
    """Change the database behind the server's back, as another node or an operator would."""
    url = server.settings.database_url
    if url.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as conn:
            conn.execute(sql)
            conn.commit()
        return
    import asyncpg

    async def run():
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


async def start(api, cids, **kwargs) -> dict:
    return await asyncio.to_thread(api.start, cids, **kwargs)

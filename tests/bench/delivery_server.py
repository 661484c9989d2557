"""Job Monitor's live delivery path alone, served for tests/bench/bench_vs_node.py.

    .venv/bin/python tests/bench/delivery_server.py PORT JOB_JSON

What runs is the project's own Socket.IO stack, built as `python -m server serve` builds it: the
python-socketio server of `create_socketio_server` (with Engine.IO's writer and the direct
WebSocket writes it installs), uvicorn with `UVICORN_OPTIONS` and the same garbage-collector
tuning, the `Realtime` connect and disconnect handlers (a socket's state, its rooms, its registration with the Fanout),
and the `Fanout` delivering each event. One thing differs, here only: a socket is not
authenticated; its handshake's `auth.user` names its user. There is no database: the events are
made up by the emit loop below, in the shape the job store gives them to the Fanout.

GET /bench/ready answers 200. POST /bench/emit?mode=per-user|broadcast&rate=R&seconds=S&users=U
emits `job-update` events for S seconds, R a second (0: as fast as possible, yielding to the
event loop after each), each carrying JOB_JSON's job and `at`, the time of the emit:
- per-user: to one user at a time (round robin), through `Fanout.publish`, i.e. the consumer's
  per-user ordering and encode-once send to that user's sockets, as a committed job event goes;
- broadcast: to every socket, encoded once and queued on each with `Fanout.send`.
The Node.js side (node/server.js) does the same with socket.io's rooms and `io.emit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import socketio  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from server.accounts.store import Principal, Scope  # noqa: E402
from server.config import Settings  # noqa: E402
from server.metrics import Metrics  # noqa: E402
from server.realtime.catchup import BusCatchUp  # noqa: E402
from server.realtime.dashboard_push import DashboardPush  # noqa: E402
from server.realtime.fanout import Fanout, encode_event  # noqa: E402
from server.realtime.namespace import Realtime, create_socketio_server  # noqa: E402
from server.timeutil import iso, now_ms  # noqa: E402


class UnauthenticatedRealtime(Realtime):
    """The real connect handler, with the handshake's `auth.user` taken at its word."""

    async def _authenticate(self, environ: dict, auth) -> Principal:
        user = int(auth["user"])
        return Principal(user_id=user, username=f"user{user}", role="user", scope=Scope.WRITE, via="token")


def unauthenticated_realtime(sio: socketio.AsyncServer, settings: Settings, fanout: Fanout,
                             catchup: BusCatchUp) -> Realtime:
    """The Realtime handlers over these parts alone: no database, accounts, jobs or alerts behind them."""
    return UnauthenticatedRealtime(
        sio, settings, auth=None, accounts=None, jobs=None, events=None, fanout=fanout, alerts=None,
        live_stats=None, scope=None, dashboard=DashboardPush(None, None, multi_node=False), metrics=Metrics(),
        catchup=catchup)


class Emitter:
    """Makes up job events and hands them to the Fanout, like the job store after its commits."""

    def __init__(self, fanout: Fanout, job: dict):
        self.fanout = fanout
        self.job = job
        self._per_user: dict[int, int] = {}  # user -> last event id
        self._broadcast_id = 0
        self._tasks: set[asyncio.Task] = set()

    async def emit_one(self, mode: str, n: int, users: int) -> None:
        if mode == "broadcast":
            self._broadcast_id += 1
            payload = {"event_id": self._broadcast_id, "kind": "progress", "job": {**self.job, "done": n},
                       "at": iso(now_ms())}
            await self.fanout.send(list(self.fanout.sockets), encode_event(self.fanout.sio, "job-update", payload))
        else:
            user = n % users
            event_id = self._per_user[user] = self._per_user.get(user, 0) + 1
            await self.fanout.publish([{"event_id": event_id, "topic": "job", "kind": "progress",
                                        "job": {**self.job, "user_id": user, "done": n}, "user_id": user,
                                        "at": now_ms()}])

    async def run(self, mode: str, rate: float, seconds: float, users: int) -> None:
        start = time.monotonic()
        end = start + seconds
        sent = 0
        if rate > 0:
            total = int(seconds * rate)
            while True:
                now = time.monotonic()
                due = min(int((now - start) * rate), total)
                while sent < due:
                    await self.emit_one(mode, sent, users)
                    sent += 1
                    # let the consumer send it before the next is stamped: Node's emit writes each
                    # event before its loop stamps the next, and a burst stamped all at once would
                    # count the writes of the ones before it as each event's delay
                    await asyncio.sleep(0)
                if now >= end:
                    return
                await asyncio.sleep(0.002)
        else:
            while time.monotonic() < end:
                await self.emit_one(mode, sent, users)
                sent += 1
                await asyncio.sleep(0)  # let the consumer and the sockets' writers run

    def start(self, mode: str, rate: float, seconds: float, users: int) -> None:
        task = asyncio.create_task(self.run(mode, rate, seconds, users))
        self._tasks.add(task)  # a reference, so the task is not garbage collected mid-way
        task.add_done_callback(self._tasks.discard)


def create_app(job: dict):
    settings = Settings()
    sio = create_socketio_server(settings)
    fanout = Fanout(sio, events=None)  # no database: the emitted ids leave no gap to fill
    # one node: no bus to catch up on
    realtime = unauthenticated_realtime(sio, settings, fanout, BusCatchUp(fanout, None, None, None, interval=0,
                                                                           enabled=False))
    emitter = Emitter(fanout, job)

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"ok {realtime.connected_count}")

    async def emit(request: Request) -> PlainTextResponse:
        q = request.query_params
        emitter.start(q["mode"], float(q["rate"]), float(q["seconds"]), int(q["users"]))
        return PlainTextResponse("started", status_code=202)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await fanout.start()
        yield
        await fanout.stop()

    app = Starlette(routes=[Route("/bench/ready", ready), Route("/bench/emit", emit, methods=["POST"])],
                    lifespan=lifespan)
    return socketio.ASGIApp(sio, other_asgi_app=app)


def main() -> None:
    import uvicorn

    from server.app import UVICORN_OPTIONS
    from server.cli.commands import _tune_gc

    port, job = int(sys.argv[1]), orjson.loads(sys.argv[2])
    _tune_gc()
    uvicorn.run(create_app(job), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()

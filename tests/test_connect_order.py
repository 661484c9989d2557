"""A socket's Socket.IO CONNECT packet is the first thing it gets: what is sent to its user while its
connect handler still waits (with Redis, it reads where the user's events stand) does not go out
ahead of it, as a client expects the connection to be confirmed before any event of it."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import orjson
import pytest
import socketio
from starlette.applications import Starlette
from websockets.sync.client import connect

from bench.delivery_server import unauthenticated_realtime
from server.config import Settings
from server.realtime.catchup import BusCatchUp
from server.realtime.emitter import stats_room
from server.realtime.fanout import Fanout
from server.realtime.namespace import create_socketio_server
from support import ThreadedServer


class HeldCounters:
    """The event log's read of a user's counters, held until the test lets it go: the connect
    handler's wait, made as long as the test needs."""

    def __init__(self):
        self.reading = threading.Event()
        self.release: asyncio.Event | None = None

    async def counters(self, user_ids):
        self.release = asyncio.Event()
        self.reading.set()
        await self.release.wait()
        return {user_id: 0 for user_id in user_ids or ()}


@pytest.fixture
def node():
    settings = Settings()
    sio = create_socketio_server(settings)
    counters = HeldCounters()
    fanout = Fanout(sio, events=None)
    # the real connect handler (the handshake's `auth.user` taken at its word), catching up as with Redis
    realtime = unauthenticated_realtime(sio, settings, fanout, BusCatchUp(fanout, counters, None, None, interval=0,
                                                                           enabled=True))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await fanout.start()
        yield
        await fanout.stop()

    server = ThreadedServer(socketio.ASGIApp(sio, other_asgi_app=Starlette(lifespan=lifespan))).start()
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, server.server._loop).result(10)

    yield url, sio, fanout, counters, realtime, run
    server.stop()


def job_event(event_id: int) -> dict:
    return {"event_id": event_id, "topic": "job", "kind": "progress", "user_id": 7, "at": 1_700_000_000_000,
            "job": {"job_id": "job-1", "done": event_id}}


def test_the_connect_packet_goes_out_before_what_was_sent_while_the_socket_was_joining(node):
    url, sio, fanout, counters, realtime, run = node
    with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        assert ws.recv(timeout=10).startswith("0")  # Engine.IO open
        ws.send("40" + orjson.dumps({"user": 7}).decode())
        assert counters.reading.wait(10)  # the handler waits on the read
        # meanwhile the user's figures and a job event go out to the user's sockets
        run(sio.emit("job-stats", {"user_id": 7, "running": 1}, room=stats_room(7)))
        run(fanout.publish([job_event(1)]))
        run(asyncio.sleep(0.05))  # the Fanout's consumer has had its turn

        async def release():
            counters.release.set()

        run(release())
        first = ws.recv(timeout=10)
        assert first.startswith("40"), f"the first packet after the handshake was {first[:80]!r}"
        assert orjson.loads(first[2:])["sid"]
        # from the confirmation on, the socket gets its user's events
        run(fanout.publish([job_event(2)]))
        while (message := ws.recv(timeout=10)) == "2":
            ws.send("3")
        name, data = orjson.loads(message[2:])
        assert (name, data["event_id"], data["job"]["done"]) == ("job-update", 2, 2)
        assert realtime.connected_count == 1


def test_a_socket_that_leaves_while_its_connect_waits_is_not_kept(node):
    url, _sio, fanout, counters, _realtime, run = node
    with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        assert ws.recv(timeout=10).startswith("0")
        ws.send("40" + orjson.dumps({"user": 7}).decode())
        assert counters.reading.wait(10)
    run(asyncio.sleep(0.2))  # the server has seen the connection close

    async def release():
        counters.release.set()
        await asyncio.sleep(0.05)

    run(release())
    assert fanout.sockets == {} and fanout.by_user == {}
    run(fanout.publish([job_event(1)]))  # nothing to send it to, and nothing breaks
    run(asyncio.sleep(0.05))
    assert fanout.delivered == 0

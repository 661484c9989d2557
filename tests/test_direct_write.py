"""Job events written straight to each socket's WebSocket (server/realtime/direct_write.py): the
same bytes as the usual path, in the order they were sent, nothing lost when a client reads slowly,
and a slow client does not hold the others back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import engineio
import orjson
import pytest
import socketio
from starlette.applications import Starlette
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from server.accounts.store import Principal, Scope
from server.config import Settings
from server.realtime.direct_write import websocket_frame
from server.realtime.fanout import Fanout, SocketState, encode_event
from server.realtime.namespace import create_socketio_server
from support import ThreadedServer


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 65534, 65535, 65536, 200_000])
def test_a_frame_is_the_one_the_websocket_library_makes(size):
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte characters: the length is in bytes
    packet = engineio.packet.Packet(engineio.packet.MESSAGE, "2" + text)
    expected = Frame(Opcode.TEXT, ("4" + "2" + text).encode()).serialize(mask=False, extensions=[])
    assert websocket_frame(packet) == expected

    binary = engineio.packet.Packet(engineio.packet.MESSAGE, b"\x00\xff" * (size // 2))
    assert websocket_frame(binary) == Frame(Opcode.BINARY, b"\x00\xff" * (size // 2)).serialize(mask=False, extensions=[])


class DeliveryServer:
    """The project's Socket.IO server and Fanout under uvicorn, sockets named by `auth.user`."""

    def __init__(self):
        self.sio = create_socketio_server(Settings())
        self.fanout = Fanout(self.sio, events=None)  # no database: the test's ids leave no gap to fill

        @self.sio.event
        async def connect(sid, environ, auth):
            user = int(auth["user"])
            principal = Principal(user_id=user, username=f"user{user}", role="user", scope=Scope.WRITE, via="token")
            self.fanout.add(SocketState(sid, self.sio.manager.eio_sid_from_sid(sid, "/"), principal))
            await self.sio.enter_room(sid, f"user:{user}")

        @self.sio.event
        async def disconnect(sid, reason=None):
            self.fanout.remove(sid)

        @contextlib.asynccontextmanager
        async def lifespan(app):
            await self.fanout.start()
            yield
            await self.fanout.stop()

        self.server = ThreadedServer(socketio.ASGIApp(self.sio, other_asgi_app=Starlette(lifespan=lifespan))).start()
        self.url = self.server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.server.server._loop).result(timeout)

    def publish(self, user: int, first_id: int, count: int, padding: int = 0) -> None:
        events = [{"event_id": i, "topic": "job", "kind": "progress", "user_id": user, "at": 1_700_000_000_000,
                   "job": {"job_id": f"job-{i}", "done": i, "error_message": "x" * padding}}
                  for i in range(first_id, first_id + count)]
        self.run(self.fanout.publish(events))

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def delivery():
    server = DeliveryServer()
    yield server
    server.stop()


@contextlib.contextmanager
def socketio_client(url: str, user: int, receive_buffer: int | None = None, **kwargs):
    """A protocol-level Socket.IO client over WebSocket: it reads only when the test says so.
    `receive_buffer`: the kernel's receive buffer, fixed (not grown as the kernel sees fit)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connecting: the window
    sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    with connect(url, sock=sock, compression=None, max_size=None, ping_interval=None, **kwargs) as ws:
        assert ws.recv(timeout=10).startswith("0")  # Engine.IO open
        ws.send("40" + orjson.dumps({"user": user}).decode())
        assert ws.recv(timeout=10).startswith("40")  # Socket.IO connect
        yield ws


def receive_events(ws, count: int, timeout: float = 60) -> list[tuple]:
    """The next `count` Socket.IO events (name, *arguments), answering Engine.IO pings on the way."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if message == "2":
            ws.send("3")
        elif message.startswith("42"):
            events.append(tuple(orjson.loads(message[2:])))
    return events


def event_ids(events) -> list[int]:
    return [data["event_id"] for name, data in events if name == "job-update"]


def no_more_messages(ws) -> bool:
    try:
        ws.recv(timeout=0.3)
    except TimeoutError:
        return True
    return False


def test_events_arrive_in_order_when_queued_packets_are_ahead_of_them(delivery):
    """A packet queued on a socket that its writer has not written yet goes out before a job event
    sent after it: the event waits in the queue too instead of jumping ahead."""
    with socketio_client(delivery.url, user=1) as ws:
        sid = next(iter(delivery.fanout.sockets))
        check_interleaved(delivery, ws, sid)


def check_interleaved(delivery, ws, sid) -> None:
    eio_sid = delivery.fanout.sockets[sid].eio_sid

    async def interleave():
        for i in range(1, 201):
            if i % 2:
                # queued on the socket; its writer writes it later (an emit waits until it has)
                await delivery.sio.eio.send_packet(eio_sid, encode_event(delivery.sio, "marker", {"n": i}))
            else:
                await asyncio.sleep(0.002)  # the writer catches up: this one can go straight out
            # what the Fanout's consumer does with a job event: encode once, send to the user's sockets
            await delivery.fanout.send([sid], encode_event(delivery.sio, "job-update", {"event_id": i}))

    queued_before = delivery.fanout.queued
    delivery.run(interleave())
    events = receive_events(ws, 300)
    seen = [(name, data["n"] if name == "marker" else data["event_id"]) for name, data in events]
    assert seen == [(name, i) for i in range(1, 201) for name in ("marker", "job-update") if i % 2 or name != "marker"]
    # both ways were taken: straight to the WebSocket, and behind a queued marker
    assert 0 < delivery.fanout.queued - queued_before < 200


def test_a_slow_reader_gets_everything_in_order_and_does_not_hold_the_others_back(delivery):
    """A client that stops reading fills its connection's buffers: its events then wait in its
    queue, and when it reads again it gets every one, in order, once. Another client of the same
    user gets them all meanwhile."""
    # the slow one's library stops reading at once (max_queue), and its kernel buffers little
    with socketio_client(delivery.url, user=7, max_queue=1, receive_buffer=65536) as slow, \
            socketio_client(delivery.url, user=7) as fast:
        fast_events: list = []
        reader = threading.Thread(target=lambda: fast_events.extend(receive_events(fast, 6000)), daemon=True)
        reader.start()

        queued_before = delivery.fanout.queued
        for first in range(1, 6001, 500):  # about 12 MB: far past what the kernel holds (4 MB sent)
            delivery.publish(user=7, first_id=first, count=500, padding=2000)
        reader.join(timeout=60)
        assert event_ids(fast_events) == list(range(1, 6001))  # the fast client was not held back

        assert delivery.fanout.queued - queued_before > 0  # the slow client's buffers did fill up
        assert event_ids(receive_events(slow, 6000)) == list(range(1, 6001))


def test_a_closed_connection_is_not_written_to(delivery):
    """A client gone mid-stream: the events for it are dropped quietly, the other client gets all."""
    with socketio_client(delivery.url, user=3) as gone, socketio_client(delivery.url, user=3) as stays:
        delivery.publish(user=3, first_id=1, count=10)
        gone.socket.shutdown(socket.SHUT_RDWR)  # abruptly: no closing handshake
        delivery.publish(user=3, first_id=11, count=10)
        time.sleep(0.2)
        delivery.publish(user=3, first_id=21, count=10)
        assert event_ids(receive_events(stays, 30)) == list(range(1, 31))
        deadline = time.monotonic() + 10
        while len(delivery.fanout.sockets) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(delivery.fanout.sockets) == 1


def test_a_room_emit_reaches_the_rooms_sockets_once_each_in_order_with_job_events(delivery):
    """An emit to a room (job-stats, job-alert...) goes to each of the room's sockets on this node,
    not to others nor to a skipped one, with several arguments as several, and between the job
    events sent before and after it."""
    with socketio_client(delivery.url, user=1) as first, socketio_client(delivery.url, user=1) as second, \
            socketio_client(delivery.url, user=2) as other:
        skipped = next(sid for sid, state in delivery.fanout.sockets.items() if state.principal.user_id == 1)

        users_sockets = list(delivery.fanout.by_user[1])

        async def emit():
            # as the Fanout's consumer sends a job event to a user's sockets
            await delivery.fanout.send(users_sockets, encode_event(delivery.sio, "job-update", {"event_id": 1}))
            await delivery.sio.emit("job-stats", {"total": 3}, room="user:1")
            await delivery.sio.emit("pair", ("a", 2), room="user:1", skip_sid=skipped)
            await delivery.fanout.send(users_sockets, encode_event(delivery.sio, "job-update", {"event_id": 2}))

        delivery.run(emit())
        for ws in (first, second):
            got = receive_events(ws, 3)
            if got[2][0] == "pair":  # this is the one not skipped
                got += receive_events(ws, 1)
                assert got == [("job-update", {"event_id": 1}), ("job-stats", {"total": 3}), ("pair", "a", 2),
                               ("job-update", {"event_id": 2})]
            else:
                assert got == [("job-update", {"event_id": 1}), ("job-stats", {"total": 3}),
                               ("job-update", {"event_id": 2})]
        assert no_more_messages(first) and no_more_messages(second) and no_more_messages(other)


def test_a_room_emit_with_bytes_goes_out_as_a_binary_event(delivery):
    """Bytes in an emit need attachments: that emit takes python-socketio's own path, and arrives."""
    with socketio_client(delivery.url, user=5) as ws:
        delivery.run(delivery.sio.emit("blob", {"raw": b"\x00\x01"}, room="user:5"))
        header = ws.recv(timeout=10)
        assert header.startswith("451-") and orjson.loads(header[4:]) == [
            "blob", {"raw": {"_placeholder": True, "num": 0}}]
        assert ws.recv(timeout=10) == b"\x00\x01"

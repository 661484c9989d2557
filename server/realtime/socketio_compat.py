"""Where Job Monitor reaches into python-engineio and python-socketio internals (and
direct_write.py, for the WebSocket write path): nowhere else.

- `install_fast_writer` swaps `engineio.async_socket.AsyncSocket.poll` for a copy that waits
  without a Task per packet, and marks a WebSocket's writer as waiting while it does.
- `install_lean_sockets` makes each Engine.IO socket hold less while it lives (see there).
- `close_redis_manager` closes python-socketio's `AsyncRedisManager`, which has no close().

Checked against the versions pyproject pins (python-engineio, python-socketio).
tests/test_compat.py fails when an installed version's source of a method relied on here
differs from the one recorded in CHECKED_SOURCES, so an upgrade is a visible decision: read the
new method, port the change, record the new hash.
"""

from __future__ import annotations

import asyncio
import logging
import time

from engineio import async_socket, exceptions, packet
from engineio.async_drivers import asgi as engineio_asgi

from server.lean_asyncio import LeanQueue

logger = logging.getLogger(__name__)

# sha256 of inspect.getsource(...) of each method relied on, in the versions checked against
# (python-engineio 4.15.1, python-socketio 5.18.1)
CHECKED_SOURCES = {
    # replaced by install_fast_writer's poll
    "engineio.async_socket.AsyncSocket.poll": "826f58a9f3606db208e5d1266f075ad655b6eeda47b0a5616748624899ca5954",
    # close_redis_manager relies on `thread` (set here) and on `redis` / `pubsub` (set there)
    "socketio.async_pubsub_manager.AsyncPubSubManager.initialize":
        "e8a2b026ecea320f34e220b583b2d426aa7ebd007b2eab961fd20ba60034cecb",
    "socketio.async_redis_manager.AsyncRedisManager._redis_connect":
        "da4530c936323c252b3525c979986934b83a23d0e2a929e5ce89bb6cd3cfff95",
    # install_lean_sockets: a socket's queue comes from create_queue (called with no arguments in
    # BaseSocket.__init__); replaced by LeanQueue
    "engineio.async_server.AsyncServer.create_queue":
        "5ff5673a0c0176813f16592f7a50a08b19fa1c017e36789f5662cfac366f58e2",
    "engineio.base_socket.BaseSocket.__init__": "8532b631a4dc815f51afe4d3a7f782ddea8dbc32e26e29c2a3476ef1291ae6b9",
    # wrapped: `wsgi.input` (a payload reader of a class made per request) is read only for POST
    "engineio.async_drivers.asgi.translate_request":
        "39e74733f1fe46aa20e9ba2b651834a108bced1acee44c5a76927173dd7b09ff",
    "engineio.async_socket.AsyncSocket.handle_post_request":
        "82dca119a261a95904b8714cc255ab79aaaef0acd4a0ef98d8ef7a116c370ef2",
    # replaced by a timer: schedule_ping started _send_ping as a Task; `send` queues the packet
    # after a ping-timeout check that cannot fire right after `last_ping` is set
    "engineio.async_socket.AsyncSocket.schedule_ping":
        "fe316639159cd70d34cdb911a055fc1a0056ff15615b8460a1ab6593c95e9372",
    "engineio.async_socket.AsyncSocket._send_ping": "67db82a704ea49d0ad34e967728cec06020d036431d67c1612162a907526cb43",
    "engineio.async_socket.AsyncSocket.send": "0437276ccba7ab091471e29f4bc6a0f178da7b16a590c707d6c69a97609e6d14",
}


def install_fast_writer() -> None:
    """Make Engine.IO's per-socket writer wait for packets without a Task per wait.

    Engine.IO's `AsyncSocket.poll` waits for the next packet with `asyncio.wait_for`, which on
    Python 3.11 wraps every wait in a new Task: one per packet a socket is sent. In bench_fanout
    that was about a third of the server's CPU. This is the same method with `asyncio.timeout`
    (what `wait_for` itself became in Python 3.12), and on a WebSocket without a timer at all:
    there the reader loop already gives up on a silent client after the same time and queues None,
    which ends the wait. On a WebSocket it also sets `jobmon_waiting` while the writer waits with
    nothing in hand, which direct_write.write_now needs on every Python version.
    """
    if getattr(async_socket.AsyncSocket.poll, "jobmon", False):
        return

    async def poll(self):
        """Wait for packets to send to the client."""
        try:
            if self.upgraded:
                # on a WebSocket, the reader gives up on a silent client after the same time and
                # then queues None, which ends this wait: no timer per packet is needed. While it
                # waits, the writer holds nothing unwritten (direct_write.write_now reads this)
                self.jobmon_waiting = True
                try:
                    packets = [await self.queue.get()]
                finally:
                    self.jobmon_waiting = False
            else:
                async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                    packets = [await self.queue.get()]
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty()
        if packets == [None]:
            return []
        while True:
            try:
                pkt = self.queue.get_nowait()
                self.queue.task_done()
                if pkt is None:
                    self.queue.put_nowait(None)
                    break
                packets.append(pkt)
            except asyncio.QueueEmpty:
                break
        return packets

    poll.jobmon = True
    poll.replaced = async_socket.AsyncSocket.poll  # the original, for tests/test_compat.py
    async_socket.AsyncSocket.poll = poll


def install_lean_sockets(eio_server) -> None:
    """Make each of this Engine.IO server's sockets hold less while it lives.

    Measured with 1,000 idle WebSocket connections, these three were about 8 KB of the ~41 KB each
    connection held:
    - a socket's queue of packets is a `LeanQueue` (a few slots while idle, instead of
      `asyncio.Queue`'s 3.3 KB);
    - the environ of a WebSocket, which python-socketio keeps for the connection's life, drops its
      `wsgi.input`: an instance of a class Engine.IO's ASGI driver makes per request (about
      2.5 KB with the class), read only for a polling POST's body. The environ has the request's
      headers (as strings), so its ASGI scope (uvicorn's, also kept) lets go of its own copy (as
      bytes, about 1.3 KB): Engine.IO reads the headers in translate_request only, and uvicorn
      the scope's client and path only;
    - the next ping waits on a timer instead of a Task asleep in `_send_ping` (about 1 KB: the
      Task, its coroutines, future and context). What it does when the timer fires is what
      `_send_ping` did: unless the socket is closing or closed, note the time and queue a PING.
    """
    eio_server.create_queue = LeanQueue
    eio_server._async = {**eio_server._async, "translate_request": _translate_request}
    if getattr(async_socket.AsyncSocket.schedule_ping, "jobmon", False):
        return

    def schedule_ping(self):
        # only schedule a new ping if the previous ping wait cycle completed
        if self.last_ping:
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, _send_ping, self)

    schedule_ping.jobmon = True
    schedule_ping.replaced = async_socket.AsyncSocket.schedule_ping  # the original, for tests/test_compat.py
    async_socket.AsyncSocket.schedule_ping = schedule_ping


def _send_ping(socket) -> None:
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(packet.Packet(packet.PING))


async def _translate_request(scope, receive, send):
    environ = await engineio_asgi.translate_request(scope, receive, send)
    if scope["type"] == "websocket":
        environ.pop("wsgi.input", None)  # see install_lean_sockets
        scope["headers"] = []
    return environ


async def close_redis_manager(manager) -> None:
    """Stop a Redis manager's listener task and close its connections (no-op for other managers)."""
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

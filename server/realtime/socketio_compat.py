"""Where Job Monitor reaches into python-engineio and python-socketio internals (and
direct_write.py, for the WebSocket write path): nowhere else.

- `install_fast_writer` swaps `engineio.async_socket.AsyncSocket.poll` for a copy that waits
  without a Task per packet, and marks a WebSocket's writer as waiting while it does.
- `close_redis_manager` closes python-socketio's `AsyncRedisManager`, which has no close().

Checked against the versions pyproject pins (python-engineio, python-socketio).
tests/test_compat.py fails when an installed version's source of a method relied on here
differs from the one recorded in CHECKED_SOURCES, so an upgrade is a visible decision: read the
new method, port the change, record the new hash.
"""

from __future__ import annotations

import asyncio
import logging

from engineio import async_socket, exceptions

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

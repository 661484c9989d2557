"""Where Job Monitor replaces a method of python-engineio: nowhere else.

`install_fast_writer` swaps `engineio.async_socket.AsyncSocket.poll` for a copy that waits
without a Task per packet (Python 3.11 only). Checked against python-engineio 4.9-4.13
(pyproject pins that range); tests/test_compat.py fails when the installed version's source of
`AsyncSocket.poll` differs from ORIGINAL_POLL_SHA256, so an upgrade is a visible decision: read
the new method, port the change, record the new hash.
"""

from __future__ import annotations

import asyncio
import sys

from engineio import async_socket, exceptions

# sha256 of inspect.getsource(AsyncSocket.poll) in the versions this was checked against
ORIGINAL_POLL_SHA256 = "TODO"


def install_fast_writer() -> None:
    """Make Engine.IO's per-socket writer wait for packets without a Task per wait (Python 3.11).

    Engine.IO's `AsyncSocket.poll` waits for the next packet with `asyncio.wait_for`, which on
    Python 3.11 wraps every wait in a new Task: one per packet a socket is sent. In bench_fanout
    that was about a third of the server's CPU. This is the same method with `asyncio.timeout`
    (what `wait_for` itself became in Python 3.12, where nothing is replaced), and on a WebSocket
    without a timer at all: there the reader loop already gives up on a silent client after the
    same time and queues None, which ends the wait.
    """
    if sys.version_info >= (3, 12) or getattr(async_socket.AsyncSocket.poll, "jobmon", False):
        return

    async def poll(self):
        """Wait for packets to send to the client."""
        try:
            if self.upgraded:
                # on a WebSocket, the reader gives up on a silent client after the same time and
                # then queues None, which ends this wait: no timer per packet is needed
                packets = [await self.queue.get()]
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
    async_socket.AsyncSocket.poll = poll

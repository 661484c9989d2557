"""What a WebSocket connection holds less of (server/lean_asyncio.py, LeanWebSocketProtocol,
install_lean_sockets) without losing anything a client relies on: the queue and event keep
asyncio's behaviour, a connection that let go of its handshake still gets its events, resumes and
is cleaned up when it ends, and the timer-driven pings keep a live client and drop a silent one."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from realtime_client import CIDS, SioClient, session_cookie, start
from server.lean_asyncio import LeanEvent, LeanQueue

pytestmark = pytest.mark.asyncio


# -- LeanQueue and LeanEvent ---------------------------------------------------------------
async def test_the_queue_gives_items_in_order_and_wakes_one_getter_per_item():
    queue = LeanQueue()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.put_nowait("a")
    await queue.put("b")
    await asyncio.sleep(0)
    assert sorted(t.result() for t in getters if t.done()) == ["a", "b"]
    assert sum(not t.done() for t in getters) == 1
    for item in "cdef":
        queue.put_nowait(item)
    await asyncio.sleep(0)
    assert [t.result() for t in getters if t.done()][-1] == "c"
    assert (queue.qsize(), queue.empty(), queue.full()) == (3, False, False)
    assert [queue.get_nowait(), await queue.get(), queue.get_nowait()] == ["d", "e", "f"]
    assert queue.empty() and queue._queue == ()  # nothing held once drained


async def test_a_cancelled_get_passes_its_item_on():
    queue = LeanQueue()
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs: `second` must get the item
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second, 1) == "x"
    assert first.cancelled()


async def test_join_waits_until_every_item_is_done():
    queue = LeanQueue()
    await asyncio.wait_for(queue.join(), 1)  # nothing put: returns at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    joiner = asyncio.create_task(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joiner.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joiner, 1)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_the_event_wakes_its_waiters_when_set_and_not_after_a_clear():
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(2)]
    cancelled = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True]
    assert await event.wait() is True  # set: at once
    event.clear()
    late = asyncio.create_task(event.wait())
    await asyncio.sleep(0.01)
    assert not late.done()
    event.set()
    assert await asyncio.wait_for(late, 1) is True


# -- a real server -----------------------------------------------------------------------------
def _node_sockets(server) -> int:
    import httpx

    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("jobmon_node_sockets "):
            return int(float(line.split()[-1]))
    raise AssertionError("no jobmon_node_sockets in /metrics")


async def _wait(predicate, what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_connection_without_its_handshake_still_delivers_resumes_and_ends_cleanly(make_server, sim):
    server = make_server()
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    first = await SioClient().connect(server.url, cookie=session_cookie(api))
    sio = server.app.engineio_server
    [socket] = list(sio.eio.sockets.values())
    protocol = socket.jobmon_protocol  # set for uvicorn's own protocol (direct_write.py)
    assert type(protocol).__name__ == "LeanWebSocketProtocol"
    assert protocol.request is None and protocol.response is None
    environ = sio.environ[socket.sid]
    assert "wsgi.input" not in environ and environ["asgi.scope"]["headers"] == []
    assert environ["HTTP_COOKIE"] == session_cookie(api)  # what the app reads is still there

    job = await start(api, CIDS[:1])
    await first.wait_finished(job["job_id"])
    seen = first.updates()
    # the connection drops under the server: it notices, and forgets the socket
    server.server.server._loop.call_soon_threadsafe(protocol.transport.close)
    await first.wait_for(lambda: first.disconnects, what="the client to notice")
    await _wait(lambda: _node_sockets(server) == 0, "the server to forget the socket")
    await first.close()

    missed = await start(api, CIDS[:1])  # while nobody is connected
    await asyncio.to_thread(api.wait_for, missed["job_id"])
    second = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        ack = await second.call("resume", {"last_event_id": seen[-1]["event_id"]})
        assert ack["replayed"] >= 1
        await second.wait_finished(missed["job_id"])
        ids = [u["event_id"] for u in seen + second.updates()]
        assert ids == list(range(1, ids[-1] + 1)), "every event once, in order"
    finally:
        await second.close()
    await _wait(lambda: _node_sockets(server) == 0, "the server to forget the second socket")


async def test_pings_keep_a_live_client_and_drop_a_silent_one(make_server, sim):
    server = make_server()
    alice = await asyncio.to_thread(server.create_user, "alice")
    token = await asyncio.to_thread(server.create_token, alice, "read")
    eio = server.app.engineio_server.eio
    eio.ping_interval, eio.ping_timeout = 0.2, 0.2
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")  # open (its pingInterval is rounded down to 0 here)
        await ws.send_str("40" + orjson.dumps({"token": token}).decode())
        assert (await ws.receive_str()).startswith("40")

        pings, started = 0, time.monotonic()
        while time.monotonic() - started < 1.2:  # answered: the server keeps pinging, the socket stays
            message = await asyncio.wait_for(ws.receive_str(), 1)
            if message == "2":
                pings += 1
                await ws.send_str("3")
        assert pings >= 4
        assert await asyncio.to_thread(_node_sockets, server) == 1

        silent_from = time.monotonic()  # no more pongs: dropped after pingInterval + pingTimeout
        while (message := await asyncio.wait_for(ws.receive(), 3)).type == aiohttp.WSMsgType.TEXT:
            assert message.data == "2"
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert time.monotonic() - silent_from < 2
    await _wait(lambda: _node_sockets(server) == 0, "the server to forget the socket")


@pytest.mark.parametrize("transports", [
    # slow: the client's disconnect waits for its pending long-poll, which the next ping (25 s) ends
    pytest.param(("polling",), marks=pytest.mark.slow), ("polling", "websocket")])
async def test_long_polling_and_its_upgrade_still_deliver(make_server, sim, transports):
    """A socket's LeanQueue also serves long-polling (its GETs wait on it) and the upgrade to WebSocket."""
    server = make_server()
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    client = await SioClient().connect(server.url, cookie=session_cookie(api), transports=transports)
    try:
        job = await start(api, CIDS[:2])
        await client.wait_finished(job["job_id"])
        ids = [u["event_id"] for u in client.updates()]
        assert ids == list(range(1, ids[-1] + 1)), "every event once, in order"
        assert client.sio.transport() == transports[-1]
    finally:
        await client.close()
    await _wait(lambda: _node_sockets(server) == 0, "the server to forget the socket")

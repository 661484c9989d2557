"""The fan-out's Redis bus (server/realtime/fanout.py): what one node publishes, every node reads,
each event once and in its publisher's order, several to a message under load; with Redis gone,
the publishing node still delivers its own."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as redis

from server.realtime.fanout import Fanout
from support import REDIS_URL, free_port, require_redis

pytestmark = pytest.mark.asyncio


def events_of(user_id: int, first: int, count: int) -> list[dict]:
    return [{"event_id": i, "topic": "job", "kind": "progress", "user_id": user_id, "at": 1_700_000_000_000,
             "job": {"job_id": f"job-{user_id}", "done": i}} for i in range(first, first + count)]


@pytest.mark.redis
async def test_events_published_at_once_go_out_together_each_once_in_order():
    require_redis()
    channel = f"test-{uuid.uuid4().hex[:8]}"
    node = Fanout(sio=None, events=None, redis_url=REDIS_URL, channel=channel)
    listener = redis.from_url(REDIS_URL)
    pubsub = listener.pubsub()
    await pubsub.subscribe(f"{channel}:job-events")
    await node.start()
    try:
        # 30 writers committing at once, 10 events each (as many jobs finishing batches together)
        async def writer(user_id: int) -> None:
            for first in range(1, 11):
                await node.publish(events_of(user_id, first, 1))

        await asyncio.gather(*(writer(user_id) for user_id in range(30)))
        messages = []
        deadline = asyncio.get_running_loop().time() + 10
        while sum(len(m) for m in messages) < 300:
            assert asyncio.get_running_loop().time() < deadline, f"{sum(len(m) for m in messages)} of 300 arrived"
            message = await pubsub.get_message(timeout=1)
            if message is not None and message["type"] == "message":
                messages.append(orjson.loads(message["data"]))
        received = [event for message in messages for event in message]
        for user_id in range(30):
            assert [e["event_id"] for e in received if e["user_id"] == user_id] == list(range(1, 11))
        # writers waiting on one PUBLISH had theirs sent together in the next one
        assert len(messages) < 300 / 2
    finally:
        await node.stop()
        await pubsub.aclose()
        await listener.aclose()


async def test_a_publish_with_redis_gone_is_delivered_on_this_node():
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    node = Fanout(sio=None, events=None, redis_url=dead, channel="test-dead")
    await node.start()
    try:
        await asyncio.wait_for(node.publish(events_of(4, 1, 3)), timeout=10)
        for _ in range(100):
            if node.last_delivered(4) == 3:
                break
            await asyncio.sleep(0.02)
        assert node.last_delivered(4) == 3  # this node's consumer had them, in order
    finally:
        await node.stop()

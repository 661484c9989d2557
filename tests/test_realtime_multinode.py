"""Two server nodes sharing one PostgreSQL database and one Redis: events cross nodes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from realtime_client import SioClient, session_cookie
from support import REDIS_URL, require_postgres, require_redis

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def backend():
    """Several nodes need a shared database server: PostgreSQL only."""
    require_postgres()
    require_redis()
    return "postgres"


@pytest.fixture
def nodes(make_server):
    # a channel of their own, so other servers on the same Redis (other tests) stay out
    env = {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL": f"test-{uuid.uuid4().hex[:8]}", "SOCKET_REVALIDATE": "0.3"}
    return make_server(**env), make_server(**env)


async def test_a_job_started_on_one_node_is_live_on_the_other(nodes, sim):
    node_a, node_b = nodes
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    bob = await asyncio.to_thread(node_a.create_user, "bob")
    admin = await asyncio.to_thread(node_a.create_user, "boss", "admin")
    alice_a = node_a.client(alice)  # alice's browser talks HTTP to node A...
    on_b = await SioClient().connect(node_b.url, cookie=session_cookie(alice_a))  # ...its socket is on B
    on_a = await SioClient().connect(node_a.url, cookie=session_cookie(alice_a))
    bob_b = await SioClient().connect(node_b.url, cookie=session_cookie(node_b.client(bob)))
    root_b = await SioClient().connect(node_b.url, cookie=session_cookie(node_b.client(admin)))
    try:
        sim.knobs(latency_ms=20)
        jobs = [await asyncio.to_thread(alice_a.start, [f"C{i}" for i in range(400)]) for _ in range(3)]
        for job in jobs:
            await on_b.wait_finished(job["job_id"])
            await root_b.wait_finished(job["job_id"])
        await on_a.wait_for(lambda: on_a.last_event_id() == on_b.last_event_id(), what="both sockets level")
        # the same events, in order, once, on both nodes
        ids = [u["event_id"] for u in on_b.updates()]
        assert ids == list(range(1, ids[-1] + 1))
        assert [u["event_id"] for u in on_a.updates()] == ids
        await on_b.wait_for(lambda: any(s["counts"]["SUCCESS"] == 3 for s in on_b.of("job-stats")),
                            what="stats from node A on node B")
        await root_b.wait_for(lambda: any(s["user_id"] is None and s["counts"]["SUCCESS"] == 3
                                          for s in root_b.of("job-stats")), what="admin stats on B")
        assert bob_b.updates() == [] and {s["user_id"] for s in bob_b.of("job-stats")} <= {bob["id"]}

        # an alert raised on A reaches B, once
        sim.knobs(latency_ms=0, set_action_status=500)
        failed = await asyncio.to_thread(alice_a.start, ["C1"])
        alerts = await on_b.wait_for(lambda: on_b.of("job-alert"), what="alert on B")
        assert alerts[0]["job_id"] == failed["job_id"]
        await root_b.wait_for(lambda: root_b.of("job-alert"), what="admin alert on B")
        await asyncio.sleep(0.3)
        assert len(on_b.of("job-alert")) == 1 and bob_b.of("job-alert") == []
    finally:
        for client in (on_a, on_b, bob_b, root_b):
            await client.close()


async def test_resume_on_another_node_and_credentials_ended_on_one_node_drop_sockets_on_the_other(nodes, sim):
    node_a, node_b = nodes
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    api_a = node_a.client(alice)
    token = api_a.post("/api/tokens", json={"name": "wall", "scope": "read"}).json()["token"]
    first = await SioClient().connect(node_a.url, token=token["token"])
    sim.knobs(latency_ms=30)
    job = await asyncio.to_thread(api_a.start, [f"C{i}" for i in range(1500)])
    await first.wait_for(lambda: len(first.updates()) >= 3, what="some events on A")
    await first.close()
    seen = first.updates()
    second = await SioClient().connect(node_b.url, token=token["token"])
    by_cookie = await SioClient().connect(node_b.url, cookie=session_cookie(api_a))
    try:
        ack = await second.call("resume", {"last_event_id": seen[-1]["event_id"]})
        assert "error" not in ack and "recovered" not in ack
        await second.wait_finished(job["job_id"])
        ids = [u["event_id"] for u in seen + second.updates()]
        assert ids == list(range(1, ids[-1] + 1))

        # revoked and logged out through node A: node B drops its sockets at its next revalidation
        assert api_a.delete(f"/api/tokens/{token['id']}").status_code == 200
        await second.wait_for(lambda: not second.connected, timeout=5, what="token socket on B to drop")
        assert api_a.post("/api/auth/logout").status_code == 200
        await by_cookie.wait_for(lambda: not by_cookie.connected, timeout=5, what="cookie socket on B to drop")
    finally:
        await second.close()
        await by_cookie.close()

"""The design's admin Socket.IO protocol as aliases (python-socketio's AsyncClient over real sockets):
the `/admin/socket.io` path, `subscribe:jobs` with filters, `unsubscribe:jobs`, `request:job-stats`,
and errors as `error` events that change nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from realtime_client import SioClient, session_cookie, start
from support import REDIS_URL, require_redis

pytestmark = pytest.mark.asyncio

ADMIN_PATH = "admin/socket.io"


async def connect(server, *, cookie: str | None = None, token: str | None = None, path: str = ADMIN_PATH) -> SioClient:
    client = SioClient()
    await client.sio.connect(server.url, headers={"Cookie": cookie} if cookie else {},
                             auth={"token": token} if token else None, transports=["websocket"],
                             socketio_path=path, wait_timeout=10)
    return client


async def finish(api, cids, cluster: str = "sim") -> dict:
    """Start a Set Action and wait (through the API) until it has finished."""
    job = await start(api, cids, cluster=cluster)
    return await asyncio.to_thread(api.wait_for, job["job_id"])


async def barrier(client: SioClient, own_api) -> None:
    """Wait until the client has got the end of a job of its own started now: every job-update
    committed before it has been through the fan-out too (one consumer, in commit order)."""
    job = await start(own_api, ["BARRIER"])
    await client.wait_finished(job["job_id"])


def others(client: SioClient, own_user_id: int) -> list[dict]:
    return [u["job"] for u in client.updates() if u["job"]["user_id"] != own_user_id]


async def test_an_admin_gets_only_the_jobs_its_filters_match_until_it_unsubscribes(server, sim, sim2, admin, alice,
                                                                                   bob):
    admin_api, alice_api, bob_api = server.client(admin), server.client(alice), server.client(bob)
    root = await connect(server, cookie=session_cookie(admin_api))
    try:
        ack = await root.call("subscribe:jobs", {"status": ["success", "FAILED"], "user": alice["username"],
                                                 "cluster": "sim"})
        assert ack == {"ok": True, "filters": {"status": ["FAILED", "SUCCESS"], "user": alice["username"],
                                               "action": None, "cluster": "sim"}}
        wanted = await finish(alice_api, ["F1", "F2"])
        await finish(alice_api, ["F3"], cluster="sim2")
        await finish(bob_api, ["F4"])
        await barrier(root, admin_api)
        assert [(j["job_id"], j["status"]) for j in others(root, admin["id"])] == [(wanted["job_id"], "SUCCESS")]

        # the same with the filters under "filters", and by action (any spelling) and user id
        ack = await root.call("subscribe:jobs", {"filters": {"action": "pe-enable", "user": bob["id"]}})
        assert ack["filters"] == {"status": [], "user": bob["username"], "action": "PE-Enable", "cluster": None}
        seen = len(others(root, admin["id"]))
        await finish(bob_api, ["F5"])
        bobs_t_enable = await start(bob_api, ["F6"], action="T-Enable")
        await asyncio.to_thread(bob_api.wait_for, bobs_t_enable["job_id"])
        await barrier(root, admin_api)
        new = others(root, admin["id"])[seen:]
        assert new and {(j["user_id"], j["action_name"]) for j in new} == {(bob["id"], "PE-Enable")}
        assert [j["status"] for j in new][-1] == "SUCCESS" and "QUEUED" in [j["status"] for j in new]

        # unsubscribed: nothing of other users; the admin's own jobs still come
        assert await root.call("unsubscribe:jobs") == {"ok": True}
        seen = len(others(root, admin["id"]))
        await finish(bob_api, ["F7"])
        await barrier(root, admin_api)
        assert len(others(root, admin["id"])) == seen

        # subscribed without filters: everything again
        assert (await root.call("subscribe:jobs"))["filters"] == {"status": [], "user": None, "action": None,
                                                                  "cluster": None}
        job = await finish(alice_api, ["F8"], cluster="sim2")
        await root.wait_finished(job["job_id"])

        # request:job-stats: the all-users figures, as an event and as the ack
        stats = await root.call("request:job-stats")
        assert stats["user_id"] is None and stats["counts"]["SUCCESS"] >= 6
        await root.wait_for(lambda: stats in root.of("job-stats"), what="the job-stats event")
        assert root.of("error") == []
    finally:
        await root.close()


async def test_on_the_usual_path_the_aliases_work_the_same(server, sim, admin, bob):
    admin_api = server.client(admin)
    root = await connect(server, cookie=session_cookie(admin_api), path="socket.io")
    try:
        assert (await root.call("subscribe:jobs", {"user": admin["username"]}))["ok"] is True
        await finish(server.client(bob), ["U1"])
        await barrier(root, admin_api)
        assert others(root, admin["id"]) == []
        assert (await root.call("request:job-stats"))["user_id"] is None
    finally:
        await root.close()


async def test_a_user_who_is_not_an_admin_gets_an_error_event_and_nothing_of_others(server, sim, admin, alice, bob):
    alice_api = server.client(alice)
    admins_read_token = await asyncio.to_thread(server.create_token, admin, "read")
    user = await connect(server, cookie=session_cookie(alice_api))
    read_only = await connect(server, token=admins_read_token)
    try:
        for client in (user, read_only):
            await client.sio.emit("subscribe:jobs", {"status": "FAILED"})  # no ack asked: the design's way
            error = await client.wait_for(lambda c=client: c.of("error"), what="the error event")
            assert error == [{"event": "subscribe:jobs", "code": "admin_required", "status": 403, "details": None,
                              "message": error[0]["message"]}]
            assert "admins" in error[0]["message"]
            ack = await client.call("unsubscribe:jobs")
            assert ack["error"]["code"] == "admin_required" and ack["error"]["status"] == 403
        await finish(server.client(bob), ["N1"])
        await barrier(user, alice_api)
        assert others(user, alice["id"]) == [] and read_only.updates() == []
        # request:job-stats is everyone's own figures
        stats = await user.call("request:job-stats")
        assert stats["user_id"] == alice["id"] and stats["counts"]["SUCCESS"] == 1
    finally:
        await user.close()
        await read_only.close()


BAD_FILTERS = [
    ("not an object", "filters"),
    (["status"], "filters"),
    ({"colour": "red"}, "colour"),
    ({"status": "DONE"}, "status"),
    ({"status": ["SUCCESS"] * 50}, "status"),
    ({"status": 5}, "status"),
    ({"status": "S" * 500}, "status"),
    ({"user": "no-such-user-x9"}, "user"),
    ({"user": "u" * 100}, "user"),
    ({"user": True}, "user"),
    ({"user": -1}, "user"),
    ({"user": {"$ne": None}}, "user"),
    ({"action": "launch-missiles"}, "action"),
    ({"action": ["PE-Enable"]}, "action"),
    ({"cluster": "../../etc"}, "cluster"),
    ({"cluster": "c" * 100}, "cluster"),
    ({"cluster": 7}, "cluster"),
    ({"filters": {"status": "FAILED"}, "user": "x"}, "filters"),
    ({"filters": "FAILED"}, "filters"),
]


async def test_bad_filters_get_an_error_event_naming_the_field_and_keep_the_feed_as_it_was(server, sim, admin, alice,
                                                                                           bob):
    admin_api = server.client(admin)
    root = await connect(server, cookie=session_cookie(admin_api))
    try:
        assert (await root.call("subscribe:jobs", {"user": bob["username"]}))["ok"] is True
        for payload, field in BAD_FILTERS:
            before = len(root.of("error"))
            ack = await root.call("subscribe:jobs", payload)
            assert ack["error"]["code"] == "validation_error" and ack["error"]["details"]["field"] == field, payload
            # the error event is sent just before the ack
            await root.wait_for(lambda n=before: len(root.of("error")) > n, what=f"the error event of {payload!r}")
            assert root.of("error")[before:] == [{"event": "subscribe:jobs", **ack["error"]}]
            await asyncio.sleep(0.06)  # under the per-socket message rate limit
        # still only bob's jobs
        await finish(server.client(alice), ["B1"])
        bobs = await finish(server.client(bob), ["B2"])
        await barrier(root, admin_api)
        assert {j["job_id"] for j in others(root, admin["id"])} == {bobs["job_id"]}
    finally:
        await root.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("backend", ["postgres"])  # several nodes need a shared database server
async def test_filters_apply_to_jobs_run_on_another_node(backend, make_server, sim):
    """Two nodes sharing PostgreSQL and Redis: an admin filtered on node B gets what matches of jobs
    started on node A, and nothing else; each node lists the other in /admin/system."""
    require_redis()
    env = {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL": f"test-{uuid.uuid4().hex[:8]}", "SYSTEM_INTERVAL": "0.2"}
    node_a, node_b = make_server(**env), make_server(**env)
    admin = await asyncio.to_thread(node_a.create_user, "boss", "admin")
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    bob = await asyncio.to_thread(node_a.create_user, "bob")
    admin_b = node_b.client(admin)
    root = await connect(node_b, cookie=session_cookie(admin_b))
    try:
        assert (await root.call("subscribe:jobs", {"user": "alice", "status": "SUCCESS"}))["ok"] is True
        alices = await finish(node_a.client(alice), ["M1"])
        await finish(node_a.client(bob), ["M2"])
        await barrier(root, node_a.client(admin))
        assert [(j["job_id"], j["status"]) for j in others(root, admin["id"])] == [(alices["job_id"], "SUCCESS")]
        listed = await asyncio.to_thread(lambda: admin_b.get("/admin/system").json())
        assert listed["live"] == 2
    finally:
        await root.close()

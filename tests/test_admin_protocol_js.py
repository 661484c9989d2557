"""The design's admin Socket.IO protocol with the official JavaScript client (socket.io-client under
Node, tests/js/client.mjs): a client written against the design connects to `/admin/socket.io`,
emits `subscribe:jobs` / `unsubscribe:jobs` / `request:job-stats` without acks, and reads `error`
events."""

from __future__ import annotations

import asyncio
import json

import pytest

from realtime_client import session_cookie
from test_realtime_js import NodeClient, node  # noqa: F401 (fixture)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ADMIN_PATH = "/admin/socket.io"


async def send(client: NodeClient, event: str, data=None) -> None:
    """Emit as a client of the design does: no ack asked."""
    client._next_id += 1
    command = {"id": client._next_id, "emit": event, "noAck": True}
    if data is not None:
        command["data"] = data
    client.process.stdin.write((json.dumps(command) + "\n").encode())
    await client.process.stdin.drain()
    await client.wait_for(lambda x: x["type"] == "sent" and x["id"] == command["id"], what=f"{event} sent")


def event_of(name: str):
    return lambda x: x["type"] == "event" and x["name"] == name


async def test_a_design_client_on_the_admin_path_filters_stops_and_asks_for_stats(node, server, sim, sim2, admin,
                                                                                  alice, bob):
    admin_api, alice_api, bob_api = server.client(admin), server.client(alice), server.client(bob)
    root = await NodeClient.start(node, url=server.url, path=ADMIN_PATH, cookie=session_cookie(admin_api))
    try:
        connected = await root.wait_for(lambda x: x["type"] == "connect", what="the admin to connect")
        assert connected["transport"] in ("polling", "websocket")
        await send(root, "subscribe:jobs", {"filters": {"user": alice["username"], "action": "PE-Enable",
                                                        "cluster": "sim"}})
        wanted = await asyncio.to_thread(alice_api.start, ["J1", "J2"])
        other_action = await asyncio.to_thread(alice_api.start, ["J3"], action="T-Enable")
        other_cluster = await asyncio.to_thread(alice_api.start, ["J4"], cluster="sim2")
        bobs = await asyncio.to_thread(bob_api.start, ["J5"])
        for api, job in ((alice_api, wanted), (alice_api, other_action), (alice_api, other_cluster), (bob_api, bobs)):
            await asyncio.to_thread(api.wait_for, job["job_id"])
        # the admin's own job ends after all of them: every earlier event has been through the fan-out
        barrier = await asyncio.to_thread(admin_api.start, ["J6"])
        await root.wait_for(lambda x: event_of("job-update")(x) and x["data"]["job"]["job_id"] == barrier["job_id"]
                            and x["data"]["job"]["status"] == "SUCCESS", what="the admin's own job")
        others = [u["job"] for u in root.events("job-update") if u["job"]["user_id"] != admin["id"]]
        assert {j["job_id"] for j in others} == {wanted["job_id"]}
        assert [j["status"] for j in others][0] == "QUEUED" and others[-1]["status"] == "SUCCESS"

        # request:job-stats without an ack: the all-users figures arrive as job-stats
        await send(root, "request:job-stats")
        stats = await root.wait_for(lambda x: event_of("job-stats")(x) and x["data"]["counts"]["SUCCESS"] >= 5,
                                    what="job-stats")
        assert stats["data"]["user_id"] is None

        # a wrong filter: an error event naming the field; the feed stays as it was
        await send(root, "subscribe:jobs", {"status": "EXPLODED"})
        error = await root.wait_for(event_of("error"), what="the error event")
        assert error["data"]["event"] == "subscribe:jobs" and error["data"]["code"] == "validation_error"
        assert error["data"]["details"]["field"] == "status" and "EXPLODED" in error["data"]["message"]

        # unsubscribed: nothing more of other users
        await send(root, "unsubscribe:jobs")
        seen = len(root.events("job-update"))
        late = await asyncio.to_thread(alice_api.start, ["J7"])
        await asyncio.to_thread(alice_api.wait_for, late["job_id"])
        barrier = await asyncio.to_thread(admin_api.start, ["J8"])
        await root.wait_for(lambda x: event_of("job-update")(x) and x["data"]["job"]["job_id"] == barrier["job_id"]
                            and x["data"]["job"]["status"] == "SUCCESS", what="the admin's own second job")
        assert {u["job"]["user_id"] for u in root.events("job-update")[seen:]} == {admin["id"]}
        assert len(root.events("error")) == 1
    finally:
        await root.close()


async def test_a_user_on_the_admin_path_gets_an_error_event_and_sees_nothing_of_others(node, server, sim, alice, bob):
    alice_api = server.client(alice)
    token = await asyncio.to_thread(server.create_token, alice, "read")
    user = await NodeClient.start(node, url=server.url, path=ADMIN_PATH, token=token, transports=["websocket"])
    refused = await NodeClient.start(node, url=server.url, path=ADMIN_PATH, token="jm_wrong")
    try:
        await user.wait_for(lambda x: x["type"] == "connect", what="the user to connect")
        error = await refused.wait_for(lambda x: x["type"] == "connect_error", what="a refusal")
        assert error["data"] == {"code": "invalid_token"}, "the same auth on the admin path"

        await send(user, "subscribe:jobs", {"status": ["FAILED"]})
        error = await user.wait_for(event_of("error"), what="the error event")
        assert error["data"]["code"] == "admin_required" and error["data"]["status"] == 403
        assert error["data"]["event"] == "subscribe:jobs"
        bobs = await asyncio.to_thread(server.client(bob).start, ["K1"])
        await asyncio.to_thread(server.client(bob).wait_for, bobs["job_id"])
        own = await asyncio.to_thread(alice_api.start, ["K2"])
        await user.wait_for(lambda x: event_of("job-update")(x) and x["data"]["job"]["job_id"] == own["job_id"]
                            and x["data"]["job"]["status"] == "SUCCESS", what="the user's own job")
        assert {u["job"]["user_id"] for u in user.events("job-update")} == {alice["id"]}
        # today's events work on this path too, with acks
        assert (await user.call("get-stats"))["user_id"] == alice["id"]
    finally:
        await user.close()
        await refused.close()

"""Socket.IO end to end: real servers, real sockets (python-socketio's AsyncClient), on both backends."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from realtime_client import CIDS, Refused, SioClient, db_write, session_cookie, start, user_events

pytestmark = pytest.mark.asyncio


# -- who sees what -------------------------------------------------------------------------
@pytest.mark.own_server  # the admin's figures count every user's jobs
async def test_each_user_sees_only_their_own_jobs_and_stats_and_an_admin_sees_all(server, alice, bob, admin, sim):
    alice_api, bob_api, admin_api = server.client(alice), server.client(bob), server.client(admin)
    bob_token = await asyncio.to_thread(server.create_token, bob, "read")
    a = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    b = await SioClient().connect(server.url, token=bob_token)
    root = await SioClient().connect(server.url, cookie=session_cookie(admin_api))
    try:
        job_a = await start(alice_api, CIDS)
        job_b = await start(bob_api, CIDS[:2])
        await a.wait_finished(job_a["job_id"])
        await b.wait_finished(job_b["job_id"])
        await root.wait_finished(job_a["job_id"])
        await root.wait_finished(job_b["job_id"])

        assert {u["job"]["job_id"] for u in a.updates()} == {job_a["job_id"]}
        assert {u["job"]["job_id"] for u in b.updates()} == {job_b["job_id"]}
        assert {u["job"]["job_id"] for u in root.updates()} == {job_a["job_id"], job_b["job_id"]}
        # event ids count per user, with no gap, and match what the database holds
        assert [(u["event_id"], u["kind"]) for u in a.updates()] == await user_events(server, alice["id"])
        assert [(u["event_id"], u["kind"]) for u in b.updates()] == await user_events(server, bob["id"])
        assert [u["event_id"] for u in a.updates()] == list(range(1, len(a.updates()) + 1))
        assert a.finished(job_a["job_id"])["done"] == 3
        assert all(u["at"].endswith("Z") and u["at"] >= u["job"]["updated_at"] for u in a.updates())

        await a.wait_for(lambda: any(s["counts"]["SUCCESS"] == 1 for s in a.of("job-stats")), what="alice's stats")
        await b.wait_for(lambda: any(s["counts"]["SUCCESS"] == 1 for s in b.of("job-stats")), what="bob's stats")
        await root.wait_for(lambda: any(s["counts"]["SUCCESS"] == 2 for s in root.of("job-stats")),
                            what="all-users stats")
        assert {s["user_id"] for s in a.of("job-stats")} == {alice["id"]}
        assert {s["user_id"] for s in b.of("job-stats")} == {bob["id"]}
        assert {s["user_id"] for s in root.of("job-stats")} == {None}
        assert max(s["counts"]["SUCCESS"] for s in a.of("job-stats")) == 1

        mine = await a.call("get-stats")
        assert mine["user_id"] == alice["id"] and mine["counts"]["SUCCESS"] == 1 and mine["today"]["total"] == 1
        everyone = await root.call("get-stats")
        assert everyone["user_id"] is None and everyone["counts"]["SUCCESS"] == 2
        assert not a.of("resync") and not b.of("job-alert")
    finally:
        for client in (a, b, root):
            await client.close()


@pytest.mark.slow  # counts pushes against the clock
async def test_stats_follow_changes_coalesced_and_on_the_interval(make_server, sim):
    server = make_server(STATS_INTERVAL="0.3")
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    a = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        await a.wait_for(lambda: len(a.of("job-stats")) >= 2, timeout=3, what="periodic stats")
        before = len(a.of("job-stats"))
        jobs = [await start(api, CIDS[:1]) for _ in range(10)]
        for job in jobs:
            await a.wait_finished(job["job_id"])
        await a.wait_for(lambda: a.of("job-stats")[-1]["counts"]["SUCCESS"] == 10, what="stats of 10 jobs")
        # 30 status changes in well under two seconds: coalesced to a few pushes a second, plus the interval
        assert len(a.of("job-stats")) - before < 20
    finally:
        await a.close()


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("credential, code", [
    (dict(token="jm_not-a-real-token"), "invalid_token"),
    (dict(auth={"token": 12345}), "invalid_token"),
    (dict(auth={"token": "x" * 5000}), "invalid_token"),
    (dict(), "unauthorized"),
    (dict(auth="not-a-dict"), "unauthorized"),
    (dict(cookie="jobmon_session=forged.value.here"), "session_expired"),
])
async def test_wrong_credentials_are_refused_with_a_reason(server, credential, code):
    with pytest.raises(Refused) as refused:
        await SioClient().connect(server.url, **credential)
    assert refused.value.reason["data"]["code"] == code, credential
    assert refused.value.reason["message"], credential


async def test_foreign_origins_and_ended_sessions_are_refused(server, alice, sim):
    api = server.client(alice)
    token = await asyncio.to_thread(server.create_token, alice, "read")
    # an allowed credential from a foreign page is refused by the origin check
    with pytest.raises(Refused):
        await SioClient().connect(server.url, token=token, origin="http://evil.example")
    with pytest.raises(Refused):
        await SioClient().connect(server.url, cookie=session_cookie(api), origin="http://evil.example",
                                  transports=("polling",))
    # the same credential from the server's own page is fine
    ok = await SioClient().connect(server.url, cookie=session_cookie(api), origin=server.url)
    await ok.close()

    # after logout the old cookie no longer connects
    cookie = session_cookie(api)
    assert api.post("/api/auth/logout").status_code == 200
    with pytest.raises(Refused) as refused:
        await SioClient().connect(server.url, cookie=cookie)
    assert refused.value.reason["data"]["code"] == "session_expired"


async def test_configured_origins_are_allowed_and_no_others(make_server, sim):
    server = make_server(ALLOWED_ORIGINS="https://dash.example.com")
    alice = await asyncio.to_thread(server.create_user, "alice")
    token = await asyncio.to_thread(server.create_token, alice, "read")
    ok = await SioClient().connect(server.url, token=token, origin="https://dash.example.com")
    await ok.close()
    for origin in ("https://dash.example.com.evil.example", "http://dash.example.com", "null"):
        with pytest.raises(Refused):
            await SioClient().connect(server.url, token=token, origin=origin)


async def test_logout_and_token_revocation_disconnect_live_sockets(server, alice, sim):
    api = server.client(alice)
    token_answer = api.post("/api/tokens", json={"name": "wallboard", "scope": "read"}).json()["token"]
    by_cookie = await SioClient().connect(server.url, cookie=session_cookie(api))
    by_token = await SioClient().connect(server.url, token=token_answer["token"])
    other_api = server.client(alice)  # a second session of the same user stays connected
    other = await SioClient().connect(server.url, cookie=session_cookie(other_api))
    try:
        assert api.delete(f"/api/tokens/{token_answer['id']}").status_code == 200
        await by_token.wait_for(lambda: not by_token.connected, timeout=5, what="token socket to drop")
        assert by_cookie.connected
        assert api.post("/api/auth/logout").status_code == 200
        await by_cookie.wait_for(lambda: not by_cookie.connected, timeout=5, what="cookie socket to drop")
        with pytest.raises(Refused):
            await SioClient().connect(server.url, token=token_answer["token"])
        await asyncio.sleep(0.2)
        assert other.connected
        job = await start(other_api, CIDS[:1])
        await other.wait_finished(job["job_id"])
    finally:
        for client in (by_cookie, by_token, other):
            await client.close()


async def test_a_credential_ended_elsewhere_is_dropped_by_revalidation(make_server, sim):
    server = make_server(SOCKET_REVALIDATE="0.2")
    alice = await asyncio.to_thread(server.create_user, "alice")
    token = await asyncio.to_thread(server.create_token, alice, "read")
    client = await SioClient().connect(server.url, token=token)
    try:
        # revoked straight in the database, as another node (or the CLI) would: no local hook runs
        await asyncio.to_thread(db_write, server, "UPDATE api_tokens SET revoked_at = 1")
        await client.wait_for(lambda: not client.connected, timeout=3, what="revalidation to drop the socket")
    finally:
        await client.close()


# -- subscribe -----------------------------------------------------------------------------
async def test_subscribe_checks_ownership(server, alice, bob, admin, sim):
    alice_api, bob_api = server.client(alice), server.client(bob)
    job_a = await start(alice_api, CIDS[:1])
    job_b = await start(bob_api, CIDS[:1])
    a = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    root = await SioClient().connect(server.url, cookie=session_cookie(server.client(admin)))
    try:
        assert await a.call("subscribe", {"job_id": job_a["job_id"]}) == {"ok": True}
        assert await a.call("subscribe", {"job_id": job_a["job_id"].upper()}) == {"ok": True}
        refused = await a.call("subscribe", {"job_id": job_b["job_id"]})
        assert refused["error"]["status"] == 403 and refused["error"]["code"] == "forbidden"
        missing = await a.call("subscribe", {"job_id": str(uuid.uuid4())})
        assert missing["error"]["status"] == 404
        assert (await a.call("unsubscribe", {"job_id": job_b["job_id"]}))["error"]["status"] == 403
        assert await a.call("unsubscribe", {"job_id": job_a["job_id"]}) == {"ok": True}
        assert await root.call("subscribe", {"job_id": job_b["job_id"]}) == {"ok": True}
    finally:
        await a.close()
        await root.close()


@pytest.mark.parametrize("payload", [
    lambda job_id: {"job_id": "not-a-uuid"}, lambda job_id: {"job_id": 7}, lambda job_id: {}, lambda job_id: "x",
    lambda job_id: None, lambda job_id: [job_id], lambda job_id: {"job_id": "a" * 100_00},
], ids=["not-a-uuid", "a-number", "empty", "a-string", "none", "in-a-list", "too-long"])
async def test_subscribe_refuses_a_malformed_request(server, alice, sim, payload):
    api = server.client(alice)
    job = await start(api, CIDS[:1])
    a = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        answer = await a.call("subscribe", payload(job["job_id"]))
        assert answer["error"]["status"] == 400 and answer["error"]["code"] == "validation_error", answer
    finally:
        await a.close()


# -- hostile input -------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    None, "x", 5, [], {}, {"last_event_id": "7"}, {"last_event_id": -1}, {"last_event_id": 1.5},
    {"last_event_id": True}, {"last_event_id": 2**60}, {"last_event_id": 0, "alerts_since": "yesterday"},
    {"last_event_id": 0, "alerts_since": 17}, {"last_event_id": 0, "alerts_since": "9" * 5000},
])
async def test_a_malformed_resume_gets_a_clear_error(server, alice, payload):
    client = await SioClient().connect(server.url, cookie=session_cookie(server.client(alice)))
    try:
        answer = await client.call("resume", payload)
        assert answer["error"]["code"] == "validation_error" and answer["error"]["message"], payload
    finally:
        await client.close()


async def test_hostile_input_gets_clear_errors_and_costs_other_clients_nothing(server, alice, bob, sim):
    alice_api = server.client(alice)
    bob_api = server.client(bob)
    mallory = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    bystander = await SioClient().connect(server.url, cookie=session_cookie(bob_api))
    try:
        unknown = await mallory.call("drop-tables", {"x": 1})
        assert unknown["error"]["code"] == "unknown_event"
        stats = await mallory.call("get-stats", {"ignored": ["x"] * 1000})
        assert stats["user_id"] == alice["id"]
        near_limit = await mallory.call("subscribe", {"job_id": "x" * 60_000})
        assert near_limit["error"]["code"] == "validation_error"

        # a flood: answered with rate_limited, never a crash
        answers = await asyncio.gather(*(mallory.call("get-stats", timeout=20) for _ in range(300)))
        limited = [x for x in answers if "error" in x]
        assert limited and all(x["error"]["code"] == "rate_limited" for x in limited)
        assert len(answers) - len(limited) <= 80

        # an oversized message closes only that connection (no answer comes: the call gives up waiting)
        with pytest.raises(Exception):
            await mallory.call("resume", {"last_event_id": 0, "pad": "y" * 200_000}, timeout=0.5)
        await mallory.wait_for(lambda: not mallory.connected, timeout=5, what="the oversized sender to drop")

        # meanwhile the other user's client works as before
        job = await start(bob_api, CIDS[:2])
        await bystander.wait_finished(job["job_id"])
        assert (await bystander.call("get-stats"))["user_id"] == bob["id"]
        assert bystander.connected and not bystander.of("resync")
    finally:
        await mallory.close()
        await bystander.close()

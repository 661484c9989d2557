"""`job-alert` end to end: failed, partial and stuck jobs, failing clusters, and their replay."""

from __future__ import annotations

import asyncio

import pytest

from realtime_client import CIDS, SioClient, session_cookie, start

pytestmark = pytest.mark.asyncio


# -- alerts --------------------------------------------------------------------------------
@pytest.mark.own_server  # a failing cluster's alert counts every user's failed batches in a row
async def test_failed_and_partial_jobs_alert_their_owner_and_admins_only(server, alice, bob, admin, sim):
    alice_api = server.client(alice)
    a = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    b = await SioClient().connect(server.url, cookie=session_cookie(server.client(bob)))
    root = await SioClient().connect(server.url, cookie=session_cookie(server.client(admin)))
    try:
        sim.knobs(fail_cids={"C0001": "customer locked"})
        partial = await start(alice_api, CIDS)
        await a.wait_for(lambda: a.of("job-alert"), what="partial alert")
        sim.knobs(fail_cids={}, set_action_status=503)
        failed = await start(alice_api, CIDS[:1])
        await a.wait_for(lambda: len(a.of("job-alert")) == 2, what="failed alert")
        await root.wait_for(lambda: len(root.of("job-alert")) == 2, what="admin alerts")
        first, second = a.of("job-alert")
        assert first["kind"] == "job_partial" and first["severity"] == "warning"
        assert first["job_id"] == partial["job_id"] and "1 of 3 customers failed" in first["message"]
        assert second["kind"] == "job_failed" and second["severity"] == "critical"
        assert second["job_id"] == failed["job_id"] and second["alert_id"] == f"job_failed:{failed['job_id']}"
        assert second["user_id"] == alice["id"] and second["at"].endswith("Z")
        assert root.of("job-alert") == a.of("job-alert")
        await asyncio.sleep(0.2)
        assert b.of("job-alert") == []

        # a listener that was away asks for the alerts since a time
        late = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
        ack = await late.call("resume", {"last_event_id": a.last_event_id(), "alerts_since": first["at"]})
        assert ack["alerts"] == 2 and ack["replayed"] == 0
        assert [x["alert_id"] for x in late.of("job-alert")] == [first["alert_id"], second["alert_id"]]
        bob_late = await SioClient().connect(server.url, cookie=session_cookie(server.client(bob)))
        assert (await bob_late.call("resume", {"last_event_id": 0, "alerts_since": first["at"]}))["alerts"] == 0
        for client in (late, bob_late):
            await client.close()
    finally:
        for client in (a, b, root):
            await client.close()


@pytest.mark.slow  # waits for a job to be stuck for a second
async def test_stuck_jobs_and_failing_clusters_alert(make_server, sim):
    server = make_server(STUCK_AFTER="1", CLUSTER_ALERT_AFTER="3", BATCH_CONCURRENCY="1")
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    a = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        sim.knobs(latency_ms=400)
        slow = await start(api, [f"C{i}" for i in range(500)])  # 5 batches of 400 ms: over 1 s
        stuck = await a.wait_for(lambda: [x for x in a.of("job-alert") if x["kind"] == "job_stuck"],
                                 timeout=5, what="stuck alert")
        assert stuck[0]["job_id"] == slow["job_id"] and stuck[0]["severity"] == "warning"
        await a.wait_finished(slow["job_id"])

        sim.knobs(latency_ms=0, set_action_status=500)
        failing = await start(api, [f"C{i}" for i in range(500)])
        await a.wait_finished(failing["job_id"])
        alerts = await a.wait_for(lambda: [x for x in a.of("job-alert") if x["kind"] == "cluster_failing"],
                                  what="cluster alert")
        assert len(alerts) == 1 and alerts[0]["cluster"] == "sim" and alerts[0]["severity"] == "critical"
        assert "3 batches in a row failed" in alerts[0]["message"]
        assert len([x for x in a.of("job-alert") if x["kind"] == "job_stuck"]) == 1
    finally:
        await a.close()

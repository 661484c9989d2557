"""pipeline-update, deployment-update and dashboard-summary over real sockets (python-socketio's
AsyncClient) on both backends: each user gets their own records' events, admins everyone's, in the
one per-user event id sequence that `resume` replays; the summary comes on subscribe and after
changes, coalesced."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pipelines_client import BUILD, JOBS, agent, patch
from realtime_client import SioClient, session_cookie, start, user_events
from support import REDIS_URL, require_redis

pytestmark = pytest.mark.asyncio

RECORD_EVENTS = ("job-update", "pipeline-update", "deployment-update")


async def call(function, *args, **kwargs):
    """Run a blocking API call of the test's HTTP client off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def report(api, body: dict | None = None) -> dict:
    response = await call(api.post, JOBS, json={**BUILD, **(body or {})})
    assert response.status_code == 201, response.text
    return response.json()["job"]


async def complete(api, job: dict, body: dict) -> dict:
    response = await call(patch, api, f"{JOBS}/{job['job_id']}/complete", body)
    assert response.status_code == 200, response.text
    return response.json()["job"]


async def announce(api, **body) -> dict:
    response = await call(api.post, "/api/dashboard/deployments", json={"service_name": "api", "version": "1",
                                                                         **body})
    assert response.status_code == 201, response.text
    return response.json()["deployment"]


def records(client: SioClient) -> list[tuple[str, dict]]:
    """(event, payload) of every record event the client got, in arrival order."""
    return [(name, data) for name, data in client.events if name in RECORD_EVENTS]


def ids_of(client: SioClient, user_id: int) -> list[int]:
    return [data["event_id"] for name, data in records(client)
            if (data.get("job") or data.get("deployment"))["user_id"] == user_id]


async def test_pipeline_and_deployment_updates_reach_their_owner_and_admins_only(server, alice, bob, admin):
    alice_api, bob_api = server.client(alice), await call(agent, server, bob)
    a = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    b = await SioClient().connect(server.url, token=await call(server.create_token, bob, "agent"))
    root = await SioClient().connect(server.url, cookie=session_cookie(server.client(admin)))
    try:
        job = await report(alice_api, {"tags": ["nightly"]})
        done = await complete(alice_api, job, {"exit_code": 0})
        deployment = await announce(alice_api)
        staged = await call(alice_api.post, f"/api/dashboard/deployments/{deployment['id']}/staging",
                            json={"job_id": job["job_id"]})
        bobs = await report(bob_api)
        await a.wait_for(lambda: len(records(a)) == 4, what="alice's four events")
        await b.wait_for(lambda: len(records(b)) == 1, what="bob's event")
        await root.wait_for(lambda: len(ids_of(root, alice["id"])) == 4 and len(ids_of(root, bob["id"])) == 1,
                            what="everyone's events for the admin")
        (n1, created), (n2, status), (n3, announced), (n4, moved) = records(a)
        assert (n1, n2, n3, n4) == ("pipeline-update", "pipeline-update", "deployment-update", "deployment-update")
        assert created["kind"] == "created" and created["job"] == job and set(created) == {
            "event_id", "kind", "job", "at"}
        assert status["kind"] == "status" and status["job"] == done and status["at"].endswith("Z")
        assert announced["kind"] == "created" and announced["deployment"] == deployment
        assert set(announced) == {"event_id", "kind", "deployment", "at"}
        assert moved["kind"] == "status" and moved["deployment"] == staged.json()["deployment"]
        assert [name for name, _ in records(b)] == ["pipeline-update"] and records(b)[0][1]["job"] == bobs
        # one id sequence per user, as the database holds it
        assert [(d["event_id"], d["kind"]) for _, d in records(a)] == await user_events(server, alice["id"])
        assert ids_of(root, alice["id"]) == [1, 2, 3, 4] and ids_of(root, bob["id"]) == [1]
        await asyncio.sleep(0.2)
        assert len(records(a)) == 4 and len(records(b)) == 1
    finally:
        for client in (a, b, root):
            await client.close()


async def test_resume_replays_pipeline_deployment_and_set_action_events_in_one_sequence(server, alice, sim):
    api = server.client(alice)
    first = await SioClient().connect(server.url, cookie=session_cookie(api))
    set_action = await start(api, ["C1", "C2"])
    await first.wait_finished(set_action["job_id"])
    job = await report(api)
    await complete(api, job, {"exit_code": 3})
    await announce(api, version="2")
    expected = await user_events(server, alice["id"])
    await first.wait_for(lambda: len(records(first)) == len(expected), what="every event live")
    await first.close()
    live = records(first)

    later = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        ack = await later.call("resume", {"last_event_id": 0})
        assert ack == {"replayed": len(expected), "last_event_id": expected[-1][0]}
        replayed = records(later)
        assert replayed == live, "replayed before the ack, in order, as they came live"
        assert [(d["event_id"], d["kind"]) for _, d in replayed] == expected
        names = [name for name, _ in replayed]
        assert names[0] == "job-update" and names[-3:] == ["pipeline-update", "pipeline-update", "deployment-update"]
        # from the middle: only what came after
        middle = expected[len(expected) - 3][0]
        again = await SioClient().connect(server.url, cookie=session_cookie(api))
        assert (await again.call("resume", {"last_event_id": middle}))["replayed"] == 2
        assert [name for name, _ in records(again)] == ["pipeline-update", "deployment-update"]
        await again.close()
    finally:
        await later.close()


@pytest.mark.own_server  # the admins' summary counts every user's records
async def test_the_dashboard_summary_comes_on_subscribe_and_after_changes_coalesced(server, alice, bob, admin):
    alice_api, bob_api = server.client(alice), await call(agent, server, bob)
    a = await SioClient().connect(server.url, cookie=session_cookie(alice_api))
    b = await SioClient().connect(server.url, token=await call(server.create_token, bob, "read"))
    root = await SioClient().connect(server.url, cookie=session_cookie(server.client(admin)))
    quiet = await SioClient().connect(server.url, cookie=session_cookie(alice_api))  # never subscribes
    try:
        ack = await a.call("subscribe", {"dashboard": True})
        assert ack["ok"] is True and ack["summary"]["jobs_running"] == 0 and ack["summary"]["recent_jobs"] == []
        assert set(ack["summary"]) == {"jobs_running", "jobs_failed_today", "deployments_today", "recent_jobs",
                                       "recent_deployments", "live_by_service", "as_of"}
        assert (await b.call("subscribe", {"dashboard": True}))["ok"] is True
        assert (await root.call("subscribe", {"dashboard": True}))["ok"] is True
        for bad in ({"dashboard": "yes"}, {"dashboard": False}, {}, "dashboard"):
            assert (await a.call("subscribe", bad))["error"]["code"] == "validation_error", bad

        jobs = [await report(alice_api, {"agent_id": f"ci-{i}"}) for i in range(15)]
        await a.wait_for(lambda: a.of("dashboard-summary") and a.of("dashboard-summary")[-1]["jobs_running"] == 15,
                         what="alice's summary after 15 reports")
        # fifteen changes in a burst: a few pushes, not fifteen
        assert len(a.of("dashboard-summary")) <= 5
        latest = a.of("dashboard-summary")[-1]
        assert [j["job_id"] for j in latest["recent_jobs"]] == [j["job_id"] for j in jobs[:-6:-1]]
        await root.wait_for(lambda: root.of("dashboard-summary")
                            and root.of("dashboard-summary")[-1]["jobs_running"] == 15, what="the admins' summary")

        await report(bob_api)
        await complete(bob_api, await report(bob_api), {"exit_code": 1})
        await b.wait_for(lambda: b.of("dashboard-summary") and b.of("dashboard-summary")[-1]["jobs_failed_today"] == 1,
                         what="bob's summary")
        assert b.of("dashboard-summary")[-1]["jobs_running"] == 1
        await root.wait_for(lambda: root.of("dashboard-summary")[-1]["jobs_running"] == 16, what="everyone's")
        assert all(s["jobs_running"] <= 15 and s["jobs_failed_today"] == 0 for s in a.of("dashboard-summary"))
        assert quiet.of("dashboard-summary") == []

        # after unsubscribe, no more
        assert await a.call("unsubscribe", {"dashboard": True}) == {"ok": True}
        pushed = len(a.of("dashboard-summary"))
        await complete(alice_api, jobs[0], {"exit_code": 0})
        await root.wait_for(lambda: root.of("dashboard-summary")[-1]["jobs_running"] == 15, what="the admins' again")
        await asyncio.sleep(0.2)
        assert len(a.of("dashboard-summary")) == pushed
        # job subscriptions work as before
        assert (await a.call("subscribe", {"job_id": jobs[0]["job_id"]}))["error"]["status"] == 404
    finally:
        for client in (a, b, root, quiet):
            await client.close()


@pytest.mark.slow  # two nodes
@pytest.mark.redis
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_reports_to_one_node_are_live_on_another(make_server, backend):
    require_redis()
    env = {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL": f"test-{uuid.uuid4().hex[:8]}"}
    node_a, node_b = make_server(**env), make_server(**env)
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    ci = await call(agent, node_a, alice)  # the agent reports to node A...
    on_b = await SioClient().connect(node_b.url, cookie=session_cookie(node_b.client(alice)))  # ...the browser is on B
    try:
        assert (await on_b.call("subscribe", {"dashboard": True}))["summary"]["jobs_running"] == 0
        job = await report(ci)
        await complete(ci, job, {"exit_code": 1})
        await on_b.wait_for(lambda: [d for n, d in records(on_b) if d["job"]["status"] == "failed"],
                            what="the pipeline-update from node A")
        assert [(n, d["event_id"], d["kind"]) for n, d in records(on_b)] == [
            ("pipeline-update", 1, "created"), ("pipeline-update", 2, "status")]
        await on_b.wait_for(lambda: on_b.of("dashboard-summary")
                            and on_b.of("dashboard-summary")[-1]["jobs_failed_today"] == 1,
                            what="the summary computed on node A")
    finally:
        await on_b.close()

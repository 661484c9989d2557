"""A job's scope: customer states filtered to its CIDs, its app status, and the pushes over sockets."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import socketio

from server.sim.cluster import app_status_for
from support import api_error as error
from support import async_http_client, finished_job


async def refreshing_stopped(sim) -> None:
    """Assert no more app-status calls come (a watch with a 1 s TTL would refresh within 1.3 s)."""
    await asyncio.sleep(0.3)
    calls = sim.stats()["appstatus_batch_calls"]
    await asyncio.sleep(1.3)
    assert sim.stats()["appstatus_batch_calls"] == calls


# -- customer states -----------------------------------------------------------------------------


def test_actions_are_filtered_to_the_job_over_every_page(server, alice, sim):
    sim.knobs(seed_customers=20, states_page_size=3, fail_cids={"ZZ-NEW": "customer locked"})
    api = server.client(alice)
    job = finished_job(api, ["C000019", "C000002", "ZZ-NEW", "C000007"])
    assert job["status"] == "PARTIAL"
    before = sim.stats()["states_calls"]

    answer = api.get(f"/api/jobs/{job['job_id']}/actions").json()
    # ZZ-NEW failed, so the cluster never learnt it: every one of the 7 pages had to be read
    assert answer["pages_read"] == 7 and sim.stats()["states_calls"] - before == 7
    assert (answer["customer_count"], answer["known"], answer["unknown"]) == (4, 3, 1)
    by_cid = {c["cid"]: c for c in answer["customers"]}
    assert [c["cid"] for c in answer["customers"]] == ["C000019", "C000002", "ZZ-NEW", "C000007"]
    for cid in ["C000019", "C000002", "C000007"]:
        assert by_cid[cid]["known"] is True
        assert by_cid[cid]["state"] == "PE_ENABLED" and by_cid[cid]["last_action"] == "PE-Enable"
        assert by_cid[cid]["updated_at"].endswith("Z")
        assert by_cid[cid]["job_result"]["status"] == "SUCCESS"
    unknown = by_cid["ZZ-NEW"]
    assert unknown["known"] is False and unknown["state"] is None
    assert unknown["job_result"]["status"] == "FAILED"
    assert unknown["job_result"]["error_message"] == "customer locked"
    # the other 17 customers of the cluster are not shown
    assert len(answer["customers"]) == 4

    # once every customer of the job is found, the rest of the list is not read
    found = finished_job(api, ["C000001", "C000004"])
    before = sim.stats()["states_calls"]
    answer = api.get(f"/api/jobs/{found['job_id']}/actions").json()
    assert answer["pages_read"] == 2 and sim.stats()["states_calls"] - before == 2
    assert answer["unknown"] == 0

    # the cluster failing: a 502 that names it, never a list with everyone "unknown"
    sim.knobs(required_token="only-with-this")
    answer = error(api.get(f"/api/jobs/{job['job_id']}/actions"), 502)
    assert answer["code"] == "upstream_error"
    assert "HTTP 401 from cluster 'sim'" in answer["message"]
    assert answer["details"] == {"cluster": "sim", "page": 1, "http_status": 401}


@pytest.mark.own_server  # the app-status cache is the cluster's, shared by every user
def test_scope_paths_refuse_other_users_and_bad_ids(server, alice, bob, admin, sim):
    job = finished_job(server.client(alice), ["C1", "C2"])
    bob_api = server.client(bob)
    for path in ["actions", "appstatus"]:
        assert error(bob_api.get(f"/api/jobs/{job['job_id']}/{path}"), 403)["code"] == "forbidden"
        assert error(bob_api.get(f"/api/jobs/{uuid.uuid4()}/{path}"), 404)["code"] == "not_found"
        assert error(bob_api.get(f"/api/jobs/not-a-uuid/{path}"), 400)["code"] == "validation_error"
        assert error(bob_api.get(f"/api/jobs/{'9' * 5000}/{path}"), 400)["code"] == "validation_error"
        assert error(server.client().get(f"/api/jobs/{job['job_id']}/{path}"), 401)
    # bob learnt nothing and caused no upstream call
    assert sim.stats()["appstatus_batch_calls"] == 0
    # an admin may look at anyone's job
    admin_api = server.client(admin)
    assert admin_api.get(f"/api/jobs/{job['job_id']}/actions").json()["known"] == 2
    assert admin_api.get(f"/api/jobs/{job['job_id']}/appstatus").json()["cache_misses"] == 2


# -- app status -----------------------------------------------------------------------------------


@pytest.mark.own_server
def test_appstatus_answer_from_cluster_then_from_cache(server, alice, sim):
    sim.knobs(seed_customers=5)
    api = server.client(alice)
    cids = ["C000003", "C000001", "NEVER-SEEN"]
    sim.knobs(fail_cids={"NEVER-SEEN": "no"})
    job = finished_job(api, cids)

    cold = api.get(f"/api/jobs/{job['job_id']}/appstatus").json()
    assert set(cold) == {"job_id", "cluster", "app", "customer_count", "cache_hits", "cache_misses",
                         "failed_cids", "appstatus"}
    assert (cold["job_id"], cold["cluster"], cold["app"]) == (job["job_id"], "sim", "ALL")
    assert (cold["customer_count"], cold["cache_hits"], cold["cache_misses"]) == (3, 0, 3)
    assert list(cold["appstatus"]) == cids  # in the job's order
    for cid, entry in cold["appstatus"].items():
        status, detail = app_status_for(cid, cid != "NEVER-SEEN")
        assert entry["status"] == status and entry["detail"] == detail and entry["app"] == "ALL"
        assert entry["from_cache"] is False and entry["cached_at"].endswith("Z")
    assert cold["appstatus"]["NEVER-SEEN"]["status"] == "unknown"
    assert sim.stats()["appstatus_batch_calls"] == 1

    warm = api.get(f"/api/jobs/{job['job_id']}/appstatus").json()
    assert (warm["cache_hits"], warm["cache_misses"], warm["failed_cids"]) == (3, 0, [])
    for cid, entry in warm["appstatus"].items():
        assert entry["from_cache"] is True
        assert entry["cached_at"] == cold["appstatus"][cid]["cached_at"]
        assert entry["status"] == cold["appstatus"][cid]["status"]
    assert sim.stats()["appstatus_batch_calls"] == 1  # nothing asked upstream

    other_app = api.get(f"/api/jobs/{job['job_id']}/appstatus", params={"app": "billing"}).json()
    assert other_app["cache_misses"] == 3 and other_app["appstatus"]["C000001"]["app"] == "billing"


@pytest.mark.parametrize("params, field", [
    ({"ttl_seconds": "-1"}, "ttl_seconds"), ({"ttl_seconds": "0"}, "ttl_seconds"),
    ({"ttl_seconds": "604801"}, "ttl_seconds"), ({"ttl_seconds": "9" * 5000}, "ttl_seconds"),
    ({"ttl_seconds": "abc"}, "ttl_seconds"), ({"ttl_seconds": "1.5"}, "ttl_seconds"),
    ({"ttl_seconds": " 5"}, "ttl_seconds"), ({"ttl_seconds": "٣"}, "ttl_seconds"),
    ({"app": "A" * 65}, "app"), ({"app": "ALL;DROP"}, "app"), ({"app": "../x"}, "app"), ({"app": "é"}, "app"),
    ({"skip_cache": "maybe"}, "skip_cache"), ({"skip_cache": "2"}, "skip_cache"),
])
def test_appstatus_bad_parameters(server, alice, sim, params, field):
    api = server.client(alice)
    job = api.start(["C1"])
    answer = error(api.get(f"/api/jobs/{job['job_id']}/appstatus", params=params), 400)
    assert answer["code"] == "validation_error" and answer["details"] == {"field": field}, params
    assert sim.stats()["appstatus_batch_calls"] == 0


@pytest.mark.own_server
def test_appstatus_documented_parameters(server, alice, sim):
    api = server.client(alice)
    job = api.start(["C1"])
    params = {"app": "ALL", "ttl_seconds": "604800", "skip_cache": "false"}
    assert api.get(f"/api/jobs/{job['job_id']}/appstatus", params=params).json()["cache_misses"] == 1
    params = {"app": "web-1.x_y", "ttl_seconds": "1", "skip_cache": "true"}
    assert api.get(f"/api/jobs/{job['job_id']}/appstatus", params=params).json()["cache_misses"] == 1


# -- pushes over a real socket ----------------------------------------------------------------------


class Socket:
    """A python-socketio client that records the events it gets."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue = asyncio.Queue()
        self.client.on("appstatus-update", lambda data: self.events.put_nowait(data))

    async def __aenter__(self) -> "Socket":
        await self.client.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.disconnect()

    async def call(self, event: str, data=None) -> dict:
        return await self.client.call(event, data, timeout=10)

    async def next_event(self, timeout: float = 10) -> dict:
        return await asyncio.wait_for(self.events.get(), timeout)


async def get(url: str, token: str, path: str, **params) -> httpx.Response:
    async with async_http_client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        return await http.get(path, params=params)


@pytest.fixture
def watched(server, alice, bob, sim):
    """(job of alice with C1-C3, alice's token, bob's token): made before the test's event loop runs."""
    job = finished_job(server.client(alice), ["C1", "C2", "C3"])
    return job, server.create_token(alice), server.create_token(bob)


@pytest.mark.asyncio
@pytest.mark.own_server
async def test_refresh_pushes_appstatus_update_to_the_jobs_room_only(server, watched, sim):
    job, alice_token, bob_token = watched
    async with Socket(server.url, alice_token) as watcher, Socket(server.url, bob_token) as intruder:
        assert await watcher.call("subscribe", {"job_id": job["job_id"]}) == {"ok": True}
        refused = await intruder.call("subscribe", {"job_id": job["job_id"]})
        assert refused["error"]["status"] == 403

        answer = (await get(server.url, alice_token, f"/api/jobs/{job['job_id']}/appstatus")).json()
        pushed = await watcher.next_event()
        assert pushed["job_id"] == job["job_id"]
        assert (pushed["cache_hits"], pushed["cache_misses"]) == (0, 3)
        assert pushed["statuses"] == answer["appstatus"]

        # all hits: nothing was refreshed, nothing is pushed
        await get(server.url, alice_token, f"/api/jobs/{job['job_id']}/appstatus")
        await get(server.url, alice_token, f"/api/jobs/{job['job_id']}/appstatus", skip_cache="true")
        pushed = await watcher.next_event()
        assert (pushed["cache_hits"], pushed["cache_misses"]) == (0, 3)
        await asyncio.sleep(0.3)
        assert watcher.events.empty() and intruder.events.empty()


@pytest.mark.asyncio
async def test_watch_refuses_other_users_jobs_and_unknown_ones(server, watched, sim):
    job, _, bob_token = watched
    async with Socket(server.url, bob_token) as intruder:
        for data in [{"job_id": job["job_id"]}, {"job_id": job["job_id"], "app": "ALL"}]:
            assert (await intruder.call("watch-appstatus", data))["error"]["status"] == 403
            assert (await intruder.call("unwatch-appstatus", data))["error"]["status"] == 403
        assert (await intruder.call("watch-appstatus", {"job_id": str(uuid.uuid4())}))["error"]["status"] == 404
    assert sim.stats()["appstatus_batch_calls"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("payload", [
    lambda job_id: None, lambda job_id: "x", lambda job_id: {"job_id": 5}, lambda job_id: {"job_id": "nope"},
    lambda job_id: {"job_id": "9" * 70}, lambda job_id: [job_id],
], ids=["none", "a-string", "a-number", "not-a-uuid", "too-long", "in-a-list"])
async def test_watch_refuses_a_malformed_request(server, watched, sim, payload):
    job, _, bob_token = watched
    async with Socket(server.url, bob_token) as intruder:
        assert (await intruder.call("watch-appstatus", payload(job["job_id"])))["error"]["status"] == 400
    assert sim.stats()["appstatus_batch_calls"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [{"app": "A" * 65}, {"ttl_seconds": -1}, {"ttl_seconds": 0}, {"ttl_seconds": 2 ** 62},
                                 {"ttl_seconds": 1.5}, {"ttl_seconds": True}, {"app": ["ALL"]}])
async def test_watch_refuses_bad_options_of_ones_own_job(server, watched, sim, bad):
    job, alice_token, _ = watched
    async with Socket(server.url, alice_token) as watcher:
        answer = await watcher.call("watch-appstatus", {"job_id": job["job_id"], **bad})
        assert answer["error"]["code"] == "validation_error", bad
    assert sim.stats()["appstatus_batch_calls"] == 0


@pytest.mark.asyncio
@pytest.mark.own_server
@pytest.mark.slow  # waits for refreshes to come, then for them to stop, three times
async def test_watch_keeps_app_status_fresh_until_nobody_watches(server, watched, sim):
    job, alice_token, bob_token = watched
    async with Socket(server.url, alice_token) as watcher:
        answer = await watcher.call("watch-appstatus", {"job_id": job["job_id"], "ttl_seconds": 1})
        assert answer == {"ok": True, "job_id": job["job_id"], "app": "ALL", "ttl_seconds": 1}
        first = await watcher.next_event()  # the watch loads what is missing at once
        assert first["cache_misses"] == 3
        # then, with nobody asking over HTTP, it refetches as the entries expire
        second = await watcher.next_event(timeout=5)
        assert second["cache_misses"] == 3 and second["cache_hits"] == 0
        assert all(e["from_cache"] is False for e in second["statuses"].values())
        assert sim.stats()["appstatus_batch_calls"] >= 2

        assert await watcher.call("unwatch-appstatus", {"job_id": job["job_id"]}) == {"ok": True}
        await refreshing_stopped(sim)

        # watching again, then leaving the room, stops it too
        await watcher.call("watch-appstatus", {"job_id": job["job_id"], "ttl_seconds": 1})
        await watcher.next_event(timeout=5)
        assert await watcher.call("unsubscribe", {"job_id": job["job_id"]}) == {"ok": True}
        await refreshing_stopped(sim)

        await watcher.call("watch-appstatus", {"job_id": job["job_id"], "ttl_seconds": 1})
        await watcher.next_event(timeout=5)
    # disconnected: the watch ends with it
    await refreshing_stopped(sim)

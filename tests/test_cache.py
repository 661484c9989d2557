"""The app-status cache: hits and misses, TTL, cleanup, invalidation, fallback, failures, single-flight."""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from server.sim.cluster import app_status_for
from support import api_error as error
from support import finished_job

# the cache is the cluster's, shared by every user, and its figures count everyone's: a server each
pytestmark = pytest.mark.own_server


def appstatus(api, job, **params) -> dict:
    response = api.get(f"/api/jobs/{job['job_id']}/appstatus", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def counts(answer: dict) -> tuple[int, int]:
    return answer["cache_hits"], answer["cache_misses"]


def stats(api) -> dict:
    response = api.get("/api/cache/stats")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def alice_and_admin_on():
    """Create alice and an admin on a server made with make_server (or its shared database)."""
    return lambda server: (server.create_user("alice"), server.create_user("root-admin", role="admin"))


def test_hits_misses_and_stats_scoped_per_user(server, alice, bob, admin, sim):
    alice_api, bob_api, admin_api = server.client(alice), server.client(bob), server.client(admin)
    alice_job = finished_job(alice_api, ["C1", "C2", "C3", "C4"])
    bob_job = finished_job(bob_api, ["C3", "C9"])
    assert counts(appstatus(alice_api, alice_job)) == (0, 4)
    assert counts(appstatus(alice_api, alice_job)) == (4, 0)
    # entries belong to the cluster, not to a user: C3 is already known
    assert counts(appstatus(bob_api, bob_job)) == (1, 1)
    assert sim.stats()["appstatus_batch_calls"] == 2

    mine = stats(alice_api)
    assert mine["scope"] == "mine"
    assert mine["clusters"]["sim"] == {"entries": 4, "expired_entries": 0, "hits": 4, "misses": 4,
                                       "expired": 0, "hit_rate": 0.5}
    assert mine["clusters"]["sim2"]["entries"] == 0 and mine["clusters"]["sim2"]["hit_rate"] is None
    assert mine["total"]["hits"] == 4 and mine["as_of"].endswith("Z")
    theirs = stats(bob_api)["clusters"]["sim"]
    assert (theirs["entries"], theirs["hits"], theirs["misses"]) == (2, 1, 1)

    everything = stats(admin_api)
    assert everything["scope"] == "all"
    assert everything["clusters"]["sim"] == {"entries": 5, "expired_entries": 0, "hits": 5, "misses": 5,
                                             "expired": 0, "cleaned": 0, "hit_rate": 0.5}
    assert everything["total"]["entries"] == 5 and everything["total"]["cleaned"] == 0
    # an admin's read token is a user's view; no credential, no stats
    admin_read = server.client(token=server.create_token(admin, "read"))
    assert stats(admin_read)["scope"] == "mine"
    assert error(server.client().get("/api/cache/stats"), 401)


@pytest.mark.slow  # waits for entries to expire, twice
def test_ttl_expiry_per_request_and_per_entry(server, alice, admin, sim):
    api = server.client(alice)
    job = finished_job(api, ["C1", "C2", "C3"])
    first = appstatus(api, job, ttl_seconds=1)
    assert counts(first) == (0, 3)
    assert counts(appstatus(api, job, ttl_seconds=1)) == (3, 0)
    time.sleep(1.1)
    again = appstatus(api, job, ttl_seconds=1)
    assert counts(again) == (0, 3)  # expired: fetched again
    assert again["appstatus"]["C1"]["cached_at"] > first["appstatus"]["C1"]["cached_at"]
    assert stats(server.client(admin))["clusters"]["sim"]["expired"] == 3

    # entries fetched with a long TTL are too old for a request that accepts 1 second
    assert counts(appstatus(api, job, ttl_seconds=600, skip_cache="true")) == (0, 3)
    time.sleep(1.1)
    assert counts(appstatus(api, job, ttl_seconds=600)) == (3, 0)
    assert counts(appstatus(api, job, ttl_seconds=1)) == (0, 3)
    assert counts(appstatus(api, job)) == (3, 0)
    assert sim.stats()["appstatus_batch_calls"] == 4

    # skip_cache: asked again whatever the cache holds, and cached for the next request
    cached = appstatus(api, job)
    time.sleep(0.01)
    fresh = appstatus(api, job, skip_cache="true")
    assert counts(fresh) == (0, 3)
    assert all(not e["from_cache"] for e in fresh["appstatus"].values())
    assert fresh["appstatus"]["C1"]["cached_at"] > cached["appstatus"]["C1"]["cached_at"]
    assert counts(appstatus(api, job, skip_cache="0")) == (3, 0)
    assert sim.stats()["appstatus_batch_calls"] == 5


@pytest.mark.slow  # waits for the background cleanup
def test_expired_entries_are_cleaned_up_in_the_background(make_server, alice_and_admin_on, sim):
    server = make_server(APPSTATUS_CLEANUP_INTERVAL="0.2")
    alice, admin = alice_and_admin_on(server)
    api = server.client(alice)
    job = finished_job(api, ["C1", "C2", "C3"])
    appstatus(api, job, ttl_seconds=1)
    appstatus(api, job, ttl_seconds=60, app="other")
    stored = stats(server.client(admin))["clusters"]["sim"]
    assert stored["entries"] + stored["expired_entries"] + stored["cleaned"] == 6
    deadline = time.monotonic() + 5
    while stats(server.client(admin))["clusters"]["sim"]["cleaned"] < 3:
        assert time.monotonic() < deadline, stats(server.client(admin))
        time.sleep(0.1)
    sim_stats = stats(server.client(admin))["clusters"]["sim"]
    assert (sim_stats["entries"], sim_stats["expired_entries"], sim_stats["cleaned"]) == (3, 0, 3)
    assert "cleaned" not in stats(api)["clusters"]["sim"]


def test_invalidation_by_job_cids_and_app_and_for_admins(server, alice, bob, admin, sim, sim2):
    api = server.client(alice)
    job = finished_job(api, ["C1", "C2", "C3"])
    other = finished_job(api, ["C1", "C2"], cluster="sim2")
    appstatus(api, job)
    appstatus(api, job, app="billing")
    appstatus(api, other)

    def invalidate(client, body, status=200):
        response = client.post("/api/cache/invalidate", json=body)
        assert response.status_code == status, response.text
        return response.json()

    # CIDs of the job: every app of those customers, on the job's cluster only
    assert invalidate(api, {"job_id": job["job_id"], "cids": ["C1"]})["invalidated"] == 2
    assert counts(appstatus(api, job)) == (2, 1)
    assert invalidate(api, {"job_id": job["job_id"], "app": "billing"})["invalidated"] == 2
    assert counts(appstatus(api, job, app="billing")) == (0, 3)
    assert invalidate(api, {"job_id": job["job_id"]}) == {
        "invalidated": 6, "job_id": job["job_id"], "cids": None, "app": None}
    # the same CIDs on the other cluster were never touched
    assert counts(appstatus(api, other)) == (2, 0)

    # other users, and beyond one's own jobs
    bob_api = server.client(bob)
    assert error(bob_api.post("/api/cache/invalidate", json={"job_id": job["job_id"]}), 403)["code"] == "forbidden"
    assert error(bob_api.post("/api/cache/invalidate", json={"job_id": job["job_id"], "cids": ["C1"]}), 403)
    assert error(bob_api.post("/api/cache/invalidate", json={"job_id": str(uuid.uuid4())}), 404)
    for body in [{}, {"all": True}, {"cluster": "sim2"}, {"app": "ALL"}]:
        assert error(bob_api.post("/api/cache/invalidate", json=body), 403)["code"] == "forbidden"
    assert counts(appstatus(api, other)) == (2, 0)

    # hostile and malformed bodies
    bad = [
        ({"job_id": job["job_id"], "cids": ["C1", "C999"]}, "cids"),
        ({"job_id": job["job_id"], "cids": "C1"}, "cids"),
        ({"job_id": job["job_id"], "cids": ["bad cid!"]}, "cids"),
        ({"job_id": job["job_id"], "cids": []}, "cids"),
        ({"job_id": job["job_id"], "cids": [None]}, "cids"),
        ({"job_id": job["job_id"], "app": "A" * 65}, "app"),
        ({"job_id": job["job_id"], "app": 7}, "app"),
        ({"job_id": "not-a-uuid"}, "job_id"),
        ({"job_id": job["job_id"], "all": True}, "job_id"),
        ({"job_id": job["job_id"], "cid": "C1"}, "cid"),
    ]
    for body, field in bad:
        answer = error(api.post("/api/cache/invalidate", json=body), 400)
        assert answer["code"] == "validation_error" and answer["details"]["field"] == field, body
    strangers = error(api.post("/api/cache/invalidate", json=bad[0][0]), 400)
    assert strangers["details"]["not_in_job"] == ["C999"]
    for raw in [b"", b"not json", b"[1, 2]", b'"x"']:
        response = api.post("/api/cache/invalidate", content=raw, headers={"Content-Type": "application/json"})
        assert error(response, 400)["code"] == "validation_error"
    huge = {"job_id": job["job_id"], "cids": ["C1"] * 20000}
    assert error(api.post("/api/cache/invalidate", json=huge), 413)["code"] == "payload_too_large"
    # a write: a read token may not, a cookie needs its CSRF token
    reader = server.client(token=server.create_token(alice, "read"))
    assert error(reader.post("/api/cache/invalidate", json={"job_id": job["job_id"]}), 403)["code"] == \
        "insufficient_scope"
    no_csrf = httpx.post(server.url + "/api/cache/invalidate", json={"job_id": job["job_id"]},
                         cookies=api.http.cookies)
    assert error(no_csrf, 403)["code"] == "csrf_failed"

    # admins: anyone's job, a cluster, an app, or all
    admin_api = server.client(admin)
    appstatus(api, job)
    appstatus(api, job, app="billing")
    assert invalidate(admin_api, {"job_id": job["job_id"], "app": "billing"})["invalidated"] == 3
    for body, field in [({}, None), ({"all": False}, "all"), ({"cids": ["C1"]}, "cids")]:
        answer = error(admin_api.post("/api/cache/invalidate", json=body), 400)
        assert answer["code"] == "validation_error" and (field is None or answer["details"]["field"] == field)
    assert error(admin_api.post("/api/cache/invalidate", json={"cluster": "nope"}), 400)["code"] == "unknown_cluster"
    assert invalidate(admin_api, {"cluster": "sim2"}) == {"invalidated": 2, "cluster": "sim2", "app": None,
                                                           "all": False}
    assert invalidate(admin_api, {"app": "ALL"})["invalidated"] == 3
    appstatus(api, other)
    appstatus(api, job, app="x")
    assert invalidate(admin_api, {"all": True})["invalidated"] == 5
    assert stats(admin_api)["total"]["entries"] == 0


def test_partial_upstream_failure_returns_the_rest(server, alice, sim):
    api = server.client(alice)
    job = finished_job(api, ["C1", "C2", "C3"])
    sim.knobs(appstatus_fail_cids=["C2"])
    answer = appstatus(api, job)
    assert counts(answer) == (0, 3) and answer["failed_cids"] == ["C2"]
    failed = answer["appstatus"]["C2"]
    assert failed["status"] is None and failed["from_cache"] is False and failed["cached_at"] is None
    assert "did not include this customer" in failed["error"]
    assert answer["appstatus"]["C1"]["status"] == app_status_for("C1", True)[0]
    assert "error" not in answer["appstatus"]["C1"]
    # the failure was not cached: asked again next time, the others come from the cache
    assert counts(appstatus(api, job)) == (2, 1)

    # no batch endpoint (404): one CID at a time, where C2 answers HTTP 500
    sim.knobs(appstatus_batch_enabled=False)
    calls = sim.stats()
    again = appstatus(api, job, skip_cache="true")
    assert again["failed_cids"] == ["C2"] and "HTTP 500 from cluster 'sim'" in again["appstatus"]["C2"]["error"]
    assert {cid: again["appstatus"][cid]["status"] for cid in ("C1", "C3")} == {
        cid: app_status_for(cid, True)[0] for cid in ("C1", "C3")}
    now = sim.stats()
    assert now["appstatus_batch_calls"] - calls["appstatus_batch_calls"] == 1
    assert now["appstatus_single_calls"] - calls["appstatus_single_calls"] == 3
    # a cluster without the endpoint is not asked for it again on every request
    appstatus(api, job, skip_cache="true")
    assert sim.stats()["appstatus_batch_calls"] == now["appstatus_batch_calls"]
    assert sim.stats()["appstatus_single_calls"] - now["appstatus_single_calls"] == 3

    # the cluster refusing everything: still an answer, every customer marked
    sim.knobs(required_token="secret")
    down = appstatus(api, job, skip_cache="true")
    assert down["failed_cids"] == ["C1", "C2", "C3"]
    assert all("HTTP 401" in e["error"] for e in down["appstatus"].values())
    # and what was cached before is still there for the next normal request
    assert counts(appstatus(api, job)) == (2, 1)


def seen(answer: dict) -> dict:
    """What a user reads of each customer (from_cache differs for a request that came late)."""
    return {cid: (e["status"], e["cached_at"]) for cid, e in answer["appstatus"].items()}


def concurrently(clients, job, count, **params) -> list[dict]:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(appstatus, clients[i % len(clients)], job, **params) for i in range(count)]
        return [f.result() for f in futures]


def test_chunks_and_the_fallback_to_one_cid_at_a_time(make_server, alice_and_admin_on, sim):
    server = make_server(APPSTATUS_BATCH_SIZE="10")
    alice, _ = alice_and_admin_on(server)
    api = server.client(alice)
    cids = [f"C{n}" for n in range(25)]
    job = finished_job(api, cids)

    # the batch endpoint failing (HTTP 500): each chunk of at most 10 is tried once, then per CID
    sim.knobs(appstatus_batch_status=500)
    answer = appstatus(api, job)
    assert counts(answer) == (0, 25) and answer["failed_cids"] == []
    assert all(e["status"] == app_status_for(cid, True)[0] for cid, e in answer["appstatus"].items())
    assert (sim.stats()["appstatus_batch_calls"], sim.stats()["appstatus_single_calls"]) == (3, 25)
    sim.knobs(appstatus_batch_status=None)
    assert api.post("/api/cache/invalidate", json={"job_id": job["job_id"]}).json()["invalidated"] == 25


@pytest.mark.slow  # a cluster slowed down to half a second, so that the requests overlap
def test_single_flight(make_server, alice_and_admin_on, sim):
    server = make_server(APPSTATUS_BATCH_SIZE="10")
    alice, _ = alice_and_admin_on(server)
    job = finished_job(server.client(alice), [f"C{n}" for n in range(25)])
    sim.reset()

    # ten concurrent requests for the same missing entries: one series of ceil(25 / 10) calls
    sim.knobs(latency_ms=500)
    token = server.create_token(alice)
    clients = [server.client(token=token) for _ in range(10)]
    answers = concurrently(clients, job, 10)
    assert sim.stats()["appstatus_batch_calls"] == math.ceil(25 / 10)
    assert all(seen(a) == seen(answers[0]) for a in answers)
    assert all(a["failed_cids"] == [] and len(a["appstatus"]) == 25 for a in answers)
    # skip_cache requests share one fetch too
    answers = concurrently(clients, job, 10, skip_cache="true")
    assert sim.stats()["appstatus_batch_calls"] == 2 * math.ceil(25 / 10)
    assert all(counts(a) == (0, 25) for a in answers)


@pytest.mark.slow  # two nodes
def test_single_flight_across_two_nodes_sharing_the_database(make_server, alice_and_admin_on, sim):
    node_a = make_server(APPSTATUS_BATCH_SIZE="10")
    node_b = make_server(APPSTATUS_BATCH_SIZE="10")
    alice, admin = alice_and_admin_on(node_a)
    cids = [f"C{n}" for n in range(25)]
    job = finished_job(node_a.client(alice), cids)
    sim.knobs(latency_ms=500)
    token = node_a.create_token(alice)
    clients = [node_a.client(token=token) for _ in range(5)] + [node_b.client(token=token) for _ in range(5)]
    answers = concurrently(clients, job, 10)
    assert sim.stats()["appstatus_batch_calls"] == math.ceil(25 / 10)
    assert all(a["failed_cids"] == [] and seen(a) == seen(answers[0]) for a in answers)
    # both nodes see one cache and one set of counters
    assert stats(node_b.client(admin))["clusters"]["sim"]["entries"] == 25


def test_clusters_never_share_entries(server, alice, sim, sim2):
    api = server.client(alice)
    on_sim = finished_job(api, ["C1", "C2"])
    sim2.knobs(fail_cids={"C1": "no", "C2": "no"})
    on_sim2 = finished_job(api, ["C1", "C2"], cluster="sim2")  # so sim2 never learnt them
    assert counts(appstatus(api, on_sim)) == (0, 2)
    answer = appstatus(api, on_sim2)
    assert counts(answer) == (0, 2)
    assert {e["status"] for e in answer["appstatus"].values()} == {"unknown"}
    assert appstatus(api, on_sim)["appstatus"]["C1"]["status"] == app_status_for("C1", True)[0]
    assert (sim.stats()["appstatus_batch_calls"], sim2.stats()["appstatus_batch_calls"]) == (1, 1)
    per_cluster = stats(api)["clusters"]
    assert (per_cluster["sim"]["entries"], per_cluster["sim2"]["entries"]) == (2, 2)


def test_cache_settings_default(tmp_path):
    from server.config import load_settings

    settings = load_settings({"JOBMON_DATA_DIR": str(tmp_path), "JOBMON_SECRET_KEY": "x" * 32})
    assert (settings.appstatus_batch_size, settings.appstatus_concurrency, settings.appstatus_ttl) == (500, 8, 1800)


@pytest.mark.parametrize("name, value", [("APPSTATUS_BATCH_SIZE", "1001"), ("APPSTATUS_BATCH_SIZE", "0"),
                                         ("APPSTATUS_CONCURRENCY", "many"), ("APPSTATUS_TTL", "0"),
                                         ("APPSTATUS_TTL", "604801"), ("APPSTATUS_CLEANUP_INTERVAL", "-1"),
                                         ("STATES_MAX_PAGES", "0")])
def test_cache_settings_are_checked_at_start_up(tmp_path, name, value):
    from server.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as raised:
        load_settings({"JOBMON_DATA_DIR": str(tmp_path), "JOBMON_SECRET_KEY": "x" * 32, f"JOBMON_{name}": value})
    assert f"JOBMON_{name}={value!r}" in str(raised.value)

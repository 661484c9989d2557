"""A job's life through the REST API: lifecycle, listing, customers, stats, isolation, ops routes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import pytest

from support import api_error as error
from support import db_rows

ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    return datetime.strptime(stamp, ISO_Z)


def test_lifecycle_queued_in_progress_success(make_server, sim):
    server = make_server(BATCH_SIZE=5, BATCH_CONCURRENCY=1)
    alice = server.create_user("alice")
    api = server.client(alice)
    sim.knobs(latency_ms=60)
    cids = [f"C{i}" for i in range(20)]
    job = api.start(cids)
    assert job["status"] == "QUEUED" and job["done"] == 0 and job["failed"] == 0
    assert job["started_at"] is None and job["finished_at"] is None and job["duration_ms"] is None
    assert job["customer_count"] == 20 and uuid.UUID(job["job_id"]).version == 4

    running = api.wait_for(job["job_id"], statuses=("IN_PROGRESS",))
    assert running["started_at"] is not None and running["finished_at"] is None
    seen_progress = set()
    while (current := api.job(job["job_id"]))["status"] == "IN_PROGRESS":
        seen_progress.add(current["done"])
        time.sleep(0.02)
    assert seen_progress & {5, 10, 15}, seen_progress  # progress is visible batch by batch

    done = api.wait_for(job["job_id"])
    assert done["status"] == "SUCCESS"
    assert (done["done"], done["failed"], done["http_status"], done["error_message"]) == (20, 0, 200, None)
    created, started, finished = parse(done["created_at"]), parse(done["started_at"]), parse(done["finished_at"])
    assert created <= started <= finished and parse(done["updated_at"]) == finished
    assert done["duration_ms"] == round((finished - started).total_seconds() * 1000)
    assert done["duration_ms"] >= 4 * 60  # four batches, one after the other, 60 ms each
    detail = api.get(f"/api/jobs/{job['job_id']}").json()
    assert detail["customer_summary"] == [{"status": "SUCCESS", "http_status": 200, "count": 20,
                                           "example_error": None}]
    listed = api.get(f"/api/jobs/{job['job_id']}/customers").json()
    assert [c["cid"] for c in listed["customers"]] == cids
    assert {(c["status"], c["http_status"], c["error_message"]) for c in listed["customers"]} == {
        ("SUCCESS", 200, None)}
    assert all(c["updated_at"].endswith("Z") for c in listed["customers"])
    stats = sim.stats()
    assert stats["customers_applied"] == 20 and stats["set_action_calls"] == 4

    # every change was written as an event, ids increasing by one per user, in order
    events = db_rows(server.settings.database_url,
                     "SELECT event_id, kind, payload FROM job_events ORDER BY event_id")
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    kinds = [e[1] for e in events]
    assert kinds[:2] == ["created", "status"] and kinds[-1] == "status"
    assert set(kinds[2:-1]) == {"progress"}  # progress events are paced, so how many varies
    payloads = [json.loads(e[2]) for e in events]
    assert [p["status"] for p in payloads] == ["QUEUED"] + ["IN_PROGRESS"] * (len(events) - 2) + ["SUCCESS"]
    progress = [p["done"] for p in payloads[2:-1]]
    assert progress == sorted(progress) and progress[0] >= 5 and payloads[-1]["done"] == 20


def test_listing_filters_and_pagination(server, alice, bob, sim):
    api = server.client(alice)
    # failing CIDs that are not hexadecimal: a search for them cannot match the start of a job id
    sim.knobs(fail_cids={"BADX1": "customer locked", "BADX2": "customer locked"})
    jobs = [api.start(["C1", "C2"], action="PE-Enable"), api.start(["BADX1", "C3"], action="T-Enable"),
            api.start(["BADX1", "BADX2"], action="pe-enable"), api.start(["XYZ-9"], action="Trans-Begin")]
    jobs += [api.start([f"D{i}"], action="PE-Direct") for i in range(8)]
    finals = {j["job_id"]: api.wait_for(j["job_id"])["status"] for j in jobs}
    assert list(finals.values())[:4] == ["SUCCESS", "PARTIAL", "FAILED", "SUCCESS"]
    server.client(bob).start(["C1"])
    newest_first = [j["job_id"] for j in reversed(jobs)]

    page = api.get("/api/jobs/mine").json()
    assert [j["job_id"] for j in page["jobs"]] == newest_first and page["next_cursor"] is None

    walked, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/jobs/mine", params=params).json()
        assert len(page["jobs"]) <= 5
        walked += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == newest_first  # no duplicates, no gaps
    # a job started between two pages shows on top, never inside the later pages
    first = api.get("/api/jobs/mine", params={"limit": 3}).json()
    late = api.start(["LATE"])
    rest = api.get("/api/jobs/mine", params={"limit": 50, "cursor": first["next_cursor"]}).json()
    assert [j["job_id"] for j in first["jobs"] + rest["jobs"]] == newest_first
    api.wait_for(late["job_id"])

    def ids(**params) -> list[str]:
        answer = api.get("/api/jobs/mine", params=params)
        assert answer.status_code == 200, answer.text
        return [j["job_id"] for j in answer.json()["jobs"]]

    assert ids(status="PARTIAL") == [jobs[1]["job_id"]]
    assert ids(status="failed,partial") == [jobs[2]["job_id"], jobs[1]["job_id"]]
    assert ids(action="pe-enable", status="SUCCESS") == [late["job_id"], jobs[0]["job_id"]]
    assert ids(action="PE-ENABLE") == [late["job_id"], jobs[2]["job_id"], jobs[0]["job_id"]]
    assert ids(action="tran-begin") == [jobs[3]["job_id"]]
    assert ids(q=jobs[5]["job_id"][:8]) == [jobs[5]["job_id"]]
    assert ids(q=jobs[5]["job_id"][:8].upper()) == [jobs[5]["job_id"]]
    assert ids(q=jobs[5]["job_id"]) == [jobs[5]["job_id"]]
    assert ids(q="BADX1") == [jobs[2]["job_id"], jobs[1]["job_id"]]  # by CID
    assert ids(q="BADX") == []  # a CID matches whole
    assert ids(q="%") == [] and ids(q="_") == []  # LIKE wildcards are plain text
    assert ids(q="XYZ-9", status="SUCCESS", action="Trans-Begin") == [jobs[3]["job_id"]]
    assert ids(cluster="sim2") == []
    assert len(ids(status="queued,in_progress,success,failed,partial,cancelled")) == 13

    assert error(server.client().get("/api/jobs/mine"), 401)


@pytest.mark.parametrize("params, field", [
    *[({"cursor": bad}, "cursor") for bad in ["abc", "e30", "W10", "WyJ4IiwgInkiXQ", "!!!", "x" * 600]],
    *[({"limit": limit}, "limit") for limit in ["0", "201", "-1", "ten", "1e3"]],
    ({"q": "x" * 101}, "q"),
])
def test_listing_refuses_bad_parameters_naming_them(server, alice, params, field):
    assert error(server.client(alice).get("/api/jobs/mine", params=params), 400)["details"] == {"field": field}


def test_listing_refuses_an_unknown_status_listing_the_valid_ones(server, alice):
    assert error(server.client(alice).get("/api/jobs/mine", params={"status": "DONE"}), 400)["details"] == {
        "field": "status", "valid": ["CANCELLED", "FAILED", "IN_PROGRESS", "PARTIAL", "QUEUED", "SUCCESS"]}


def test_listing_refuses_an_unknown_action(server, alice):
    assert error(server.client(alice).get("/api/jobs/mine", params={"action": "nope"}), 400)["code"] == \
        "unknown_action"


def test_customers_pagination_filter_and_stats(server, alice, sim):
    api = server.client(alice)
    sim.knobs(fail_cids={"C03": "customer locked", "C17": "no such customer"})
    cids = [f"C{i:02d}" for i in range(25)]
    partial = api.wait_for(api.start(cids)["job_id"])
    assert partial["status"] == "PARTIAL"
    assert partial["error_message"] == "2 of 25 customers failed: customer locked"
    path = f"/api/jobs/{partial['job_id']}/customers"

    walked, cursor = [], None
    while True:
        page = api.get(path, params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        assert page["job_id"] == partial["job_id"] and len(page["customers"]) <= 10
        walked += page["customers"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [c["cid"] for c in walked] == cids
    failed = api.get(path, params={"status": "failed"}).json()["customers"]
    assert [(c["cid"], c["error_message"], c["http_status"]) for c in failed] == [
        ("C03", "customer locked", 200), ("C17", "no such customer", 200)]
    assert len(api.get(path, params={"status": "SUCCESS", "limit": 5000}).json()["customers"]) == 23
    assert api.get(path, params={"status": "SKIPPED"}).json()["customers"] == []
    assert error(api.get(path, params={"status": "DONE"}), 400)["details"] == {"field": "status"}
    assert error(api.get(path, params={"cursor": "nope"}), 400)["details"] == {"field": "cursor"}
    assert error(api.get(path, params={"limit": "5001"}), 400)["details"] == {"field": "limit"}
    summary = api.get(f"/api/jobs/{partial['job_id']}").json()["customer_summary"]
    assert summary == [{"status": "FAILED", "http_status": 200, "count": 2, "example_error": "customer locked"},
                       {"status": "SUCCESS", "http_status": 200, "count": 23, "example_error": None}]

    sim.knobs(fail_cids={}, failure_rate=1.0)
    assert api.wait_for(api.start(["E1"])["job_id"])["status"] == "FAILED"
    sim.knobs(failure_rate=0.0)
    ok = [api.wait_for(api.start([f"S{i}"])["job_id"]) for i in range(3)]
    stats = api.get("/api/stats/mine").json()
    assert stats["user_id"] == alice["id"]
    assert stats["counts"] == {"QUEUED": 0, "IN_PROGRESS": 0, "SUCCESS": 3, "FAILED": 1, "PARTIAL": 1,
                               "CANCELLED": 0}
    assert stats["today"] == {"total": 5, "success": 3, "failed": 2}
    assert stats["running"] == 0 and stats["success_rate"] == 60.0
    durations = [partial["duration_ms"]] + [j["duration_ms"] for j in ok]
    assert stats["avg_duration_ms"] is not None and 0 <= stats["avg_duration_ms"] <= max(durations) + 1000
    assert stats["as_of"].endswith("Z")
    assert len(stats["daily"]) == 7 and stats["daily"][-1]["created"] == 5
    assert stats["daily"][-1]["day"] == stats["as_of"][:10]


def test_another_users_job_is_out_of_reach(server, alice, bob, admin, sim):
    alice_api, bob_api, admin_api = server.client(alice), server.client(bob), server.client(admin)
    sim.knobs(fail_cids={"C2": "customer locked"})
    job = alice_api.wait_for(alice_api.start(["C1", "C2"])["job_id"])
    assert job["status"] == "PARTIAL"
    job_id = job["job_id"]
    bob_token = server.client(token=server.create_token(bob, "write"))
    for client in (bob_api, bob_token):
        for method, path in JOB_PATHS:
            answer = client.http.request(method, f"/api/jobs/{job_id}{path}")
            assert error(answer, 403)["code"] == "forbidden", (method, path)
            assert "C1" not in answer.text and alice["username"] not in answer.text
        assert client.get("/api/jobs/mine", params={"q": job_id}).json()["jobs"] == []
        assert client.get("/api/jobs/mine", params={"q": "C2"}).json()["jobs"] == []
        assert client.get("/api/stats/mine").json()["counts"]["PARTIAL"] == 0
    # nothing changed: no retry job, no cancel
    assert len(alice_api.get("/api/jobs/mine").json()["jobs"]) == 1
    assert alice_api.job(job_id)["status"] == "PARTIAL"

    # an admin reads it
    assert admin_api.job(job_id)["user_id"] == alice["id"]
    assert len(admin_api.get(f"/api/jobs/{job_id}/customers").json()["customers"]) == 2
    assert admin_api.get("/api/jobs/mine").json()["jobs"] == []  # "mine" is still the admin's own

    missing = str(uuid.uuid4())
    for method, path in JOB_PATHS:
        assert error(alice_api.http.request(method, f"/api/jobs/{missing}{path}"), 404)["code"] == "not_found"
    assert error(server.client().get(f"/api/jobs/{job_id}"), 401)


JOB_PATHS = [("GET", ""), ("GET", "/customers"), ("POST", "/cancel"), ("POST", "/retry")]


@pytest.mark.parametrize("malformed", [
    lambda job_id: "abc", lambda job_id: "1", lambda job_id: "' OR 1=1 --", lambda job_id: "x" * 5000,
    lambda job_id: job_id + "0", lambda job_id: job_id[:-1], lambda job_id: "%00",
], ids=["abc", "1", "sql", "5000-chars", "one-too-many", "one-short", "percent-00"])
def test_a_malformed_job_id_is_400_on_every_job_path(server, alice, sim, malformed):
    api = server.client(alice)
    bad = malformed(api.start(["C1"])["job_id"])  # some made from a real job's id
    for method, path in JOB_PATHS:
        answer = api.http.request(method, f"/api/jobs/{bad}{path}")
        assert error(answer, 400)["details"] == {"field": "job_id"}, (method, bad)


@pytest.mark.own_server  # the metrics count every user's jobs
def test_ops_routes(server, alice, sim):
    anonymous = server.client()
    health = anonymous.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-content-type-options"] == "nosniff" and health.headers["x-frame-options"] == "DENY"
    ready = anonymous.get("/readyz").json()
    assert ready["status"] == "ready" and ready["node"].startswith("node-")
    api = server.client(alice)
    api.wait_for(api.start(["C1"])["job_id"])
    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'jobmon_jobs{status="SUCCESS"} 1' in metrics.text
    assert "jobmon_node_running_jobs 0" in metrics.text
    spec = anonymous.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ["/api/set-actions", "/api/jobs/mine", "/api/jobs/{job_id}", "/api/jobs/{job_id}/customers",
                 "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/retry", "/api/stats/mine", "/api/tokens",
                 "/api/auth/login", "/healthz"]:
        assert path in spec["paths"], path
    assert spec["paths"]["/api/set-actions"]["post"]["summary"]
    assert error(anonymous.get("/api/nope"), 404)["code"] == "not_found"
    assert error(anonymous.delete("/healthz"), 405)["code"] == "method_not_allowed"

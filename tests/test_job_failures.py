"""How jobs fail, and what a user reads about it; the user's upstream token; cancel and retry."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from support import api_error as error
from support import db_rows, free_port

USER_TOKEN = "user-secret-token-4711"
SERVICE_TOKEN = "service-secret-token-0815"


def clusters_file(path: Path, entries: list[dict]) -> str:
    path.write_text(json.dumps(entries))
    return str(path)


def customer_rows(api, job_id: str, status: str | None = None) -> list[dict]:
    params = {"limit": 5000, **({"status": status} if status else {})}
    return api.get(f"/api/jobs/{job_id}/customers", params=params).json()["customers"]


@pytest.mark.slow  # a cluster that hangs for 1.5 s, and the wait for it to answer at last
def test_every_failure_kind(make_server, sim, tmp_path):
    dead_port = free_port()  # nothing listens there: connection refused
    server = make_server(UPSTREAM_TIMEOUT=0.5, CLUSTERS_FILE=clusters_file(tmp_path / "c.json", [
        {"id": "sim", "name": "Simulated", "base_url": sim.url},
        {"id": "dead", "name": "Switched off", "base_url": f"http://127.0.0.1:{dead_port}"}]))
    api = server.client(server.create_user("alice"))

    def run(knobs: dict, cids: list[str], cluster: str = "sim") -> dict:
        sim.knobs(**knobs)
        job = api.wait_for(api.start(cids, cluster=cluster)["job_id"])
        sim.knobs(hang_seconds=0, fail_cids={}, failure_rate=0, set_action_status=None, set_action_error=None,
                  malformed=False)
        assert job["done"] == len(cids) and job["finished_at"] is not None and job["duration_ms"] is not None
        return job

    started = time.monotonic()
    timeout = run({"hang_seconds": 1.5}, ["T1"])
    assert time.monotonic() - started < 1.4  # the total deadline, not the cluster, ended the call
    assert (timeout["status"], timeout["http_status"], timeout["failed"]) == ("FAILED", 408, 1)
    assert timeout["error_message"] == "Cluster 'sim' did not answer within 0.5 s"

    partial = run({"fail_cids": {"P2": "customer locked"}}, ["P1", "P2", "P3"])
    assert (partial["status"], partial["http_status"], partial["done"], partial["failed"]) == ("PARTIAL", 200, 3, 1)
    assert partial["error_message"] == "1 of 3 customers failed: customer locked"
    assert [(c["cid"], c["status"], c["error_message"]) for c in customer_rows(api, partial["job_id"])] == [
        ("P1", "SUCCESS", None), ("P2", "FAILED", "customer locked"), ("P3", "SUCCESS", None)]

    all_failed = run({"failure_rate": 1.0}, ["F1", "F2"])
    assert (all_failed["status"], all_failed["http_status"], all_failed["failed"]) == ("FAILED", 200, 2)
    assert all_failed["error_message"] == "All 2 customers failed: simulated failure"

    unauthorized = run({"set_action_status": 401}, ["U1", "U2"])
    assert (unauthorized["status"], unauthorized["http_status"]) == ("FAILED", 401)
    assert unauthorized["error_message"] == ("All 2 customers failed: HTTP 401 from cluster 'sim': the cluster "
                                             "rejected the credentials (missing or expired token) "
                                             "(simulated HTTP 401)")
    assert {(c["status"], c["http_status"]) for c in customer_rows(api, unauthorized["job_id"])} == {
        ("FAILED", 401)}

    for status, hint in [(500, "the cluster had an internal error"), (503, "the cluster is unavailable"),
                         (504, "the cluster's gateway timed out"), (418, "the cluster refused the request")]:
        failed = run({"set_action_status": status}, ["S1"])
        assert (failed["status"], failed["http_status"]) == ("FAILED", status)
        assert failed["error_message"] == f"HTTP {status} from cluster 'sim': {hint} (simulated HTTP {status})"

    refused = run({"set_action_error": "cluster in maintenance"}, ["R1"])
    assert (refused["status"], refused["http_status"]) == ("FAILED", 200)
    assert refused["error_message"] == "Cluster 'sim' refused the Set Action: cluster in maintenance"

    malformed = run({"malformed": True}, ["M1"])
    assert (malformed["status"], malformed["http_status"]) == ("FAILED", 502)
    assert malformed["error_message"] == "Cluster 'sim' answered with malformed JSON"

    unreachable = run({}, ["D1", "D2"], cluster="dead")
    assert (unreachable["status"], unreachable["http_status"]) == ("FAILED", 503)
    assert unreachable["error_message"] == ("All 2 customers failed: Could not connect to cluster 'dead': the "
                                            "connection was refused or the host is unreachable")

    # mixed outcomes across batches: the first failure's message and status are the job's
    stats = api.get("/api/stats/mine").json()
    assert stats["counts"]["FAILED"] == 10 and stats["counts"]["PARTIAL"] == 1
    deadline = time.monotonic() + 5
    while sim.stats()["customers_applied"] < 3:  # P1, P3 and, once its hang is over, T1
        assert time.monotonic() < deadline, sim.stats()
        time.sleep(0.05)


def test_failures_across_batches(make_server, sim):
    server = make_server(BATCH_SIZE=2, BATCH_CONCURRENCY=1)
    api = server.client(server.create_user("alice"))
    sim.knobs(fail_cids={"C3": "customer locked"})
    job = api.wait_for(api.start(["C1", "C2", "C3", "C4", "C5"])["job_id"])
    assert (job["status"], job["done"], job["failed"], job["http_status"]) == ("PARTIAL", 5, 1, 200)
    sim.knobs(fail_cids={}, set_action_status=503)
    job = api.wait_for(api.start(["C1", "C2", "C3"])["job_id"])
    assert (job["status"], job["failed"], job["http_status"]) == ("FAILED", 3, 503)
    assert job["error_message"].startswith("All 3 customers failed: HTTP 503 from cluster 'sim'")


def test_user_token_is_forwarded_never_stored_or_logged(make_server, sim, sim2, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JOBMON_TEST_SVC_TOKEN", SERVICE_TOKEN)
    server = make_server(CLUSTERS_FILE=clusters_file(tmp_path / "c.json", [
        {"id": "sim", "name": "Simulated", "base_url": sim.url},
        {"id": "svc", "name": "With a service token", "base_url": sim2.url, "token_env": "JOBMON_TEST_SVC_TOKEN"}]))
    api = server.client(server.create_user("alice"))
    sim.knobs(required_token=USER_TOKEN)

    denied = api.wait_for(api.start(["C1", "C2"])["job_id"])
    assert (denied["status"], denied["http_status"]) == ("FAILED", 401)
    assert sim.stats()["last_authorization_fingerprint"] is None

    answer = api.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": ["C3"],
                                                "upstream_token": USER_TOKEN})
    assert answer.status_code == 202 and USER_TOKEN not in answer.text
    assert api.wait_for(answer.json()["job"]["job_id"])["status"] == "SUCCESS"
    assert sim.stats()["last_authorization_fingerprint"] == sim.fingerprint(f"Bearer {USER_TOKEN}")
    assert USER_TOKEN not in sim.http.get("/_sim/stats").text

    # the same through a CSV upload, and through "retry the failed customers"
    upload = api.post("/api/set-actions", data={"cluster": "sim", "action": "T-Enable", "upstream_token": USER_TOKEN},
                      files={"file": ("c.csv", b"cid\nC4\n", "text/csv")})
    assert api.wait_for(upload.json()["job"]["job_id"])["status"] == "SUCCESS"
    retried = api.post(f"/api/jobs/{denied['job_id']}/retry", json={"upstream_token": USER_TOKEN})
    assert retried.status_code == 202 and USER_TOKEN not in retried.text
    assert api.wait_for(retried.json()["job"]["job_id"])["status"] == "SUCCESS"

    # a cluster's service token is used when the user gives none, and never shown
    sim2.knobs(required_token=SERVICE_TOKEN)
    assert api.wait_for(api.start(["C5"], cluster="svc")["job_id"])["status"] == "SUCCESS"
    assert sim2.stats()["last_authorization_fingerprint"] == sim2.fingerprint(f"Bearer {SERVICE_TOKEN}")
    assert SERVICE_TOKEN not in api.get("/api/clusters").text

    url = server.settings.database_url
    for job in api.get("/api/jobs/mine").json()["jobs"]:
        assert job["status"] in ("SUCCESS", "FAILED")
    assert USER_TOKEN not in api.get("/api/jobs/mine").text
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        for file in [path, *path.parent.glob(path.name + "-*")]:
            data = file.read_bytes()
            assert USER_TOKEN.encode() not in data and SERVICE_TOKEN.encode() not in data, file
    tables = [r[0] for r in db_rows(url, "SELECT name FROM sqlite_master WHERE type = 'table'")] \
        if url.startswith("sqlite") else \
        [r[0] for r in db_rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert "jobs" in tables and "audit_log" in tables
    for table in tables:
        for row in db_rows(url, f'SELECT * FROM "{table}"'):
            text = repr(row)
            assert USER_TOKEN not in text and SERVICE_TOKEN not in text, (table, row)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.exc_info)
        assert USER_TOKEN not in text and SERVICE_TOKEN not in text, text


def test_cancel_queued_and_running_jobs(make_server, sim):
    server = make_server(JOB_CONCURRENCY=1, BATCH_SIZE=5, BATCH_CONCURRENCY=1)
    api = server.client(server.create_user("alice"))
    sim.knobs(latency_ms=80)
    running = api.start([f"A{i:02d}" for i in range(60)])
    api.wait_for(running["job_id"], statuses=("IN_PROGRESS",))
    queued = api.start(["B1", "B2", "B3"])  # the one job slot is taken: this one waits
    time.sleep(0.2)
    assert api.job(queued["job_id"])["status"] == "QUEUED"

    cancelled = api.post(f"/api/jobs/{queued['job_id']}/cancel")
    assert cancelled.status_code == 202
    job = cancelled.json()["job"]
    assert job["status"] == "CANCELLED" and job["cancel_requested"] is True and job["done"] == 0
    assert job["error_message"] == "Cancelled by its owner; 3 customer(s) were not sent"
    assert {c["status"] for c in customer_rows(api, queued["job_id"])} == {"SKIPPED"}

    while api.job(running["job_id"])["done"] < 10:
        time.sleep(0.02)
    stopping = api.post(f"/api/jobs/{running['job_id']}/cancel").json()["job"]
    assert stopping["cancel_requested"] is True and stopping["status"] in ("IN_PROGRESS", "CANCELLED")
    job = api.wait_for(running["job_id"])
    assert job["status"] == "CANCELLED" and 10 <= job["done"] < 60 and job["failed"] == 0
    skipped = 60 - job["done"]
    assert job["error_message"] == f"Cancelled by its owner; {skipped} customer(s) were not sent"
    rows = customer_rows(api, running["job_id"])
    assert [c["status"] for c in rows] == ["SUCCESS"] * job["done"] + ["SKIPPED"] * skipped
    assert all(c["http_status"] is None and c["error_message"] is None for c in rows[job["done"]:])
    time.sleep(0.2)  # nothing more is sent after the cancel took effect
    assert sim.stats()["customers_applied"] == job["done"]

    for job_id in (running["job_id"], queued["job_id"]):
        again = error(api.post(f"/api/jobs/{job_id}/cancel"), 409)
        assert again["message"] == "The job is already CANCELLED; only a queued or running job can be cancelled"
        assert error(api.post(f"/api/jobs/{job_id}/retry"), 409)["message"] == \
            "This job has no failed customers to retry"
    sim.knobs(latency_ms=0)

    # the customers a cancel kept from being sent can be sent again, as a new job
    assert error(api.post(f"/api/jobs/{running['job_id']}/retry", json={"include_skipped": "yes"}), 400)[
        "details"] == {"field": "include_skipped"}
    rest = api.post(f"/api/jobs/{running['job_id']}/retry", json={"include_skipped": True}).json()["job"]
    assert (rest["customer_count"], rest["parent_job_id"]) == (skipped, running["job_id"])
    assert [c["cid"] for c in customer_rows(api, rest["job_id"])] == [c["cid"] for c in rows[job["done"]:]]
    assert api.wait_for(rest["job_id"])["status"] == "SUCCESS"
    assert sim.stats()["customers_applied"] == 60  # each customer once: the first job's, then the rest
    queued_rest = api.post(f"/api/jobs/{queued['job_id']}/retry", json={"include_skipped": True}).json()["job"]
    assert api.wait_for(queued_rest["job_id"])["status"] == "SUCCESS"
    assert error(api.post(f"/api/jobs/{rest['job_id']}/retry", json={"include_skipped": True}), 409)[
        "message"].endswith("this one is SUCCESS")

    done = api.wait_for(api.start(["C1"])["job_id"])
    assert error(api.post(f"/api/jobs/{done['job_id']}/cancel"), 409)["code"] == "conflict"
    stats = api.get("/api/stats/mine").json()["counts"]
    assert (stats["CANCELLED"], stats["SUCCESS"], stats["QUEUED"], stats["IN_PROGRESS"]) == (2, 3, 0, 0)


def test_retry_failed_customers(make_server, sim):
    server = make_server(BATCH_SIZE=3)
    api = server.client(server.create_user("alice"))
    sim.knobs(fail_cids={"R2": "customer locked", "R4": "no such customer"})
    original = api.wait_for(api.start(["R1", "R2", "R3", "R4", "R5"], action="T-Enable")["job_id"])
    assert original["status"] == "PARTIAL"
    sim.knobs(fail_cids={}, latency_ms=150)

    answer = api.post(f"/api/jobs/{original['job_id']}/retry")
    assert answer.status_code == 202, answer.text
    retry = answer.json()["job"]
    assert retry["job_id"] != original["job_id"] and retry["parent_job_id"] == original["job_id"]
    assert (retry["status"], retry["customer_count"], retry["action_name"], retry["cluster"]) == (
        "QUEUED", 2, "T-Enable", "sim")
    assert [c["cid"] for c in customer_rows(api, retry["job_id"])] == ["R2", "R4"]
    assert error(api.post(f"/api/jobs/{retry['job_id']}/retry"), 409)["message"].startswith(
        "Only a finished job with failures can be retried; this one is")
    done = api.wait_for(retry["job_id"])
    assert (done["status"], done["done"], done["failed"]) == ("SUCCESS", 2, 0)
    assert api.job(original["job_id"])["status"] == "PARTIAL"  # history is kept as it was
    assert error(api.post(f"/api/jobs/{retry['job_id']}/retry"), 409)["message"] == \
        "Only a finished job with failures can be retried; this one is SUCCESS"
    sim.knobs(latency_ms=0)

    # a retry with an Idempotency-Key runs once however often it is sent
    first = api.post(f"/api/jobs/{original['job_id']}/retry", headers={"Idempotency-Key": "retry-1"}).json()["job"]
    second = api.post(f"/api/jobs/{original['job_id']}/retry", headers={"Idempotency-Key": "retry-1"}).json()["job"]
    assert first["job_id"] == second["job_id"]
    api.wait_for(first["job_id"])
    assert error(api.post(f"/api/jobs/{original['job_id']}/retry", content=b"{oops",
                          headers={"content-type": "application/json"}), 400)
    assert error(api.post(f"/api/jobs/{original['job_id']}/retry", json={"upstream_token": 5}), 400)
    assert len(api.get("/api/jobs/mine").json()["jobs"]) == 3
    assert sim.stats()["customers_applied"] == 3 + 2 + 2

"""A cancel that arrives after a job's last batch was sent: nothing is left to keep from being sent,
so the job ends with the status its answers give, and its history keeps the cancel request."""

from __future__ import annotations

import time

import pytest

from support import BACKENDS
from support import api_error as error

CIDS = ["L1", "L2", "L3", "L4"]  # two batches of two, both in flight at once


def cancel_after_every_batch_was_sent(api, sim) -> tuple[dict, dict]:
    """Start a job on a slow cluster, cancel it once the cluster holds all its batches; (cancel answer, final job)."""
    calls_before = sim.stats()["set_action_calls"]
    job = api.start(CIDS)
    deadline = time.monotonic() + 10
    while sim.stats()["set_action_calls"] < calls_before + 2:
        assert time.monotonic() < deadline, "the batches were never sent"
        time.sleep(0.01)
    answer = api.post(f"/api/jobs/{job['job_id']}/cancel")
    assert answer.status_code == 202, answer.text
    stopping = answer.json()["job"]
    # the cluster has not answered yet: the job is still running, with the cancel noted
    assert (stopping["status"], stopping["cancel_requested"], stopping["done"]) == ("IN_PROGRESS", True, 0)
    # asked twice while it stops: the same answer, one cancel in its history
    again = api.post(f"/api/jobs/{job['job_id']}/cancel")
    assert again.status_code == 202 and again.json()["job"]["status"] == "IN_PROGRESS"
    return stopping, api.wait_for(job["job_id"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancel_after_the_last_batch_ends_the_job_as_its_answers_say(make_server, sim):
    server = make_server(BATCH_SIZE=2, BATCH_CONCURRENCY=2)
    user = server.create_user("late-canceller")
    api = server.client(user)
    admin = server.client(server.create_user("late-admin", role="admin"))

    sim.knobs(latency_ms=400)
    _, succeeded = cancel_after_every_batch_was_sent(api, sim)
    assert (succeeded["status"], succeeded["done"], succeeded["failed"]) == ("SUCCESS", 4, 0)
    assert succeeded["error_message"] is None and succeeded["cancel_requested"] is True
    customers = api.get(f"/api/jobs/{succeeded['job_id']}/customers").json()["customers"]
    assert [c["status"] for c in customers] == ["SUCCESS"] * 4  # none SKIPPED
    # its history: created, started, the cancel request, progress, and the final status
    detail = admin.get(f"/admin/jobs/{succeeded['job_id']}").json()
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[:3] == ["created", "status", "cancel_requested"] and kinds[-1] == "status", kinds
    assert kinds.count("cancel_requested") == 1
    assert detail["events"][2]["status"] == "IN_PROGRESS" and detail["events"][-1]["status"] == "SUCCESS"
    # the owner's audit log entry stays too
    audit = admin.get("/admin/audit", params={"user": user["username"], "kind": "cancel"}).json()
    assert [e["subject"] for e in audit["entries"]] == [succeeded["job_id"]] * 2

    sim.knobs(latency_ms=400, fail_cids={"L3": "customer locked"})
    _, partial = cancel_after_every_batch_was_sent(api, sim)
    assert (partial["status"], partial["failed"], partial["http_status"]) == ("PARTIAL", 1, 200)
    assert partial["error_message"] == "1 of 4 customers failed: customer locked"

    sim.knobs(latency_ms=400, fail_cids={}, failure_rate=1.0)
    _, failed = cancel_after_every_batch_was_sent(api, sim)
    assert (failed["status"], failed["failed"]) == ("FAILED", 4)
    assert failed["error_message"] == "All 4 customers failed: simulated failure"

    # finished: a cancel now is a conflict, as for any finished job
    assert error(api.post(f"/api/jobs/{failed['job_id']}/cancel"), 409)["message"] == \
        "The job is already FAILED; only a queued or running job can be cancelled"
    counts = api.get("/api/stats/mine").json()["counts"]
    assert (counts["SUCCESS"], counts["PARTIAL"], counts["FAILED"], counts["CANCELLED"]) == (1, 1, 1, 0)
    assert admin.get("/admin/jobs/stats/verify").json()["ok"]


def test_a_cancel_before_the_last_batch_still_cancels(make_server, sim):
    server = make_server(BATCH_SIZE=2, BATCH_CONCURRENCY=1, JOB_CONCURRENCY=1)
    api = server.client(server.create_user("early-canceller"))
    sim.knobs(latency_ms=300)
    job = api.start(CIDS)
    while sim.stats()["set_action_calls"] < 1:
        time.sleep(0.01)
    assert api.post(f"/api/jobs/{job['job_id']}/cancel").status_code == 202
    final = api.wait_for(job["job_id"])
    assert (final["status"], final["done"]) == ("CANCELLED", 2)
    assert final["error_message"] == "Cancelled by its owner; 2 customer(s) were not sent"

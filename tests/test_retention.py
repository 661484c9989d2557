"""Retention: old job events and old finished jobs' customer rows go, in chunks, while the jobs,
the figures and the aggregates stay whole. Time is moved by running a pass "days later" against
the live server's database; what users and admins see is then checked through HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.config import ConfigError, load_settings
from server.db import Db
from server.jobs.retention import RetentionTask
from server.timeutil import now_ms
from support import with_db

DAY_MS = 86_400_000


def run_pass(server, days_later: float, **overrides) -> dict:
    settings = server.settings
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    async def run(db: Db) -> dict:
        task = RetentionTask(db, settings)
        for _ in range(100):  # the server's own task may be mid-pass and hold the lease
            result = await task.run_once(now_ms() + int(days_later * DAY_MS))
            if not result["skipped"]:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError("the retention lease never came free")

    return with_db(server, run)


def figures(api) -> dict:
    stats = api.get("/admin/jobs/stats").json()
    stats.pop("as_of")
    return stats


def results(api, job_id: str) -> list[dict]:
    return api.get(f"/admin/jobs/{job_id}/results", params={"limit": 500}).json()["results"]


@pytest.mark.slow  # a pass days later over a 25-customer job and a running one
def test_old_events_and_customers_go_and_the_figures_stay(make_server, sim):
    server = make_server(RETENTION_DAYS=3, EVENT_RETENTION_DAYS=2, RETENTION_CHUNK=10, BATCH_SIZE=5,
                         BATCH_CONCURRENCY=1)
    alice = server.create_user("alice")
    user, admin = server.client(alice), server.client(server.create_user("root-admin", role="admin"))
    sim.knobs(fail_cids={"C3": "customer locked"})
    big = user.start([f"C{i}" for i in range(25)])  # more rows than one delete statement takes
    small = [user.start([f"S{i}", f"T{i}"]) for i in range(3)]
    finished = [user.wait_for(job["job_id"]) for job in [big, *small]]
    sim.knobs(latency_ms=400)  # one batch of five at a time: the job runs for ~5 s unless we speed it up
    running = user.start([f"R{i}" for i in range(60)])
    user.wait_for(running["job_id"], statuses=("IN_PROGRESS",))

    before = figures(admin)
    listed = admin.get("/admin/jobs", params={"limit": 500}).json()["jobs"]
    assert len(results(admin, big["job_id"])) == 25
    events_before = admin.get(f"/admin/jobs/{big['job_id']}").json()["event_count"]
    assert events_before >= 3

    # four days later: events are past their two days, finished jobs' customers past their three
    removed = run_pass(server, 4)
    assert removed["skipped"] is False
    assert removed["jobs"] == 4 and removed["customers"] == 25 + 3 * 2
    assert removed["events"] >= events_before + 3 * 3

    for job in finished:
        detail = admin.get(f"/admin/jobs/{job['job_id']}").json()
        assert detail["customers"] == {"count": job["customer_count"], "by_outcome": {}, "pruned": True}
        assert detail["events"] == [] and detail["event_count"] == 0
        assert detail["job"]["status"] == job["status"] and detail["processing_ms"] == job["duration_ms"]
        page = admin.get(f"/admin/jobs/{job['job_id']}/results").json()
        assert page["results"] == [] and page["pruned"] is True
        assert user.get(f"/api/jobs/{job['job_id']}/customers").json()["customers"] == []
    # the running job keeps its customers (only finished jobs lose them)
    assert len(results(admin, running["job_id"])) == 60
    after = figures(admin)
    assert after["counts"] == before["counts"] and after["daily"] == before["daily"]
    assert after["by_action"] == before["by_action"] and after["p95_duration_ms"] == before["p95_duration_ms"]
    assert [j["job_id"] for j in admin.get("/admin/jobs", params={"limit": 500}).json()["jobs"]] == \
        [j["job_id"] for j in listed]
    assert admin.get("/admin/jobs/stats/verify").json()["ok"]

    # the next pass starts where the last one stopped: nothing left to do
    again = run_pass(server, 4)
    assert (again["jobs"], again["customers"]) == (0, 0)  # (the running job's new events do go)
    # once the running job finishes and ages, it is next, and only it
    sim.knobs(latency_ms=0)
    user.wait_for(running["job_id"])
    later = run_pass(server, 5)
    assert later["jobs"] == 1 and later["customers"] == 60
    assert results(admin, running["job_id"]) == []
    assert admin.get("/admin/jobs/stats/verify").json()["ok"]
    assert figures(admin)["counts"] == {**before["counts"], "IN_PROGRESS": 0,
                                        "SUCCESS": before["counts"]["SUCCESS"] + 1}


def test_zero_days_keeps_customers_and_recent_rows_stay(make_server, sim):
    server = make_server(RETENTION_DAYS=0, EVENT_RETENTION_DAYS=30)
    alice = server.create_user("alice")
    user, admin = server.client(alice), server.client(server.create_user("root-admin", role="admin"))
    job = user.wait_for(user.start(["C1", "C2"])["job_id"])
    # a day later nothing is old enough; years later only events go: 0 days means keep customers
    soon = run_pass(server, 1)
    assert (soon["events"], soon["customers"], soon["jobs"]) == (0, 0, 0)
    far = run_pass(server, 3650)
    assert far["customers"] == 0 and far["events"] >= 3
    assert len(results(admin, job["job_id"])) == 2


def test_the_background_task_runs_and_one_node_prunes_at_a_time(make_server, sim):
    server = make_server(RETENTION_INTERVAL="0.1")
    admin = server.client(server.create_user("root-admin", role="admin"))
    deadline = time.monotonic() + 10
    while (status := admin.get("/admin/retention").json()["retention"])["runs"] < 3:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["last_error"] is None and status["retention_days"] == 90
    assert status["event_retention_days"] == 30 and status["last_run"]["skipped"] in (False, True)

    async def two_nodes(db: Db):
        first, second = RetentionTask(db, server.settings), RetentionTask(db, server.settings)
        # the server's own task may hold the lease for a moment: wait for it
        for _ in range(200):
            if await first._take_lease(now_ms()):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("never got the lease")
        try:
            blocked = await second.run_once()
        finally:
            await first._release()
        return blocked

    assert with_db(server, two_nodes)["skipped"] is True


@pytest.mark.parametrize("name, value", [("RETENTION_DAYS", "-1"), ("RETENTION_DAYS", "ninety"),
                                         ("RETENTION_INTERVAL", "0"), ("RETENTION_CHUNK", "5"),
                                         ("RETENTION_CHUNK", "1000001"), ("EVENT_RETENTION_DAYS", "0")])
def test_bad_retention_settings_stop_start_up(tmp_path, name, value):
    with pytest.raises(ConfigError, match=f"JOBMON_{name}"):
        load_settings({"JOBMON_DATA_DIR": str(tmp_path), f"JOBMON_{name}": value})

"""GET /admin/system: every node reports its own system metrics through the database; an admin
sees them for every node, a node that stops reporting is shown as gone, and is forgotten later."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_client import SioClient
from support import api_error, db_rows, unique

INTERVAL = "0.2"  # seconds between reports: a node is gone after 0.6 s of silence


def wait_until(read, predicate, what: str, timeout: float = 15):
    """Call `read()` until `predicate` holds for its value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value}")
        time.sleep(0.05)


def system(api) -> dict:
    response = api.get("/admin/system")
    assert response.status_code == 200, response.text
    return response.json()


def by_id(answer: dict) -> dict[str, dict]:
    return {node["node_id"]: node for node in answer["nodes"]}


@pytest.mark.slow
@pytest.mark.asyncio
async def test_every_live_node_is_listed_with_its_own_figures(make_server, sim, backend):
    a = make_server(SYSTEM_INTERVAL=INTERVAL)
    b = make_server(SYSTEM_INTERVAL=INTERVAL)
    admin = await asyncio.to_thread(a.create_user, unique("admin"), "admin")
    alice = await asyncio.to_thread(a.create_user, unique("alice"))
    on_a, on_b = a.client(admin), b.client(admin)

    answer = await asyncio.to_thread(wait_until, lambda: system(on_a), lambda x: x["live"] == 2, "two live nodes")
    ids = [node["node_id"] for node in answer["nodes"]]
    mine = by_id(answer)[answer["this_node"]]
    assert mine["this_node"] is True and sum(node["this_node"] for node in answer["nodes"]) == 1
    other_view = await asyncio.to_thread(system, on_b)
    assert other_view["this_node"] in ids and other_view["this_node"] != answer["this_node"]
    for node in answer["nodes"]:
        host, pid, suffix = node["node_id"].rsplit(":", 2)
        assert host == node["host"] and int(pid) == node["pid"] and len(suffix) == 6
        assert node["state"] == "live" and node["interval_seconds"] == 0.2 and node["gone_after_seconds"] == 0.6
        assert node["last_seen"].endswith("Z") and node["started_at"] <= node["last_seen"]
        assert node["rss_bytes"] > 10_000_000
        assert node["sockets"] == 0 and node["jobs_running"] == 0 and node["fanout_queue"] == 0
        assert node["upstream_in_flight"] == 0
        assert node["db_pool_in_use"] >= 0 and node["db_pool_in_use"] + node["db_pool_idle"] >= 1
        assert node["db_pool_max"] == (None if backend == "sqlite" else 20)
    # CPU and loop lag need a full interval: from the second report on
    answer = await asyncio.to_thread(
        wait_until, lambda: system(on_a),
        lambda x: all(n["cpu_percent"] is not None and n["loop_lag_ms"] is not None for n in x["nodes"]),
        "CPU and loop lag figures")
    for node in answer["nodes"]:
        assert node["cpu_percent"] >= 0 and 0 <= node["loop_lag_avg_ms"] <= node["loop_lag_ms"]

    # a socket connected to node b is counted by b, and seen through node a
    token = await asyncio.to_thread(b.create_token, alice, "read")
    client = await SioClient().connect(b.url, token=token)
    try:
        answer = await asyncio.to_thread(
            wait_until, lambda: system(on_a), lambda x: by_id(x)[other_view["this_node"]]["sockets"] == 1,
            "node b's socket")
        assert by_id(answer)[answer["this_node"]]["sockets"] == 0
    finally:
        await client.close()

    # a job waiting on a slow cluster: one node runs it, with its upstream call in flight
    sim.knobs(latency_ms=2000)
    job = await asyncio.to_thread(a.client(alice).start, ["S1"])
    answer = await asyncio.to_thread(
        wait_until, lambda: system(on_a),
        lambda x: [sum(n[k] for n in x["nodes"]) for k in ("jobs_running", "upstream_in_flight")] == [1, 1],
        "the running job and its upstream call")
    runner = next(n for n in answer["nodes"] if n["jobs_running"] == 1)
    assert runner["upstream_in_flight"] == 1
    sim.knobs(latency_ms=0)
    await asyncio.to_thread(a.client(alice).wait_for, job["job_id"])
    await asyncio.to_thread(
        wait_until, lambda: system(on_a),
        lambda x: all(n["jobs_running"] == 0 and n["upstream_in_flight"] == 0 for n in x["nodes"]),
        "no job running after it finished")


def test_a_node_that_stops_reporting_is_shown_gone_and_old_rows_are_pruned(make_server):
    a = make_server(SYSTEM_INTERVAL=INTERVAL)
    b = make_server(SYSTEM_INTERVAL=INTERVAL)
    admin = a.create_user(unique("admin"), "admin")
    on_a, on_b = a.client(admin), b.client(admin)
    b_id = wait_until(lambda: system(on_b), lambda x: x["live"] == 2, "two live nodes")["this_node"]
    b.stop()
    answer = wait_until(lambda: system(on_a), lambda x: by_id(x)[b_id]["state"] == "gone", "node b gone")
    gone = by_id(answer)[b_id]
    assert answer["live"] == 1 and answer["gone"] == 1
    assert answer["nodes"][-1] == gone, "live nodes are listed first"
    assert gone["seconds_since_report"] >= gone["gone_after_seconds"] and gone["last_seen"] < answer["as_of"]
    assert by_id(answer)[answer["this_node"]]["state"] == "live"

    # a node silent for over an hour is pruned by the next report of a live one
    two_hours_ago = int(time.time() * 1000) - 7_200_000
    db_rows(make_server.database_url,
            "INSERT INTO node_reports (node_id, host, pid, started_at, reported_at, interval_ms, sockets, "
            "jobs_running, fanout_queue, upstream_in_flight, db_pool_in_use, db_pool_idle) "
            "VALUES ('old-host:1:abcdef', 'old-host', 1, $1, $1, 5000, 0, 0, 0, 0, 0, 0)", two_hours_ago)
    wait_until(lambda: db_rows(make_server.database_url, "SELECT node_id FROM node_reports ORDER BY node_id"),
               lambda rows: ("old-host:1:abcdef",) not in rows, "the old row pruned")
    assert b_id in by_id(system(on_a)), "a node gone for less than an hour is still listed"


def test_only_admins_acting_as_admins_see_the_nodes(server, admin, alice):
    anonymous = server.client()
    assert api_error(anonymous.get("/admin/system"), 401)["code"] == "unauthorized"
    assert api_error(server.client(alice).get("/admin/system"), 403)["code"] == "forbidden"
    read_token = server.create_token(admin, "read")
    assert api_error(server.client(token=read_token).get("/admin/system"), 403)["code"] == "forbidden"
    as_admin = server.client(admin)
    assert system(as_admin)["live"] >= 1
    assert system(server.client(token=server.create_token(admin, "admin")))["live"] >= 1
    for query in ("limit=1", "node=%3Cscript%3E", "x" * 300 + "=1"):
        error = api_error(as_admin.get(f"/admin/system?{query}"), 400)
        assert error["code"] == "validation_error" and error["details"]["field"] == query.split("=")[0][:40]
    assert api_error(as_admin.post("/admin/system", json={}), 405)["code"] == "method_not_allowed"


@pytest.mark.asyncio
async def test_the_loop_lag_sampler_sees_a_blocked_loop_and_the_cpu_meter_a_busy_one():
    from server.system.process import CpuMeter, LoopLagSampler

    sampler = LoopLagSampler(sample_seconds=0.02)
    assert sampler.take() == (None, None)
    await sampler.start()
    try:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # holds the loop: the sampler's wake-up comes at least this late
        meter = CpuMeter()
        busy_until = time.monotonic() + 0.2
        while time.monotonic() < busy_until:
            pass
        busy = meter.percent()
        time.sleep(0.2)
        assert busy > 0 and meter.percent() < busy, "a busy loop uses more CPU than a sleep"
        await asyncio.sleep(0.05)
        worst, mean = sampler.take()
        assert worst >= 250 and 0 < mean <= worst
        await asyncio.sleep(0.1)
        worst, _ = sampler.take()
        assert worst < 250, "taken figures start over"
    finally:
        await sampler.stop()

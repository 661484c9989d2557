"""The admin API through HTTP: every filter and sort of the job list, cursors, CSV, stats against
a recount, job details and results, the audit log, users, refusals and bad parameters."""

from __future__ import annotations

import csv
import io
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

import server.admin.queries as admin_module
from server.api import admin as admin_routes
from server.stats.aggregates import AdminStats
from server.db import Db
from server.timeutil import now_ms
from support import BACKENDS, LiveServer, database_url, server_settings
from support import api_error as error
from support import with_db

STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCESS", "FAILED", "PARTIAL", "CANCELLED")
FINAL = ("SUCCESS", "FAILED", "PARTIAL", "CANCELLED")
SORT_KEYS = {
    "created_at": lambda j: (j["created_at"], j["job_id"]),
    "updated_at": lambda j: (j["updated_at"], j["job_id"]),
    "finished_at": lambda j: (j["finished_at"], j["job_id"]),
    "duration": lambda j: (j["duration_ms"], j["job_id"]),
    "status": lambda j: (j["status"], j["created_at"], j["job_id"]),
}


def ms(stamp: str) -> int:
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def stamp(value: int) -> str:
    moment = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}Z"


def expected_order(jobs: list[dict], sort: str, order: str) -> list[str]:
    """The documented order: by the sort key then job_id; jobs without the key last, by job_id."""
    key = SORT_KEYS[sort]
    descending = order == "desc"
    present = sorted((j for j in jobs if key(j)[0] is not None), key=key, reverse=descending)
    missing = sorted((j for j in jobs if key(j)[0] is None), key=lambda j: j["job_id"], reverse=descending)
    return [j["job_id"] for j in present + missing]


def walk(api, path: str = "/admin/jobs", **params) -> list[dict]:
    """Every page of a list, following next_cursor; checks each page's size."""
    jobs, cursor = [], None
    limit = params.get("limit", 50)
    while True:
        response = api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["jobs"]) <= limit
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs
        assert len(page["jobs"]) == limit  # a page short of the limit is the last one


def populate(server, sim, sim2) -> dict:
    """Jobs of two users on two clusters with every final status; returns the people and the jobs."""
    sim.reset()
    sim2.reset()
    alice, bob = server.create_user("alice"), server.create_user("bob")
    admin = server.create_user("root-admin", role="admin")
    a, b = server.client(alice), server.client(bob)
    formula = "=HYPERLINK(\"http://x\")"
    # failing CIDs that are not hexadecimal: a text search for them cannot match the start of a job id
    sim.knobs(fail_cids={"BADX1": "customer locked", "BADX2": "customer locked", "EVIL": formula})
    sim2.knobs(fail_cids={"BADX1": "Customer LOCKED upstream", "BADX2": "Customer LOCKED upstream"})
    started = [
        a.start(["A1", "A2"], action="PE-Enable"),
        a.start(["BADX1", "A3"], action="T-Enable"),
        a.start(["BADX1", "BADX2"], action="Trans-Begin", cluster="sim2"),
        b.start(["B1"], action="PE-Direct"),
        b.start(["UNIQUE-CID-7"], action="PE-Finalize", cluster="sim2"),
        a.start(["EVIL"], action="PE-Direct"),
    ]
    started += [a.start([f"D{i}", f"E{i}"], action="PE-Direct") for i in range(6)]
    for job in started:
        (a if job["user_id"] == alice["id"] else b).wait_for(job["job_id"])
    sim.knobs(latency_ms=400)
    cancelled = b.start([f"K{i}" for i in range(3)], action="PE-Enable")
    assert b.post(f"/api/jobs/{cancelled['job_id']}/cancel").status_code == 202
    assert b.wait_for(cancelled["job_id"])["status"] == "CANCELLED"
    sim.knobs(latency_ms=0)
    started.append(cancelled)
    return {"server": server, "alice": alice, "bob": bob, "admin": admin, "jobs": started, "formula": formula}


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory, simulator_session, simulator2_session):
    """One server with a populated database per backend, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("admin")
    url, database = database_url(request.param, tmp)
    settings = server_settings(tmp, url, {"sim": simulator_session.url, "sim2": simulator2_session.url})
    # one customer per batch, one batch at a time: the cancelled job still has unsent customers when
    # its cancel arrives (a cancel after the last batch was sent lets a job finish as its answers say)
    settings.update(JOBMON_BATCH_SIZE="1", JOBMON_BATCH_CONCURRENCY="1")
    server = LiveServer(settings)
    try:
        yield populate(server, simulator_session, simulator2_session)
    finally:
        server.stop()
        simulator_session.reset()
        simulator2_session.reset()
        if database is not None:
            database.drop()


ADMIN_PATHS = [("GET", "/admin/jobs"), ("GET", "/admin/jobs?sort=bogus"), ("GET", "/admin/jobs.csv"),
               ("GET", "/admin/jobs?format=csv"), ("GET", "/admin/jobs/stats"), ("GET", "/admin/jobs/stats/verify"),
               ("GET", "/admin/jobs/{job_id}"), ("GET", "/admin/jobs/{job_id}/results"),
               ("GET", "/admin/jobs/not-a-uuid"), ("GET", "/admin/audit"), ("GET", "/admin/users"),
               ("POST", "/admin/users"), ("GET", "/admin/retention")]


def test_the_refusal_cases_cover_every_admin_route():
    served = {route.path for route in admin_routes.routes()}
    assert served <= {path.split("?")[0].replace("not-a-uuid", "{job_id}") for _, path in ADMIN_PATHS}


@pytest.fixture(scope="module")
def credentials(world) -> dict:
    """Clients of the world's server by credential: those an admin path refuses, and an admin token."""
    server, alice, admin = world["server"], world["alice"], world["admin"]
    return {
        "refused": {
            "user session": server.client(alice),
            "user write token": server.client(token=server.create_token(alice, "write")),
            "admin read token": server.client(token=server.create_token(admin, "read")),
            "admin write token": server.client(token=server.create_token(admin, "write")),
        },
        "admin token": server.client(token=server.create_token(admin, "admin")),
    }


@pytest.mark.parametrize("method, path", ADMIN_PATHS)
def test_an_admin_path_refuses_non_admins(world, credentials, method, path):
    server = world["server"]
    path = path.format(job_id=world["jobs"][0]["job_id"])
    body = {"json": {"username": "mallory", "password": "correct-horse"}} if method == "POST" else {}
    for who, api in credentials["refused"].items():
        error(api.http.request(method, path, **body), 403)
    error(server.client().http.request(method, path, **body), 401)
    if method == "GET" and "bogus" not in path and "not-a-uuid" not in path:
        assert credentials["admin token"].get(path).status_code == 200, path


def test_an_admins_session_writes_only_with_its_csrf_token(world, credentials):
    server, admin = world["server"], world["admin"]
    allowed = credentials["admin token"]
    session = server.client(admin)
    del session.http.headers["X-CSRF-Token"]
    assert error(session.post("/admin/users", json={"username": "eve", "password": "correct-horse"}),
                 403)["code"] == "csrf_failed"
    assert allowed.get("/admin/users").json()["users"] == session.get("/admin/users").json()["users"]


def test_every_filter_and_sort(world, monkeypatch):
    api = world["server"].client(world["admin"])
    truth = walk(api, limit=500)
    assert sorted(j["job_id"] for j in truth) == sorted(j["job_id"] for j in world["jobs"])
    assert {j["status"] for j in truth} == {"SUCCESS", "PARTIAL", "FAILED", "CANCELLED"}
    owners = {world["alice"]["id"]: "alice", world["bob"]["id"]: "bob"}
    assert all(j["username"] == owners[j["user_id"]] for j in truth)
    alice_id = world["alice"]["id"]
    middle = sorted(truth, key=lambda j: j["created_at"])[len(truth) // 2]
    t = ms(middle["created_at"])
    today = datetime.now(timezone.utc).date()

    cases = [
        ({}, lambda j: True),
        ({"status": "FAILED"}, lambda j: j["status"] == "FAILED"),
        ({"status": "partial,failed,cancelled"}, lambda j: j["status"] in ("PARTIAL", "FAILED", "CANCELLED")),
        ({"status": "QUEUED,IN_PROGRESS"}, lambda j: False),
        ({"user": "alice"}, lambda j: j["user_id"] == alice_id),
        ({"user": str(alice_id)}, lambda j: j["user_id"] == alice_id),
        ({"user": "bob", "status": "SUCCESS,CANCELLED"},
         lambda j: j["user_id"] != alice_id and j["status"] in ("SUCCESS", "CANCELLED")),
        ({"action": "tran-begin"}, lambda j: j["action_name"] == "Trans-Begin"),
        ({"action": "PE-DIRECT", "user": "alice"}, lambda j: j["action_name"] == "PE-Direct" and j["user_id"] == alice_id),
        ({"cluster": "sim2"}, lambda j: j["cluster"] == "sim2"),
        ({"cluster": "nowhere"}, lambda j: False),
        ({"text": middle["job_id"][:8]}, lambda j: j["job_id"] == middle["job_id"]),
        ({"text": middle["job_id"][:13].upper()}, lambda j: j["job_id"] == middle["job_id"]),
        ({"text": middle["job_id"]}, lambda j: j["job_id"] == middle["job_id"]),
        ({"text": "UNIQUE-CID-7"}, lambda j: j["cluster"] == "sim2" and j["action_name"] == "PE-Finalize"),
        ({"text": "BADX1"}, lambda j: j["action_name"] in ("T-Enable", "Trans-Begin")),
        ({"text": "BADX1", "status": "FAILED"}, lambda j: j["action_name"] == "Trans-Begin"),
        ({"text": "locked"}, lambda j: j["status"] in ("FAILED", "PARTIAL") and "locked" in j["error_message"].lower()),
        ({"text": "LOCKED UP"}, lambda j: j["cluster"] == "sim2" and j["status"] == "FAILED"),
        ({"text": "%"}, lambda j: False),
        ({"text": "_"}, lambda j: False),
        ({"created_from": stamp(t)}, lambda j: ms(j["created_at"]) >= t),
        ({"created_from": stamp(t + 1)}, lambda j: ms(j["created_at"]) > t),
        ({"created_to": stamp(t)}, lambda j: ms(j["created_at"]) <= t),
        ({"created_to": stamp(t - 1)}, lambda j: ms(j["created_at"]) < t),
        ({"created_from": stamp(t), "created_to": stamp(t)}, lambda j: ms(j["created_at"]) == t),
        # the same moment written with an offset
        ({"created_from": (datetime.fromtimestamp(t / 1000, tz=timezone(timedelta(hours=2)))).isoformat(
            timespec="milliseconds")}, lambda j: ms(j["created_at"]) >= t),
        ({"created_from": today.isoformat()}, lambda j: True),
        ({"created_to": today.isoformat()}, lambda j: True),  # a bare date as an upper bound: the whole day
        ({"created_to": (today - timedelta(days=1)).isoformat()}, lambda j: False),
        ({"finished_from": stamp(ms(middle["finished_at"]))},
         lambda j: ms(j["finished_at"]) >= ms(middle["finished_at"])),
        ({"finished_to": stamp(ms(middle["finished_at"]) - 1), "user": "alice"},
         lambda j: ms(j["finished_at"]) < ms(middle["finished_at"]) and j["user_id"] == alice_id),
        ({"created_from": stamp(t), "status": "SUCCESS", "user": "alice"},
         lambda j: ms(j["created_at"]) >= t and j["status"] == "SUCCESS" and j["user_id"] == alice_id),
    ]
    orders = [(sort, order) for sort in SORT_KEYS for order in ("desc", "asc")]
    checked = set()
    for index, (params, keep) in enumerate(cases):
        chosen = [j for j in truth if keep(j)]
        # every sort and order for the first few filters; for the others, the default and two more in turn
        combos = orders if index < 4 else [("created_at", "desc"), orders[index % 10], orders[(index + 5) % 10]]
        for sort, order in combos:
            got = walk(api, limit=4, sort=sort, order=order, **params)
            assert [j["job_id"] for j in got] == expected_order(chosen, sort, order), (params, sort, order)
            checked.add((sort, order))
    assert checked == set(orders)

    # whatever index a page is read through, the answer is the same (each plan forced in turn)
    real_plan = admin_module.plan_arm
    for hide in [frozenset(), {"status"}, {"user_id"}, {"created_at"}, {"finished_at", "duration_ms"},
                 {"status", "user_id", "created_at", "updated_at", "finished_at", "duration_ms"}]:
        monkeypatch.setattr(admin_module, "plan_arm", lambda *args, hide=hide: admin_module.Plan(frozenset(hide), "t"))
        for index, (params, keep) in enumerate(cases[1:12]):
            chosen = [j for j in truth if keep(j)]
            sort, order = (("duration", "asc"), ("status", "desc"), ("updated_at", "desc"))[index % 3]
            got = walk(api, limit=4, sort=sort, order=order, **params)
            assert [j["job_id"] for j in got] == expected_order(chosen, sort, order), (hide, params, sort)
    monkeypatch.setattr(admin_module, "plan_arm", real_plan)


@pytest.mark.slow  # pages read while jobs run and arrive, on a cluster slowed down
def test_cursor_pages_have_no_duplicates_or_gaps_while_jobs_arrive(make_server, sim):
    server = make_server(BATCH_SIZE=1, BATCH_CONCURRENCY=1)
    alice, admin = server.create_user("alice"), server.create_user("root-admin", role="admin")
    user, api = server.client(alice), server.client(admin)
    sim.knobs(fail_cids={"F0": "nope"})
    before = [user.start([f"F{i % 2}", f"C{i}"], action="PE-Enable") for i in range(11)]
    for job in before:
        user.wait_for(job["job_id"])
    # two jobs still running while we page: no finish time, no duration yet
    sim.knobs(latency_ms=150)
    running = [user.start([f"R{i}-{n}" for n in range(60)]) for i in range(2)]
    user.wait_for(running[0]["job_id"], statuses=("IN_PROGRESS",))
    original = {j["job_id"] for j in before + running}
    arrived = []
    for sort, order in (("created_at", "desc"), ("created_at", "asc"), ("duration", "desc"),
                        ("finished_at", "asc"), ("status", "asc")):
        seen, cursor = [], None
        while True:
            params = {"limit": 3, "sort": sort, "order": order, **({"cursor": cursor} if cursor else {})}
            page = api.get("/admin/jobs", params=params).json()
            seen += [j["job_id"] for j in page["jobs"]]
            arrived.append(user.start([f"N{len(arrived)}"]))  # a new job between every two pages
            cursor = page["next_cursor"]
            if cursor is None:
                break
        mine = [job_id for job_id in seen if job_id in original]
        assert len(mine) == len(set(mine)) == len(original), (sort, order)  # no duplicates, no gaps
        if sort == "created_at":
            assert len(seen) == len(set(seen))  # an order no change can move
        if (sort, order) == ("created_at", "desc"):
            assert set(seen) == original  # newer jobs land before the first page, never in a later one
        if sort == "duration":
            assert set(seen[-2:]) <= {r["job_id"] for r in running} | {a["job_id"] for a in arrived}
    for job in running:
        user.post(f"/api/jobs/{job['job_id']}/cancel")
    sim.knobs(latency_ms=0)
    for job in running + arrived:
        user.wait_for(job["job_id"])


def test_stats_equal_a_recount_after_a_random_mix_of_jobs(make_server, sim, sim2):
    server = make_server(BATCH_SIZE=2, BATCH_CONCURRENCY=2)
    users = [server.create_user(name) for name in ("alice", "bob", "carol")]
    admin = server.client(server.create_user("root-admin", role="admin"))
    apis = [server.client(u) for u in users]
    rng = random.Random(6)
    sim.knobs(failure_rate=0.25, fail_cids={"X1": "customer locked"})
    sim2.knobs(failure_rate=0.1, latency_ms=30)
    started = []
    for i in range(18):
        api = rng.choice(apis)
        cids = [f"C{i}-{n}" for n in range(rng.randint(1, 6))] + (["X1"] if rng.random() < 0.3 else [])
        job = api.start(cids, action=rng.choice(["PE-Enable", "T-Enable", "PE-Direct", "Trans-Begin"]),
                        cluster=rng.choice(["sim", "sim2"]))
        started.append((api, job))
        if rng.random() < 0.25:
            api.post(f"/api/jobs/{job['job_id']}/cancel")
        if i == 9:
            sim.knobs(set_action_status=503)  # whole batches fail for a while
        if i == 12:
            sim.knobs(set_action_status=None)
    finals = [api.wait_for(job["job_id"]) for api, job in started]
    failed = [(api, job) for (api, job), final in zip(started, finals) if final["status"] in ("FAILED", "PARTIAL")]
    retried = [api.post(f"/api/jobs/{job['job_id']}/retry") for api, job in failed[:3]]
    assert all(answer.status_code == 202 for answer in retried)
    jobs = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        jobs = walk(admin, limit=500)
        if all(j["status"] in FINAL for j in jobs):
            break
        time.sleep(0.1)
    assert len(jobs) == 18 + len(retried) and len({j["status"] for j in jobs}) >= 3

    check = admin.get("/admin/jobs/stats/verify").json()
    assert check["ok"] and check["differences"] == [] and check["checked"]["jobs"] == len(jobs), check

    stats = admin.get("/admin/jobs/stats").json()
    by_status = {s: sum(1 for j in jobs if j["status"] == s) for s in STATUSES}
    assert stats["counts"] == by_status and stats["total"] == len(jobs)
    assert stats["running"] == 0 and stats["queued"] == 0
    finished = by_status["SUCCESS"] + by_status["FAILED"] + by_status["PARTIAL"]
    assert stats["success_rate"] == round(100 * by_status["SUCCESS"] / finished, 1)
    today = datetime.now(timezone.utc).date().isoformat()
    assert stats["today"]["day"] == today and stats["today"]["created"] == len(jobs)
    assert [d["day"] for d in stats["daily"]][-1] == today and len(stats["daily"]) == 7
    assert all(d["created"] == 0 for d in stats["daily"][:-1])  # zero-filled
    durations = sorted(j["duration_ms"] for j in jobs)
    assert stats["avg_duration_ms"] == round(sum(durations) / len(durations))
    true_p95 = durations[max(0, -(-95 * len(durations) // 100) - 1)]
    assert stats["p95_duration_ms"] is not None and abs(stats["p95_duration_ms"] - true_p95) <= 0.2 * true_p95 + 2
    for group, field in (("by_action", "action_name"), ("by_cluster", "cluster")):
        for row in stats[group]:
            mine = [j for j in jobs if j[field] == row[field]]
            assert row["created"] == len(mine), (group, row)
            for status in FINAL:
                assert row[status.lower()] == sum(1 for j in mine if j["status"] == status)
            assert row["avg_duration_ms"] == round(sum(j["duration_ms"] for j in mine) / len(mine))
        assert sum(r["created"] for r in stats[group]) == len(jobs)
    assert error(admin.get("/admin/jobs/stats", params={"days": "0"}), 400)["details"]["field"] == "days"
    assert admin.get("/admin/jobs/stats", params={"days": "90"}).json()["window_days"] == 90

    # three days on, today is a closed day: its sums are read once and kept, and stay the same
    async def three_days_later(db: Db):
        reader, later = AdminStats(db), now_ms() + 3 * 86_400_000
        first = await reader.figures(7, now=later)
        assert reader._closed and today in reader._closed
        return first, await reader.figures(7, now=later)

    first, kept = with_db(server, three_days_later)
    assert first["daily"][-4] == {"day": today, **{k: v for k, v in stats["today"].items() if k != "day"}}
    assert first["by_action"] == stats["by_action"] and first["p95_duration_ms"] == stats["p95_duration_ms"]
    first.pop("as_of"), kept.pop("as_of")
    assert first == kept and first["today"]["created"] == 0

    # the recount notices an aggregate that went wrong, and names it
    async def corrupt(db: Db):
        row = await db.fetch_one("SELECT user_id, status FROM job_counts WHERE n > 0 ORDER BY user_id, status")
        await db.execute("UPDATE job_counts SET n = n + 1 WHERE user_id = :u AND status = :s",
                         {"u": row[0], "s": row[1]})
        await db.execute("DELETE FROM duration_histogram WHERE bucket = (SELECT MAX(bucket) FROM duration_histogram)")
        return {"user_id": row[0], "status": row[1]}

    key = with_db(server, corrupt)
    check = admin.get("/admin/jobs/stats/verify").json()
    assert not check["ok"] and check["difference_count"] >= 2
    wrong = {d["table"]: d for d in check["differences"]}
    assert wrong["job_counts"]["key"] == key
    assert wrong["job_counts"]["stored"] == wrong["job_counts"]["recounted"] + 1
    assert wrong["duration_histogram"]["stored"] is None and wrong["duration_histogram"]["recounted"] >= 1


def test_job_details_and_results(world, simulator_session):
    server = world["server"]
    api = server.client(world["admin"])
    partial = next(j for j in walk(api, limit=500) if j["status"] == "PARTIAL")
    detail = api.get(f"/admin/jobs/{partial['job_id']}").json()
    assert detail["owner"] == {"id": world["alice"]["id"], "username": "alice", "role": "user"}
    assert detail["job"]["username"] == "alice" and detail["job"]["job_id"] == partial["job_id"]
    assert detail["processing_ms"] == partial["duration_ms"] and detail["finished"] is True
    assert detail["attempts"] == 1 and detail["queued_ms"] >= 0
    assert detail["customers"] == {"count": 2, "by_outcome": {"FAILED": 1, "SUCCESS": 1}, "pruned": False}
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[0] == "created" and kinds[-1] == "status" and detail["event_count"] == len(kinds)
    assert [e["status"] for e in detail["events"]][0] == "QUEUED" and detail["events"][-1]["status"] == "PARTIAL"
    ids = [e["event_id"] for e in detail["events"]]
    assert ids == sorted(ids) and not detail["events_truncated"]
    short = api.get(f"/admin/jobs/{partial['job_id']}", params={"events_limit": 1}).json()
    assert short["events"] == detail["events"][-1:] and short["events_truncated"]

    # results of a bigger job, page by page and by outcome
    user = server.client(world["alice"])
    simulator_session.knobs(fail_cids={"BAD1": "customer locked", "BAD2": "customer locked"})
    cids = [f"R{i:02d}" for i in range(9)] + ["BAD1", "BAD2"]
    job = user.wait_for(user.start(cids)["job_id"])
    results, cursor = [], None
    while True:
        page = api.get(f"/admin/jobs/{job['job_id']}/results",
                       params={"limit": 4, **({"cursor": cursor} if cursor else {})}).json()
        if cursor is None:
            assert page["by_outcome"] == {"SUCCESS": 9, "FAILED": 2} and page["pruned"] is False
        results += page["results"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["cid"] for r in results] == cids and [r["seq"] for r in results] == list(range(11))
    failed = api.get(f"/admin/jobs/{job['job_id']}/results", params={"outcome": "failed", "limit": 1}).json()
    assert [r["cid"] for r in failed["results"]] == ["BAD1"]
    assert failed["results"][0]["error_message"] == "customer locked"
    rest = api.get(f"/admin/jobs/{job['job_id']}/results",
                   params={"outcome": "FAILED", "cursor": failed["next_cursor"]}).json()
    assert [r["cid"] for r in rest["results"]] == ["BAD2"] and rest["next_cursor"] is None
    # a cursor of one filter or job does not fit another
    error(api.get(f"/admin/jobs/{job['job_id']}/results", params={"cursor": failed["next_cursor"]}), 400)
    error(api.get(f"/admin/jobs/{partial['job_id']}/results",
                  params={"outcome": "FAILED", "cursor": failed["next_cursor"]}), 400)
    assert api.get(f"/admin/jobs/{job['job_id']}/results", params={"outcome": "SKIPPED"}).json()["results"] == []
    missing = "00000000-0000-4000-8000-000000000000"
    assert error(api.get(f"/admin/jobs/{missing}"), 404)["code"] == "not_found"
    error(api.get(f"/admin/jobs/{missing}/results"), 404)
    assert error(api.get("/admin/jobs/12345"), 400)["details"]["field"] == "job_id"
    assert error(api.get("/admin/jobs/x' OR 1=1 --/results"), 400)["details"]["field"] == "job_id"


def test_csv_export_streams_the_filtered_list(world):
    api = world["server"].client(world["admin"])
    listed = walk(api, limit=500, status="SUCCESS,FAILED,PARTIAL", sort="duration", order="asc")
    for response in (api.get("/admin/jobs.csv", params={"status": "SUCCESS,FAILED,PARTIAL", "sort": "duration",
                                                        "order": "asc"}),
                     api.get("/admin/jobs", params={"status": "SUCCESS,FAILED,PARTIAL", "sort": "duration",
                                                    "order": "asc", "format": "csv"})):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith("attachment; filename=\"jobs-")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["job_id"] for r in rows] == [j["job_id"] for j in listed]
        by_id = {j["job_id"]: j for j in listed}
        for row in rows:
            job = by_id[row["job_id"]]
            assert row["username"] == job["username"] and row["status"] == job["status"]
            assert row["duration_ms"] == str(job["duration_ms"]) and row["created_at"] == job["created_at"]
        evil = next(r for r in rows if "HYPERLINK" in r["error_message"])
        # a spreadsheet reads the cell as text, not as a formula
        assert evil["error_message"].startswith("'=") or not evil["error_message"].startswith(("=", "+", "-", "@"))
    everything = api.get("/admin/jobs.csv").text.strip().splitlines()
    assert len(everything) == 1 + len(walk(api, limit=500))
    empty = api.get("/admin/jobs.csv", params={"cluster": "nowhere"}).text.strip().splitlines()
    assert len(empty) == 1 and empty[0].startswith("job_id,username")
    assert error(api.get("/admin/jobs.csv", params={"limit": "5"}), 400)["details"]["field"] == "limit"


@pytest.mark.parametrize("path, params, field", [
    ("/admin/jobs", {"sort": "bogus"}, "sort"),
    ("/admin/jobs", {"sort": "created_at; DROP TABLE jobs"}, "sort"),
    ("/admin/jobs", {"order": "sideways"}, "order"),
    ("/admin/jobs", {"limit": "501"}, "limit"),
    ("/admin/jobs", {"limit": str(10 ** 30)}, "limit"),
    ("/admin/jobs", {"limit": "0"}, "limit"),
    ("/admin/jobs", {"limit": "ten"}, "limit"),
    ("/admin/jobs", {"created_from": "yesterday"}, "created_from"),
    ("/admin/jobs", {"created_to": "2026-13-01"}, "created_to"),
    ("/admin/jobs", {"finished_from": "2026-02-30T10:00:00Z"}, "finished_from"),
    ("/admin/jobs", {"finished_to": "1" * 41}, "finished_to"),
    ("/admin/jobs", {"created_from": "2026-03-02", "created_to": "2026-03-01"}, "created_to"),
    ("/admin/jobs", {"status": "DONE"}, "status"),
    ("/admin/jobs", {"status": "SUCCESS,nope"}, "status"),
    ("/admin/jobs", {"action": "fly"}, "action"),
    ("/admin/jobs", {"user": "nobody"}, "user"),
    ("/admin/jobs", {"user": "99999"}, "user"),
    ("/admin/jobs", {"cluster": "bad cluster!"}, "cluster"),
    ("/admin/jobs", {"text": "x" * 201}, "text"),
    ("/admin/jobs", {"cursor": "garbage"}, "cursor"),
    ("/admin/jobs", {"cursor": "e30.e30"}, "cursor"),
    ("/admin/jobs", {"cursor": "<tampered cursor>"}, "cursor"),
    ("/admin/jobs", {"cursor": "<cut cursor>"}, "cursor"),
    ("/admin/jobs", {"cursor": "<cursor>", "sort": "updated_at"}, "cursor"),
    ("/admin/jobs", {"cursor": "<cursor>", "order": "asc"}, "cursor"),
    ("/admin/jobs", {"cursor": "x" * 3000}, "cursor"),
    ("/admin/jobs", {"format": "xml"}, "format"),
    ("/admin/jobs", {"sort_by": "created_at"}, "sort_by"),
    ("/admin/jobs.csv", {"cursor": "<cursor>"}, "cursor"),
    ("/admin/jobs/stats", {"days": "91"}, "days"),
    ("/admin/jobs/stats", {"window": "7"}, "window"),
    ("/admin/jobs/<job>", {"events_limit": "5000"}, "events_limit"),
    ("/admin/jobs/<job>/results", {"outcome": "WHATEVER"}, "outcome"),
    ("/admin/jobs/<job>/results", {"outcome": "FAILED,SUCCESS"}, "outcome"),
    ("/admin/jobs/<job>/results", {"limit": "100000"}, "limit"),
    ("/admin/jobs/<job>/results", {"cursor": "<cursor>"}, "cursor"),
    ("/admin/audit", {"kind": "Login!"}, "kind"),
    ("/admin/audit", {"from": "tomorrow"}, "from"),
    ("/admin/audit", {"from": "2026-03-02", "to": "2026-03-01"}, "to"),
    ("/admin/audit", {"user": "424242"}, "user"),
    ("/admin/audit", {"cursor": "<cursor>"}, "cursor"),
])
def test_bad_parameters_are_400_naming_the_parameter(world, path, params, field):
    api = world["server"].client(world["admin"])
    cursor = api.get("/admin/jobs", params={"limit": 2}).json()["next_cursor"]
    body, _, mac = cursor.partition(".")
    made = {"<cursor>": cursor, "<cut cursor>": cursor[:-3],
            "<tampered cursor>": body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac}
    path = path.replace("<job>", world["jobs"][0]["job_id"])
    params = {name: made.get(value, value) for name, value in params.items()}
    answer = error(api.get(path, params=params), 400)
    assert answer["details"]["field"] == field, (path, params, answer)


def test_an_untouched_cursor_works(world):
    api = world["server"].client(world["admin"])
    cursor = api.get("/admin/jobs", params={"limit": 2}).json()["next_cursor"]
    assert api.get("/admin/jobs", params={"cursor": cursor}).status_code == 200


@pytest.mark.parametrize("payload, field", [
    ({"username": "x y", "password": "correct-horse"}, "username"),
    ({"username": "eve", "password": "short"}, "password"),
    ({"username": "eve", "password": "correct-horse", "role": "root"}, "role"),
    ({"username": "eve", "password": "correct-horse", "is_admin": True}, "is_admin"),
])
def test_a_wrong_new_user_is_400_naming_the_field(world, payload, field):
    api = world["server"].client(world["admin"])
    assert error(api.post("/admin/users", json=payload), 400)["details"]["field"] == field


def test_hostile_new_user_bodies(world):
    api = world["server"].client(world["admin"])
    error(api.post("/admin/users", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    error(api.post("/admin/users", content=b"x" * 20000, headers={"content-type": "application/json"}), 413)


def test_audit_log_filters_and_pages(world):
    server = world["server"]
    admin = server.client(world["admin"])
    alice = server.client(world["alice"])  # a login
    assert server.client().login("alice", "wrong-password").status_code == 401
    assert server.client().login("ghost", "wrong-password").status_code == 401
    job = alice.start(["A9"])
    alice.wait_for(job["job_id"])
    token = alice.post("/api/tokens", json={"name": "wallboard", "scope": "read"}).json()["token"]
    alice.delete(f"/api/tokens/{token['id']}")
    created = admin.post("/admin/users", json={"username": "dave", "password": "correct-horse"})
    assert created.status_code == 201 and created.json()["user"]["role"] == "user"
    assert server.client().login("dave", "correct-horse").status_code == 200
    assert error(admin.post("/admin/users", json={"username": "dave", "password": "correct-horse"}), 409)

    entries = admin.get("/admin/audit", params={"limit": 500}).json()["entries"]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    kinds = {e["kind"] for e in entries}
    assert {"login", "login_failed", "set_action", "cancel", "token_created", "token_revoked",
            "user_created"} <= kinds
    mine = admin.get("/admin/audit", params={"user": "alice", "limit": 500}).json()["entries"]
    assert mine and {e["username"] for e in mine} == {"alice"}
    assert {"login", "login_failed", "set_action", "token_created", "token_revoked"} <= {e["kind"] for e in mine}
    by_id = admin.get("/admin/audit", params={"user": str(world["alice"]["id"]), "limit": 500}).json()["entries"]
    assert by_id == mine
    ghost = admin.get("/admin/audit", params={"user": "ghost"}).json()["entries"]
    assert [e["kind"] for e in ghost] == ["login_failed"]
    logins = admin.get("/admin/audit", params={"kind": "login,login_failed", "limit": 500}).json()["entries"]
    assert logins == [e for e in entries if e["kind"] in ("login", "login_failed")]
    token_entry = next(e for e in entries if e["kind"] == "token_created")
    assert token_entry["detail"] == {"name": "wallboard", "scope": "read"}
    # keyset pages: no duplicates, no gaps, newest first
    walked, cursor = [], None
    while True:
        page = admin.get("/admin/audit", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        walked += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in walked] == [e["id"] for e in admin.get("/admin/audit", params={"limit": 500})
                                         .json()["entries"]]
    at = entries[len(entries) // 2]["at"]
    window = admin.get("/admin/audit", params={"from": at, "to": at, "limit": 500}).json()["entries"]
    assert window and all(e["at"] == at for e in window)
    tomorrow = (datetime.now(timezone.utc).date() + timedelta(days=1)).isoformat()
    assert admin.get("/admin/audit", params={"from": tomorrow}).json()["entries"] == []
    users = admin.get("/admin/users").json()["users"]
    alice_row = next(u for u in users if u["username"] == "alice")
    assert alice_row["job_total"] == len(walk(admin, limit=500, user="alice")) >= 2
    assert {u["username"] for u in users} >= {"alice", "bob", "root-admin", "dave"}

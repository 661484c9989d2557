"""Pipeline jobs reported by CI/CD agents, through the REST API on both backends: the life of a job,
hostile input, another user's ids, every illegal transition, idempotent retries, concurrent
reports, lists, the summary's job figures, timeouts, and which credentials may report."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from pipelines_client import BUILD, JOBS, agent, events, patch, report, stored_jobs
from support import api_error as error
from support import async_http_client, db_rows, unique

FINAL = ("success", "failed", "cancelled", "timeout", "error")


def finished_as(api, status: str) -> dict:
    """A new job that ended with this final status."""
    job = report(api)
    path = f"{JOBS}/{job['job_id']}"
    assert patch(api, path, {"status": "running"}).status_code == 200
    if status == "cancelled":
        response = patch(api, path, {"status": "cancelled"})
    else:
        body = {"exit_code": 0} if status == "success" else {"exit_code": 1} if status == "failed" else {
            "status": status}
        response = patch(api, path + "/complete", body)
    assert response.status_code == 200 and response.json()["job"]["status"] == status, response.text
    return response.json()["job"]


# -- a job's life ------------------------------------------------------------------------------
def test_an_agent_reports_a_job_from_creation_to_success(server, alice):
    api = agent(server, alice)
    job = report(api, {"ref": "main", "commit_sha": "a1b2c3d", "commit_message": "Fix the build\n\nfor real",
                       "commit_author": "Ann <ann@example.com>", "tags": ["linux", "py3.11"],
                       "metadata": {"runner": {"cpu": 4}, "flaky": False, "retries": 0}})
    assert uuid.UUID(job["job_id"]).version == 7  # time-ordered (server/ids.py)
    assert job["status"] == "pending" and job["user_id"] == alice["id"]
    assert (job["tags"], job["metadata"]) == (["linux", "py3.11"], {"runner": {"cpu": 4}, "flaky": False, "retries": 0})
    assert job["commit_message"] == "Fix the build\n\nfor real"
    assert all(job[k] is None for k in ("exit_code", "duration_seconds", "logs_url", "error_message", "started_at",
                                        "finished_at", "heartbeat_at", "idempotency_key"))
    assert job["created_at"].endswith("Z") and job["updated_at"] == job["created_at"]
    path = f"{JOBS}/{job['job_id']}"

    queued = patch(api, path, {"status": "queued"}).json()["job"]
    assert queued["status"] == "queued"
    running = patch(api, path, {"status": "running"}).json()["job"]
    assert running["status"] == "running" and running["started_at"] >= queued["updated_at"]
    beat = patch(api, path, {}).json()["job"]
    assert beat["status"] == "running" and beat["heartbeat_at"] >= running["started_at"]
    assert beat["started_at"] == running["started_at"]
    time.sleep(0.05)
    done = patch(api, path + "/complete", {"exit_code": 0, "logs_url": "https://ci.example/1/log"}).json()["job"]
    assert (done["status"], done["exit_code"], done["logs_url"]) == ("success", 0, "https://ci.example/1/log")
    assert done["finished_at"] >= done["started_at"] and done["duration_seconds"] >= 0.05
    assert api.get(path).json() == {"job": done}
    # each change was one event, in order, in the user's one sequence
    assert events(server, alice) == [("pipeline", job["job_id"], kind)
                                     for kind in ("created", "status", "status", "heartbeat", "status")]

    # a job reported as running with its own start time, then failed with a duration given
    other = report(api, {"status": "queued", "job_type": "test"})
    assert other["status"] == "queued"
    path = f"{JOBS}/{other['job_id']}"
    started = patch(api, path, {"status": "running", "started_at": "2026-01-02T03:04:05Z"}).json()["job"]
    assert started["started_at"] == "2026-01-02T03:04:05.000Z"
    failed = patch(api, path + "/complete", {"exit_code": 137, "duration_seconds": 12.5,
                                             "error_message": "killed"}).json()["job"]
    assert (failed["status"], failed["exit_code"], failed["duration_seconds"], failed["error_message"]) == (
        "failed", 137, 12.5, "killed")


@pytest.mark.parametrize("body, status, exit_code", [
    ({"exit_code": 0}, "success", 0),
    ({"exit_code": 1}, "failed", 1),
    ({"exit_code": -9}, "failed", -9),
    ({"status": "timeout"}, "timeout", None),
    ({"status": "error", "error_message": "agent lost its disk"}, "error", None),
    ({"status": "cancelled", "exit_code": 0}, "cancelled", 0),
    ({"exit_code": 0, "status": None}, "success", 0),
])
def test_exit_code_zero_is_success_and_an_explicit_status_wins(server, alice, body, status, exit_code):
    api = agent(server, alice)
    job = report(api)
    done = patch(api, f"{JOBS}/{job['job_id']}/complete", body).json()["job"]
    assert (done["status"], done["exit_code"]) == (status, exit_code)
    # never started: no duration to compute
    assert done["duration_seconds"] is None and done["started_at"] is None


def test_a_repeated_idempotency_key_or_completion_returns_the_first_one(server, alice, bob):
    api = agent(server, alice)
    first = report(api, headers={"Idempotency-Key": "build-42"})
    again = api.post(JOBS, json={**BUILD, "repo": "something/else"}, headers={"Idempotency-Key": "build-42"})
    assert again.status_code == 200 and again.json() == {"job": first}
    assert first["idempotency_key"] == "build-42" and stored_jobs(server, alice) == 1
    # the key is per user
    assert report(agent(server, bob), headers={"Idempotency-Key": "build-42"})["job_id"] != first["job_id"]
    error(api.post(JOBS, json=BUILD, headers={"Idempotency-Key": "x" * 201}), 400)

    path = f"{JOBS}/{first['job_id']}/complete"
    body = {"exit_code": 3, "logs_url": "https://ci.example/42", "error_message": "tests failed"}
    done = patch(api, path, body).json()["job"]
    time.sleep(0.01)
    for repeat in (body, {"exit_code": 3}, {"exit_code": 3, "logs_url": "https://ci.example/42"}):
        response = patch(api, path, repeat)
        assert response.status_code == 200 and response.json() == {"job": done}, repeat
    for different in ({"exit_code": 4}, {"exit_code": 3, "logs_url": "https://ci.example/43"}, {"exit_code": 0},
                      {"status": "error"}):
        details = error(patch(api, path, different), 409)
        assert details["code"] == "illegal_transition", different
    assert api.get(f"{JOBS}/{first['job_id']}").json() == {"job": done}
    assert [kind for topic, _, kind in events(server, alice)] == ["created", "status"]


def test_concurrent_reports_of_one_job_change_it_once(server, alice):
    api = agent(server, alice)
    token = api.http.headers["Authorization"]
    jobs = [report(api) for _ in range(3)]

    async def race(job_id: str, bodies: list[dict]) -> list[int]:
        async with async_http_client(base_url=server.url, headers={"Authorization": token}) as http:
            answers = await asyncio.gather(*(http.patch(f"{JOBS}/{job_id}/complete", json=b) for b in bodies))
        return [a.status_code for a in answers]

    # different exit codes at once: one wins, the others are told the job is finished
    codes = asyncio.run(race(jobs[0]["job_id"], [{"exit_code": i} for i in range(8)]))
    assert sorted(codes) == [200] + [409] * 7, codes
    # the same completion at once (an agent retrying): all succeed, the job changed once
    codes = asyncio.run(race(jobs[1]["job_id"], [{"exit_code": 0}] * 8))
    assert codes == [200] * 8
    kinds = [(job_id, kind) for _, job_id, kind in events(server, alice)]
    assert kinds.count((jobs[0]["job_id"], "status")) == 1 and kinds.count((jobs[1]["job_id"], "status")) == 1
    raced = api.get(f"{JOBS}/{jobs[0]['job_id']}").json()["job"]
    summary = api.get("/api/dashboard/summary").json()
    assert summary["jobs_running"] == 1 and summary["jobs_failed_today"] == (raced["status"] == "failed")


# -- illegal transitions -------------------------------------------------------------------------
@pytest.mark.parametrize("final", FINAL)
@pytest.mark.parametrize("path, body, requested", [
    ("", {"status": "queued"}, "queued"),
    ("", {"status": "running"}, "running"),
    ("", {}, "heartbeat"),
    ("/complete", {"exit_code": 0}, "success"),
    ("/complete", {"exit_code": 1}, "failed"),
    ("/complete", {"status": "timeout"}, "timeout"),
    ("/complete", {"status": "error"}, "error"),
    ("/complete", {"status": "cancelled"}, "cancelled"),
    ("", {"status": "cancelled"}, "cancelled"),
])
def test_a_finished_job_cannot_change(server, alice, final, path, body, requested):
    api = agent(server, alice)
    job = finished_as(api, final)
    response = patch(api, f"{JOBS}/{job['job_id']}{path}", body)
    if requested == final:
        # the same outcome again (an agent retrying) is answered with the job as it is
        assert response.status_code == 200 and response.json() == {"job": job}
    else:
        details = error(response, 409)
        assert details["code"] == "illegal_transition"
        assert details["details"] == {"current": final, "requested": requested}
        assert final in details["message"] and requested in details["message"]
    assert api.get(f"{JOBS}/{job['job_id']}").json() == {"job": job}
    assert len(events(server, alice)) == 3  # created, running, the final status: nothing since


@pytest.mark.parametrize("start, body, requested", [
    ("queued", {"status": "queued"}, None),  # the same status again: a heartbeat
    ("running", {"status": "queued"}, "queued"),
    ("running", {"status": "running"}, None),
])
def test_an_active_job_does_not_go_back(server, alice, start, body, requested):
    api = agent(server, alice)
    job = report(api)
    path = f"{JOBS}/{job['job_id']}"
    before = patch(api, path, {"status": start}).json()["job"]
    response = patch(api, path, body)
    if requested is None:
        after = response.json()["job"]
        assert after["status"] == start and after["heartbeat_at"] is not None
        assert after["started_at"] == before["started_at"]
    else:
        assert error(response, 409)["details"] == {"current": start, "requested": requested}
        assert api.get(path).json() == {"job": before}


# -- bad input -------------------------------------------------------------------------------------
LONG = "x" * 10_000


@pytest.mark.parametrize("change, field", [
    ({"job_type": 7}, "job_type"),
    ({"job_type": "Build Now"}, "job_type"),
    ({"job_type": None}, "job_type"),
    ({"repo": ""}, "repo"),
    ({"repo": LONG}, "repo"),
    ({"repo": "acme/\u0000api"}, "repo"),
    ({"repo": ["acme/api"]}, "repo"),
    ({"ref": LONG}, "ref"),
    ({"commit_sha": "a" * 65}, "commit_sha"),
    ({"commit_message": LONG}, "commit_message"),
    ({"commit_author": LONG}, "commit_author"),
    ({"agent_id": LONG}, "agent_id"),
    ({"agent_id": "ci\n1"}, "agent_id"),
    ({"agent_id": 1}, "agent_id"),
    ({"status": "running"}, "status"),
    ({"status": "bogus"}, "status"),
    ({"tags": ["t"] * 1000}, "tags"),
    ({"tags": "linux"}, "tags"),
    ({"tags": ["ok", 5]}, "tags.1"),
    ({"tags": ["ok", "x" * 65]}, "tags.1"),
    ({"metadata": {"blob": "x" * 17_000}}, "metadata"),
    ({"metadata": ["not", "an", "object"]}, "metadata"),
    ({"exit_code": 0}, "exit_code"),  # not a field of a new job
    ({"user_id": 1}, "user_id"),
    ({"job_id": str(uuid.uuid4())}, "job_id"),
])
def test_a_bad_new_job_is_a_400_naming_the_field_and_nothing_is_stored(server, alice, change, field):
    api = agent(server, alice)
    body = {**BUILD, **change}
    if change.get("job_type", 0) is None:
        del body["job_type"]
    details = error(api.post(JOBS, json=body), 400)
    assert details["code"] == "validation_error" and details["details"]["field"] == field, details
    assert field.split(".")[0] in details["message"]
    assert stored_jobs(server, alice) == 0 and events(server, alice) == []


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'"text"', b"null", b'{"job_type": "build",}'])
def test_a_body_that_is_not_a_json_object_is_a_400(server, alice, content):
    api = agent(server, alice)
    details = error(api.post(JOBS, content=content), 400)
    assert details["code"] == "validation_error"
    assert stored_jobs(server, alice) == 0


def test_a_body_over_64_kb_is_a_413(server, alice):
    api = agent(server, alice)
    error(api.post(JOBS, json={**BUILD, "metadata": {"blob": "x" * 70_000}}), 413)
    job = report(api)
    error(patch(api, f"{JOBS}/{job['job_id']}/complete", {"exit_code": 0, "error_message": "x" * 70_000}), 413)
    assert stored_jobs(server, alice) == 1 and api.get(f"{JOBS}/{job['job_id']}").json()["job"]["status"] == "pending"


@pytest.mark.parametrize("path, body, field", [
    ("", {"status": "success"}, "status"),
    ("", {"status": "pending"}, "status"),
    ("", {"status": 3}, "status"),
    ("", {"started_at": "2026-01-01T00:00:00Z"}, "started_at"),
    ("", {"status": "running", "started_at": "yesterday"}, "started_at"),
    ("", {"heartbeat": True}, "heartbeat"),
    ("/complete", {}, "exit_code"),
    ("/complete", {"exit_code": "0"}, "exit_code"),
    ("/complete", {"exit_code": True}, "exit_code"),
    ("/complete", {"exit_code": 0.5}, "exit_code"),
    ("/complete", {"exit_code": 2**40}, "exit_code"),
    ("/complete", {"status": "success"}, "status"),
    ("/complete", {"exit_code": 0, "duration_seconds": -1}, "duration_seconds"),
    ("/complete", {"exit_code": 0, "duration_seconds": "5"}, "duration_seconds"),
    ("/complete", {"exit_code": 0, "logs_url": "javascript:alert(1)"}, "logs_url"),
    ("/complete", {"exit_code": 0, "logs_url": "https://" + LONG}, "logs_url"),
    ("/complete", {"exit_code": 0, "error_message": LONG}, "error_message"),
    ("/complete", {"exit_code": 0, "stdout": "..."}, "stdout"),
])
def test_a_bad_update_or_completion_is_a_400_and_changes_nothing(server, alice, path, body, field):
    api = agent(server, alice)
    job = report(api)
    details = error(patch(api, f"{JOBS}/{job['job_id']}{path}", body), 400)
    assert details["code"] == "validation_error" and details["details"]["field"] == field, details
    assert api.get(f"{JOBS}/{job['job_id']}").json() == {"job": job}


# -- who sees what ----------------------------------------------------------------------------------
def test_another_users_job_is_a_404_on_every_path_and_admins_see_all(server, alice, bob, admin):
    alice_api, bob_api = agent(server, alice), agent(server, bob)
    job = report(alice_api, {"agent_id": "shared-agent"})
    path = f"{JOBS}/{job['job_id']}"
    for response in (bob_api.get(path), patch(bob_api, path, {}), patch(bob_api, path, {"status": "running"}),
                     patch(bob_api, path + "/complete", {"exit_code": 0}),
                     bob_api.get(f"{JOBS}/{uuid.uuid4()}")):
        assert error(response, 404)["message"] == "No such pipeline job"
    assert error(bob_api.get(f"{JOBS}/not-a-uuid"), 400)["details"]["field"] == "job_id"
    assert bob_api.get(JOBS).json() == {"jobs": [], "next_cursor": None}
    assert bob_api.get(f"{JOBS}/agent/shared-agent").json()["jobs"] == []
    assert bob_api.get(f"{JOBS}/running").json() == {"jobs": []}
    assert bob_api.get("/api/dashboard/summary").json()["recent_jobs"] == []
    assert alice_api.get(path).json() == {"job": job}
    # an admin sees and may change anyone's; the job stays its reporter's
    root = agent(server, admin, "admin")
    assert root.get(path).json() == {"job": job}
    assert job["job_id"] in {j["job_id"] for j in root.get(f"{JOBS}/running?limit=100").json()["jobs"]}
    assert patch(root, path, {"status": "cancelled"}).json()["job"]["user_id"] == alice["id"]
    # an admin's read token is a user's view
    assert error(agent(server, admin, "read").get(path), 404)


def test_read_tokens_cannot_report_and_agent_tokens_cannot_run_set_actions(server, alice, sim):
    reader, agent_api = agent(server, alice, "read"), agent(server, alice)
    job = report(agent_api)
    path = f"{JOBS}/{job['job_id']}"
    for response in (reader.post(JOBS, json=BUILD), patch(reader, path, {}),
                     patch(reader, path + "/complete", {"exit_code": 0}),
                     reader.post("/api/dashboard/deployments", json={"service_name": "api", "version": "1"})):
        assert error(response, 403)["code"] == "insufficient_scope"
    assert reader.get(path).json() == {"job": job} and reader.get(JOBS).json()["jobs"] == [job]
    assert reader.get("/api/dashboard/summary").status_code == 200

    # an agent reads Set Action jobs but cannot start, cancel or retry one
    writer = agent(server, alice, "write")
    set_action = writer.wait_for(writer.start(["C1"])["job_id"])
    denied = agent_api.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": ["C2"]})
    assert "'write' scope" in error(denied, 403)["message"]
    for verb in ("cancel", "retry"):
        assert error(agent_api.post(f"/api/jobs/{set_action['job_id']}/{verb}"), 403)["code"] == "insufficient_scope"
    assert agent_api.get(f"/api/jobs/{set_action['job_id']}").status_code == 200
    assert db_rows(server.settings.database_url, "SELECT COUNT(*) FROM jobs WHERE user_id = $1", alice["id"]) == [(1,)]
    # write and admin credentials report too, and a browser session with its CSRF token
    assert report(writer)["user_id"] == alice["id"]
    browser = server.client(alice)
    assert report(browser)["user_id"] == alice["id"]
    browser.http.headers.pop("X-CSRF-Token")
    assert error(browser.post(JOBS, json=BUILD), 403)["code"] == "csrf_failed"
    assert error(server.client().post(JOBS, json=BUILD), 401)


# -- lists -------------------------------------------------------------------------------------------
def test_lists_filter_and_page_newest_first(server, alice):
    api = agent(server, alice)
    made = []
    for i in range(7):
        job = report(api, {"agent_id": f"agent-{i % 2}", "repo": f"acme/repo-{i % 3}"})
        if i in (1, 4):
            patch(api, f"{JOBS}/{job['job_id']}", {"status": "running"})
        if i in (2, 5):
            patch(api, f"{JOBS}/{job['job_id']}/complete", {"exit_code": 1})
        if i == 6:
            patch(api, f"{JOBS}/{job['job_id']}/complete", {"exit_code": 0})
        made.append(job["job_id"])
    newest_first = made[::-1]

    def ids(query: str) -> list[str]:
        return [j["job_id"] for j in api.get(f"{JOBS}{query}").json()["jobs"]]

    assert ids("") == newest_first
    pages, cursor = [], None
    while True:
        page = api.get(JOBS, params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        pages.append([j["job_id"] for j in page["jobs"]])
        if not (cursor := page["next_cursor"]):
            break
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert ids("?status=running") == [made[4], made[1]]
    assert ids("?status=running,FAILED") == [made[5], made[4], made[2], made[1]]
    assert ids("?status=running,failed&limit=3") == [made[5], made[4], made[2]]
    page = api.get(JOBS, params={"status": "failed,running", "limit": 2}).json()
    assert api.get(JOBS, params={"status": "failed,running", "cursor": page["next_cursor"]}).json()["jobs"][0][
        "job_id"] == made[2]
    assert ids("?agent_id=agent-0") == [made[6], made[4], made[2], made[0]]
    assert ids("?repo=acme/repo-1") == [made[4], made[1]]
    assert ids("?repo=acme/repo-1&status=pending") == []
    assert ids("/running") == [made[4], made[3], made[1], made[0]]
    assert ids("/running?limit=1") == [made[4]]
    assert ids("/agent/agent-1") == [made[5], made[3], made[1]]
    assert api.get(f"{JOBS}/agent/agent-1", params={"limit": 2}).json()["next_cursor"]

    for query, field in (("?status=done", "status"), ("?limit=0", "limit"), ("?limit=101", "limit"),
                         ("?cursor=forged", "cursor"), ("?user=1", "user"), ("/running?status=queued", "status"),
                         ("?agent_id=" + "a" * 101, "agent_id")):
        assert error(api.get(JOBS + query), 400)["details"]["field"] == field, query


@pytest.mark.own_server  # the admin's summary counts everyone's jobs
def test_the_summary_counts_running_and_failed_jobs(server, alice, bob, admin):
    alice_api, bob_api = agent(server, alice), agent(server, bob)
    empty = alice_api.get("/api/dashboard/summary").json()
    assert (empty["jobs_running"], empty["jobs_failed_today"], empty["deployments_today"]) == (0, 0, 0)
    assert empty["recent_jobs"] == [] and empty["recent_deployments"] == [] and empty["live_by_service"] == {}
    assert empty["as_of"].endswith("Z")
    jobs = [report(alice_api) for _ in range(7)]
    patch(alice_api, f"{JOBS}/{jobs[0]['job_id']}", {"status": "running"})
    for job, body in zip(jobs[1:4], ({"exit_code": 1}, {"status": "timeout"}, {"status": "error"})):
        patch(alice_api, f"{JOBS}/{job['job_id']}/complete", body)
    patch(alice_api, f"{JOBS}/{jobs[4]['job_id']}/complete", {"exit_code": 0})
    patch(alice_api, f"{JOBS}/{jobs[5]['job_id']}", {"status": "cancelled"})
    report(bob_api)
    summary = alice_api.get("/api/dashboard/summary").json()
    assert (summary["jobs_running"], summary["jobs_failed_today"]) == (2, 3)  # jobs 0 and 6; 1, 2 and 3
    assert [j["job_id"] for j in summary["recent_jobs"]] == [jobs[6]["job_id"], jobs[0]["job_id"]]
    everyone = agent(server, admin, "admin").get("/api/dashboard/summary").json()
    assert (everyone["jobs_running"], everyone["jobs_failed_today"]) == (3, 3)
    assert len(everyone["recent_jobs"]) == 3
    more = [report(alice_api) for _ in range(5)]
    assert [j["job_id"] for j in alice_api.get("/api/dashboard/summary").json()["recent_jobs"]] == [
        j["job_id"] for j in more[::-1]]


# -- timeouts --------------------------------------------------------------------------------------
@pytest.mark.slow  # waits for a job to time out, then watches for a second
def test_a_silent_running_job_times_out_once_across_nodes(make_server):
    first = make_server(PIPELINE_TIMEOUT="0.6")
    second = make_server(PIPELINE_TIMEOUT="0.6")  # another node on the same database
    alice = first.create_user(unique("alice"))
    api, other_node = agent(first, alice), agent(second, alice)
    silent, beating, waiting = report(api), report(api), report(api)
    for job in (silent, beating):
        patch(api, f"{JOBS}/{job['job_id']}", {"status": "running"})
    deadline = time.monotonic() + 10
    while api.get(f"{JOBS}/{silent['job_id']}").json()["job"]["status"] == "running":
        assert time.monotonic() < deadline, "the silent job did not time out"
        assert patch(other_node, f"{JOBS}/{beating['job_id']}", {}).status_code == 200
        time.sleep(0.1)
    timed_out = api.get(f"{JOBS}/{silent['job_id']}").json()["job"]
    assert timed_out["status"] == "timeout" and timed_out["error_message"] == "No heartbeat or update for 0.6 s"
    assert timed_out["finished_at"] is not None and timed_out["duration_seconds"] >= 0.6
    for _ in range(10):  # both nodes sweep a few more times; the job with heartbeats stays
        assert patch(other_node, f"{JOBS}/{beating['job_id']}", {}).status_code == 200
        time.sleep(0.1)
    assert api.get(f"{JOBS}/{beating['job_id']}").json()["job"]["status"] == "running"
    assert api.get(f"{JOBS}/{waiting['job_id']}").json()["job"]["status"] == "pending"  # only running jobs time out
    assert [k for t, j, k in events(first, alice) if j == silent["job_id"]] == ["created", "status", "status"]
    assert api.get("/api/dashboard/summary").json()["jobs_failed_today"] == 1
    error(patch(api, f"{JOBS}/{silent['job_id']}", {}), 409)
    # an agent that comes back and reports the timeout gets the job as it is
    assert patch(api, f"{JOBS}/{silent['job_id']}/complete", {"status": "timeout"}).json() == {"job": timed_out}


def test_the_api_description_has_every_dashboard_route_with_its_models(server):
    spec = server.client().get("/openapi.json").json()
    paths = {path: set(operations) for path, operations in spec["paths"].items() if path.startswith("/api/dashboard")}
    assert paths == {
        "/api/dashboard/jobs": {"get", "post"}, "/api/dashboard/jobs/running": {"get"},
        "/api/dashboard/jobs/agent/{agent_id}": {"get"}, "/api/dashboard/jobs/{job_id}": {"get", "patch"},
        "/api/dashboard/jobs/{job_id}/complete": {"patch"}, "/api/dashboard/deployments": {"get", "post"},
        "/api/dashboard/deployments/service/{service_name}": {"get"},
        "/api/dashboard/deployments/{deployment_id}": {"get"},
        **{f"/api/dashboard/deployments/{{deployment_id}}/{step}": {"post"}
           for step in ("staging", "production", "rollback", "fail")},
        "/api/dashboard/deployments/{deployment_id}/metrics": {"patch"}, "/api/dashboard/summary": {"get"},
    }
    create = spec["paths"]["/api/dashboard/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewPipelineJob"}
    assert "201" in create["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["NewPipelineJob"]["additionalProperties"] is False
    assert schemas["NewPipelineJob"]["properties"]["tags"]["maxItems"] == 50
    assert set(schemas["PipelineJob"]["properties"]) == set(report(agent(server, server.create_user(
        f"oa-{uuid.uuid4().hex[:8]}"))))

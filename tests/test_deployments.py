"""Deployments reported by CI/CD agents, through the REST API on both backends: staging, production,
rollbacks and failures, every illegal transition, idempotent retries, hostile input, another user's
ids, lists, and what the summary says is live where."""

from __future__ import annotations

import time
import uuid

import pytest

from pipelines_client import agent, events, patch, report
from support import api_error as error
from support import db_rows

DEPLOYMENTS = "/api/dashboard/deployments"


def announce(api, body: dict | None = None, headers: dict | None = None) -> dict:
    """A new deployment (asserting 201), a millisecond after the one before."""
    time.sleep(0.002)
    response = api.post(DEPLOYMENTS, json={"service_name": "api", "version": "1.0.0", **(body or {})},
                        headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["deployment"]


def step(api, deployment: dict, name: str, body: dict | None = None):
    path = f"{DEPLOYMENTS}/{deployment['id']}/{name}"
    return patch(api, path, body or {}) if name == "metrics" else api.post(path, json=body or {})


def moved(api, deployment: dict, name: str, body: dict | None = None) -> dict:
    response = step(api, deployment, name, body)
    assert response.status_code == 200, response.text
    return response.json()["deployment"]


def deployed(api, status: str, body: dict | None = None) -> dict:
    """A new deployment brought to `status` through the API."""
    deployment = announce(api, body)
    job = report(api, {"job_type": "deploy"})["job_id"]
    path = {"pending": [], "staging": [("staging", {"job_id": job, "in_progress": True})],
            "staged": [("staging", {"job_id": job})],
            "production": [("staging", {"job_id": job}), ("production", {"job_id": job, "in_progress": True})],
            "live": [("staging", {"job_id": job}), ("production", {"job_id": job})],
            "failed": [("fail", {"reason": "smoke tests failed"})],
            "rolled_back": [("staging", {"job_id": job}), ("production", {"job_id": job}),
                            ("rollback", {"rolled_back_to": "0.9.0", "reason": "errors"})]}[status]
    for name, step_body in path:
        deployment = moved(api, deployment, name, step_body)
    assert deployment["status"] == status
    return deployment


def stored(server, user) -> int:
    return db_rows(server.settings.database_url, "SELECT COUNT(*) FROM deployments WHERE user_id = $1",
                   user["id"])[0][0]


# -- a deployment's life ----------------------------------------------------------------------------
def test_a_deployment_goes_through_staging_and_production_and_is_rolled_back(server, alice):
    api = agent(server, alice)
    build = report(api)["job_id"]
    tests = report(api, {"job_type": "test"})["job_id"]
    staging_job, production_job = report(api, {"job_type": "deploy"})["job_id"], report(api)["job_id"]
    deployment = announce(api, {"version": "2.3.1", "commit_sha": "abc123", "commit_message": "Faster\nqueries",
                                "commit_author": "Ann", "build_job_id": build, "test_job_id": tests,
                                "cluster": "sim"})
    assert deployment["status"] == "pending" and deployment["user_id"] == alice["id"]
    assert (deployment["build_job_id"], deployment["test_job_id"], deployment["cluster"]) == (build, tests, "sim")
    assert all(deployment[k] is None for k in ("staging_job_id", "staged_at", "production_job_id", "live_at",
                                               "rolled_back_at", "rolled_back_to", "rollback_reason",
                                               "failure_reason", "error_rate", "latency_ms", "requests_per_sec",
                                               "metrics_at"))
    staging = moved(api, deployment, "staging", {"job_id": staging_job, "in_progress": True})
    assert (staging["status"], staging["staging_job_id"], staging["staged_at"]) == ("staging", staging_job, None)
    staged = moved(api, deployment, "staging", {"job_id": staging_job})
    assert staged["status"] == "staged" and staged["staged_at"] >= staging["updated_at"]
    production = moved(api, deployment, "production", {"job_id": production_job, "in_progress": True})
    assert (production["status"], production["production_job_id"], production["live_at"]) == (
        "production", production_job, None)
    live = moved(api, deployment, "production", {"job_id": production_job})
    assert live["status"] == "live" and live["live_at"] >= staged["staged_at"]
    measured = moved(api, deployment, "metrics", {"error_rate": 0.02, "latency_ms": 120})
    assert (measured["error_rate"], measured["latency_ms"], measured["requests_per_sec"]) == (0.02, 120.0, None)
    measured = moved(api, deployment, "metrics", {"requests_per_sec": 850.5})
    assert (measured["error_rate"], measured["latency_ms"], measured["requests_per_sec"]) == (0.02, 120.0, 850.5)
    assert measured["metrics_at"] >= live["live_at"] and measured["status"] == "live"
    rolled = moved(api, deployment, "rollback", {"rolled_back_to": "2.3.0", "reason": "p99 latency doubled"})
    assert (rolled["status"], rolled["rolled_back_to"], rolled["rollback_reason"]) == (
        "rolled_back", "2.3.0", "p99 latency doubled")
    assert rolled["rolled_back_at"] >= measured["metrics_at"] and rolled["live_at"] == live["live_at"]
    assert api.get(f"{DEPLOYMENTS}/{deployment['id']}").json() == {"deployment": rolled}
    assert [k for t, i, k in events(server, alice) if t == "deployment"] == [
        "created", "status", "status", "status", "status", "metrics", "metrics", "status"]


def test_a_deployment_that_fails_before_going_live(server, alice):
    api = agent(server, alice)
    for status in ("pending", "staging", "staged", "production"):
        deployment = deployed(api, status)
        failed = moved(api, deployment, "fail", {"reason": "health check failed"})
        assert (failed["status"], failed["failure_reason"]) == ("failed", "health check failed")
    assert moved(api, deployed(api, "pending"), "fail")["failure_reason"] is None


def test_repeated_steps_return_the_deployment_unchanged(server, alice):
    api = agent(server, alice)
    job = report(api)["job_id"]
    deployment = announce(api, headers={"Idempotency-Key": "deploy-api-7"})
    again = api.post(DEPLOYMENTS, json={"service_name": "other", "version": "9"},
                     headers={"Idempotency-Key": "deploy-api-7"})
    assert again.status_code == 200 and again.json() == {"deployment": deployment} and stored(server, alice) == 1
    for name, body in (("staging", {"job_id": job}), ("production", {"job_id": job}),
                       ("rollback", {"rolled_back_to": "0.9", "reason": "why not"})):
        first = moved(api, deployment, name, body)
        time.sleep(0.005)
        assert step(api, deployment, name, body).json() == {"deployment": first}
    # the same step with other values is refused
    assert error(step(api, deployment, "rollback", {"rolled_back_to": "0.8"}), 409)["details"] == {
        "current": "rolled_back", "requested": "rolled_back"}
    failed = deployed(api, "failed")
    assert step(api, failed, "fail", {"reason": "smoke tests failed"}).json() == {"deployment": failed}
    assert [k for t, i, k in events(server, alice) if i == deployment["id"]] == ["created", "status", "status",
                                                                              "status"]


# -- illegal transitions ------------------------------------------------------------------------------
def _illegal_cases():
    steps = {
        "staging": ({"in_progress": True}, "staging"), "staged": ({}, "staged"),
        "production": ({"in_progress": True}, "production"), "live": ({}, "live"),
        "rollback": ({"rolled_back_to": "0.1"}, "rolled_back"), "fail": ({}, "failed"),
        "metrics": ({"error_rate": 0.5}, "metrics"),
    }
    allowed = {  # from each status: the steps that are legal (or a repeat of the same step)
        "pending": {"staging", "staged", "fail"},
        "staging": {"staging", "staged", "fail"},
        "staged": {"production", "live", "rollback", "fail", "metrics", "staged"},
        "production": {"production", "live", "fail", "metrics"},
        "live": {"rollback", "metrics", "live"},
        "failed": set(),
        "rolled_back": {"metrics"},
    }
    for status, legal in allowed.items():
        for name, (body, requested) in steps.items():
            if name not in legal:
                yield pytest.param(status, name, body, requested, id=f"{status}-{name}")


@pytest.mark.parametrize("status, name, body, requested", list(_illegal_cases()))
def test_every_illegal_step_is_a_409_and_changes_nothing(server, alice, status, name, body, requested):
    api = agent(server, alice)
    deployment = deployed(api, status)
    job = report(api)["job_id"]
    path = {"staged": "staging", "live": "production"}.get(name, name)
    if path in ("staging", "production"):
        body = {**body, "job_id": job}
    before = events(server, alice)
    details = error(step(api, deployment, path, body), 409)
    assert details["code"] == "illegal_transition"
    assert details["details"] == {"current": status, "requested": requested}
    assert api.get(f"{DEPLOYMENTS}/{deployment['id']}").json() == {"deployment": deployment}
    assert events(server, alice) == before


# -- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"service_name": "my service"}, "service_name"),
    ({"service_name": ""}, "service_name"),
    ({"service_name": "s" * 101}, "service_name"),
    ({"service_name": None}, "service_name"),
    ({"version": "v" * 10_000}, "version"),
    ({"version": 2}, "version"),
    ({"commit_message": "m" * 10_000}, "commit_message"),
    ({"commit_sha": "a" * 65}, "commit_sha"),
    ({"build_job_id": "not-a-uuid"}, "build_job_id"),
    ({"build_job_id": str(uuid.uuid4())}, "build_job_id"),  # no such pipeline job
    ({"test_job_id": 12}, "test_job_id"),
    ({"cluster": "nowhere"}, "cluster"),
    ({"cluster": ""}, "cluster"),
    ({"status": "live"}, "status"),
    ({"live_at": "2026-01-01T00:00:00Z"}, "live_at"),
])
def test_a_bad_new_deployment_is_a_400_naming_the_field_and_nothing_is_stored(server, alice, change, field):
    api = agent(server, alice)
    body = {"service_name": "api", "version": "1.0", **change}
    details = error(api.post(DEPLOYMENTS, json=body), 400)
    assert details["details"]["field"] == field, details
    assert stored(server, alice) == 0


@pytest.mark.parametrize("name, body, field", [
    ("staging", {}, "job_id"),
    ("staging", {"job_id": "abc"}, "job_id"),
    ("staging", {"job_id": None}, "job_id"),
    ("staging", {"job_id": "JOB", "in_progress": "yes"}, "job_id"),
    ("production", {"job_id": str(uuid.uuid4()), "in_progress": 1}, "in_progress"),
    ("production", {"job_id": str(uuid.uuid4())}, "job_id"),  # no such pipeline job
    ("rollback", {}, "rolled_back_to"),
    ("rollback", {"rolled_back_to": "1", "reason": "r" * 10_000}, "reason"),
    ("fail", {"reason": 5}, "reason"),
    ("fail", {"why": "x"}, "why"),
    ("metrics", {}, "error_rate"),
    ("metrics", {"error_rate": 1.5}, "error_rate"),
    ("metrics", {"error_rate": "0.1"}, "error_rate"),
    ("metrics", {"latency_ms": -1}, "latency_ms"),
    ("metrics", {"requests_per_sec": None, "cpu": 3}, "cpu"),
])
def test_a_bad_step_is_a_400_naming_the_field_and_changes_nothing(server, alice, name, body, field):
    api = agent(server, alice)
    deployment = deployed(api, "staged")
    details = error(step(api, deployment, name, body), 400)
    assert details["details"]["field"] == field, details
    assert api.get(f"{DEPLOYMENTS}/{deployment['id']}").json() == {"deployment": deployment}


def test_a_non_finite_metric_or_an_oversized_body_is_refused(server, alice):
    api = agent(server, alice)
    deployment = deployed(api, "live")
    response = api.http.patch(f"{DEPLOYMENTS}/{deployment['id']}/metrics", content=b'{"error_rate": NaN}')
    assert error(response, 400)["code"] == "validation_error"
    error(api.post(DEPLOYMENTS, json={"service_name": "api", "version": "1", "commit_message": "x" * 70_000}), 413)
    assert api.get(f"{DEPLOYMENTS}/{deployment['id']}").json() == {"deployment": deployment}


# -- who sees what -----------------------------------------------------------------------------------
def test_another_users_deployment_is_a_404_on_every_path_and_admins_see_all(server, alice, bob, admin):
    alice_api, bob_api = agent(server, alice), agent(server, bob)
    deployment = deployed(alice_api, "staged", {"service_name": "billing"})
    alice_job = report(alice_api)["job_id"]
    bob_job = report(bob_api)["job_id"]
    path = f"{DEPLOYMENTS}/{deployment['id']}"
    for response in (bob_api.get(path), step(bob_api, deployment, "staging", {"job_id": bob_job}),
                     step(bob_api, deployment, "production", {"job_id": bob_job}),
                     step(bob_api, deployment, "rollback", {"rolled_back_to": "1"}),
                     step(bob_api, deployment, "fail"), step(bob_api, deployment, "metrics", {"error_rate": 0.1}),
                     bob_api.get(f"{DEPLOYMENTS}/{uuid.uuid4()}")):
        assert error(response, 404)["message"] == "No such deployment"
    assert error(bob_api.get(f"{DEPLOYMENTS}/nope"), 400)["details"]["field"] == "id"
    # nor may bob name alice's pipeline jobs in his own deployments
    for field in ("build_job_id", "test_job_id"):
        response = bob_api.post(DEPLOYMENTS, json={"service_name": "billing", "version": "1", field: alice_job})
        assert error(response, 400)["details"]["field"] == field
    mine = announce(bob_api, {"service_name": "billing"})
    assert error(step(bob_api, mine, "staging", {"job_id": alice_job}), 400)["details"]["field"] == "job_id"
    assert bob_api.get(DEPLOYMENTS).json()["deployments"] == [mine]
    assert bob_api.get(f"{DEPLOYMENTS}/service/billing").json()["deployments"] == [mine]
    assert bob_api.get("/api/dashboard/summary").json()["recent_deployments"] == [mine]
    assert alice_api.get(path).json() == {"deployment": deployment}
    root = agent(server, admin, "admin")
    assert root.get(path).json() == {"deployment": deployment}
    billing = {d["id"] for d in root.get(f"{DEPLOYMENTS}/service/billing").json()["deployments"]}
    assert {deployment["id"], mine["id"]} <= billing
    assert moved(root, deployment, "production", {"job_id": alice_job})["user_id"] == alice["id"]


# -- lists -------------------------------------------------------------------------------------------
def test_lists_filter_by_status_and_service_and_page_newest_first(server, alice):
    api = agent(server, alice)
    made = [deployed(api, status, {"service_name": service}) for status, service in (
        ("pending", "api"), ("live", "web"), ("staged", "api"), ("failed", "api"), ("live", "api"))]

    def ids(path: str, **params) -> list[str]:
        return [d["id"] for d in api.get(path, params=params).json()["deployments"]]

    assert ids(DEPLOYMENTS) == [d["id"] for d in made[::-1]]
    assert ids(DEPLOYMENTS, status="live") == [made[4]["id"], made[1]["id"]]
    assert ids(DEPLOYMENTS, status="live,staged", service_name="api") == [made[4]["id"], made[2]["id"]]
    assert ids(f"{DEPLOYMENTS}/service/api") == [made[4]["id"], made[3]["id"], made[2]["id"], made[0]["id"]]
    first = api.get(f"{DEPLOYMENTS}/service/api", params={"limit": 3}).json()
    rest = api.get(f"{DEPLOYMENTS}/service/api", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in rest["deployments"]] == [made[0]["id"]] and rest["next_cursor"] is None
    assert ids(f"{DEPLOYMENTS}/service/nothing-here") == []
    for path, params, field in ((DEPLOYMENTS, {"status": "deployed"}, "status"),
                                (DEPLOYMENTS, {"service_name": "a b"}, "service_name"),
                                (DEPLOYMENTS, {"limit": 500}, "limit"), (DEPLOYMENTS, {"sort": "version"}, "sort"),
                                (f"{DEPLOYMENTS}/service/a b", {}, "service_name"),
                                (f"{DEPLOYMENTS}/service/api", {"cursor": "x.y"}, "cursor")):
        assert error(api.get(path, params=params), 400)["details"]["field"] == field, (path, params)


# -- what is live where ------------------------------------------------------------------------------
@pytest.mark.own_server  # the admin's summary counts everyone's deployments
def test_the_summary_says_what_is_live_per_service_and_a_rollback_gives_the_previous_one_back(server, alice,
                                                                                                bob, admin):
    alice_api, bob_api = agent(server, alice), agent(server, bob)
    v1 = deployed(alice_api, "live", {"version": "1.0", "cluster": "sim"})
    deployed(alice_api, "staged", {"version": "1.1"})
    web = deployed(alice_api, "live", {"service_name": "web", "version": "7"})
    deployed(alice_api, "failed", {"version": "1.2"})
    v2 = deployed(alice_api, "live", {"version": "2.0", "cluster": "sim2"})
    bobs = deployed(bob_api, "live", {"version": "9.9"})

    def live(api) -> dict:
        return {service: (entry["version"], entry["deployment_id"], entry["cluster"])
                for service, entry in api.get("/api/dashboard/summary").json()["live_by_service"].items()}

    summary = alice_api.get("/api/dashboard/summary").json()
    assert summary["deployments_today"] == 5 and len(summary["recent_deployments"]) == 5
    assert summary["recent_deployments"][0]["id"] == v2["id"]
    assert summary["live_by_service"]["api"] == {"version": "2.0", "deployment_id": v2["id"],
                                                 "live_at": v2["live_at"], "cluster": "sim2"}
    assert live(alice_api) == {"api": ("2.0", v2["id"], "sim2"), "web": ("7", web["id"], None)}
    assert live(bob_api) == {"api": ("9.9", bobs["id"], None)}
    everyone = agent(server, admin, "admin").get("/api/dashboard/summary").json()
    assert everyone["deployments_today"] == 6 and everyone["live_by_service"]["api"]["version"] == "9.9"

    # rolling back what is live gives the service back to the version live before it
    moved(alice_api, v2, "rollback", {"rolled_back_to": "1.0", "reason": "errors up"})
    assert live(alice_api)["api"] == ("1.0", v1["id"], "sim")
    moved(alice_api, v1, "rollback", {"rolled_back_to": "0.9"})
    assert live(alice_api) == {"web": ("7", web["id"], None)}
    # a staged deployment rolled back changes nothing live
    moved(alice_api, deployed(alice_api, "staged", {"service_name": "web"}), "rollback", {"rolled_back_to": "7"})
    assert live(alice_api) == {"web": ("7", web["id"], None)}
    assert alice_api.get("/api/dashboard/summary").json()["deployments_today"] == 6

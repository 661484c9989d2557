"""Tests for the simulated TMS cluster (server/simulator.py)."""

import asyncio
import json
import socket
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount
from starlette.testclient import TestClient

from server.sim import cluster as simulator_module
from server.sim.cluster import SimulatorKnobs, create_simulator_app, knobs_from_env


CONTROLS = [("GET", "/_sim/knobs"), ("PUT", "/_sim/knobs"), ("POST", "/_sim/reset"), ("GET", "/_sim/stats")]


def make_client(**knobs) -> TestClient:
    return TestClient(create_simulator_app(SimulatorKnobs(**knobs)))


def set_action(client, cids, request_id="job-1:1", action="Trans-Begin", code=1, **kwargs):
    body = {"action": action, "action_code": code, "customer_ids": cids, "request_id": request_id}
    return client.post("/tms/v1/set-action", json=body, **kwargs)


def states(client) -> dict:
    """All customers by cid, following next_page."""
    found, page = {}, 1
    while page is not None:
        answer = client.get("/tms/v1/customers/states", params={"page": page}).json()
        found.update({c["cid"]: c for c in answer["customers"]})
        page = answer["next_page"]
    return found


# set-action


@pytest.mark.parametrize("code, state", [
    (1, "TRANSITIONING"), (2, "PE_ENABLED"), (3, "T_ENABLED"), (4, "FINALIZED"), (5, "PE_DIRECT"),
])
def test_set_action_applies_state(code, state):
    with make_client() as client:
        response = set_action(client, ["C1", "C2"], action="Some-Action", code=code)
        assert response.status_code == 200
        results = {"C1": {"ok": True}, "C2": {"ok": True}}
        assert response.json() == {"success": True, "results": results}
        customers = states(client)
        assert set(customers) == {"C1", "C2"}
        assert customers["C1"]["state"] == state
        assert customers["C1"]["last_action"] == "Some-Action"
        assert customers["C1"]["updated_at"].endswith("Z")
        stats = client.get("/_sim/stats").json()
        assert stats["set_action_calls"] == 1
        assert stats["customers_applied"] == 2
        assert stats["request_ids"] == 1


def test_fail_cids_fail_inside_a_200_and_keep_their_state():
    with make_client(seed_customers=2, fail_cids={"C000001": "customer locked"}) as client:
        response = set_action(client, ["C000001", "C000002", "NEW"])
        assert response.status_code == 200
        assert response.json()["results"] == {
            "C000001": {"ok": False, "error": "customer locked"},
            "C000002": {"ok": True},
            "NEW": {"ok": True},
        }
        customers = states(client)
        assert customers["C000001"]["state"] == "ACTIVE"
        assert customers["C000001"]["last_action"] is None
        assert customers["C000002"]["state"] == "TRANSITIONING"


def test_failure_rate_one_fails_every_customer():
    with make_client(failure_rate=1.0) as client:
        answer = set_action(client, ["A", "B"]).json()
        assert answer["success"] is True
        assert all(not r["ok"] and r["error"] for r in answer["results"].values())
        assert states(client) == {}  # never-seen customers that failed are not created
        assert client.get("/_sim/stats").json()["customers_applied"] == 0


@pytest.mark.parametrize("status", [401, 500, 503])
def test_set_action_status_rejects_whole_batch_and_changes_nothing(status):
    with make_client(set_action_status=status) as client:
        response = set_action(client, ["C1"])
        assert response.status_code == status
        assert "error" in response.json()
        assert states(client) == {}
        # The rejected request_id was not remembered: a retry once healthy is applied.
        client.put("/_sim/knobs", json={"set_action_status": None})
        assert set_action(client, ["C1"]).json()["results"] == {"C1": {"ok": True}}
        assert client.get("/_sim/stats").json()["duplicate_batches"] == 0


def test_set_action_error_answers_success_false():
    with make_client(set_action_error="cluster busy") as client:
        response = set_action(client, ["C1"])
        assert response.status_code == 200
        assert response.json() == {"success": False, "error": "cluster busy"}
        assert states(client) == {}


def test_malformed_answers_a_body_that_is_not_json():
    with make_client(malformed=True) as client:
        response = set_action(client, ["C1"])
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
        assert states(client) == {}


def test_hang_delays_the_answer():
    with make_client(hang_seconds=0.1) as client:
        started = time.monotonic()
        assert set_action(client, ["C1"]).status_code == 200
        assert time.monotonic() - started >= 0.1


def test_latency_delays_every_upstream_call():
    with make_client(latency_ms=50) as client:
        started = time.monotonic()
        client.get("/tms/v1/customers/states")
        assert time.monotonic() - started >= 0.05


def test_required_token_guards_every_tms_call():
    with make_client(required_token="s3cret") as client:
        assert set_action(client, ["C1"]).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert set_action(client, ["C1"], headers=wrong).status_code == 401
        assert client.get("/tms/v1/customers/states").status_code == 401
        assert client.post("/tms/v1/appstatus/batch", json={"cids": []}).status_code == 401
        assert client.get("/tms/v1/appstatus/C1").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert set_action(client, ["C1"], headers=good).status_code == 200
        fingerprint = client.app.state.simulator.fingerprint("Bearer s3cret")
        assert client.get("/_sim/stats").json()["last_authorization_fingerprint"] == fingerprint


def test_last_authorization_fingerprint_is_null_without_header():
    with make_client() as client:
        client.get("/tms/v1/customers/states")
        stats = client.get("/_sim/stats").json()
        assert stats["last_authorization_fingerprint"] is None and stats["authorized_calls"] == 0


def test_stats_never_show_an_authorization_value():
    token = "Bearer recognisable-user-token-7Qx"
    with make_client() as client, make_client() as other:
        for c in (client, other):
            assert set_action(c, ["C1"], headers={"Authorization": token}).status_code == 200
        answer = client.get("/_sim/stats")
        assert "recognisable-user-token" not in answer.text
        stats = answer.json()
        assert "last_authorization" not in stats and stats["authorized_calls"] == 1
        fingerprint = stats["last_authorization_fingerprint"]
        assert len(fingerprint) == 16 and fingerprint not in token
        # keyed per cluster: the same token does not give the same fingerprint elsewhere, so one
        # cannot be looked up in a table of hashes of likely tokens
        assert other.get("/_sim/stats").json()["last_authorization_fingerprint"] != fingerprint
        client.get("/tms/v1/customers/states", headers={"Authorization": "Bearer another"})
        assert client.get("/_sim/stats").json()["last_authorization_fingerprint"] not in (None, fingerprint)


def test_knob_answers_hide_the_required_token():
    with make_client(required_token="cluster-secret-9") as client:
        assert client.get("/_sim/knobs").json()["required_token"] == "(hidden)"
        changed = client.put("/_sim/knobs", json={"required_token": "another-secret-4"})
        assert changed.json()["required_token"] == "(hidden)" and "another-secret" not in changed.text
        # still required as set
        assert set_action(client, ["C1"], headers={"Authorization": "Bearer another-secret-4"}).status_code == 200
        assert client.put("/_sim/knobs", json={"required_token": None}).json()["required_token"] is None


def test_repeated_request_id_returns_first_answer_without_reapplying():
    with make_client() as client:
        first = set_action(client, ["C1"], request_id="job:1", action="Trans-Begin", code=1)
        updated_at = states(client)["C1"]["updated_at"]
        again = set_action(client, ["C1"], request_id="job:1", action="PE-Enable", code=2)
        assert again.status_code == 200
        assert again.json() == first.json()
        customer = states(client)["C1"]
        assert (customer["state"], customer["updated_at"]) == ("TRANSITIONING", updated_at)
        stats = client.get("/_sim/stats").json()
        assert (stats["duplicate_batches"], stats["customers_applied"]) == (1, 1)
        assert stats["request_ids"] == 1


def test_request_ids_are_bounded_oldest_dropped(monkeypatch):
    monkeypatch.setattr(simulator_module, "MAX_REQUEST_IDS", 3)
    with make_client() as client:
        for n in range(5):
            set_action(client, ["C1"], request_id=f"job:{n}")
        assert client.get("/_sim/stats").json()["request_ids"] == 3
        set_action(client, ["C1"], request_id="job:4")  # still remembered
        set_action(client, ["C1"], request_id="job:0")  # dropped, so applied again
        stats = client.get("/_sim/stats").json()
        assert (stats["duplicate_batches"], stats["customers_applied"]) == (1, 6)


@pytest.mark.parametrize("body", [
    "not json",
    [1, 2],
    {"action_code": 1, "customer_ids": ["C1"], "request_id": "r"},
    {"action": "X", "action_code": 9, "customer_ids": ["C1"], "request_id": "r"},
    {"action": "X", "action_code": True, "customer_ids": ["C1"], "request_id": "r"},
    {"action": "X", "action_code": 1, "customer_ids": [], "request_id": "r"},
    {"action": "X", "action_code": 1, "customer_ids": "C1", "request_id": "r"},
    {"action": "X", "action_code": 1, "customer_ids": [1], "request_id": "r"},
    {"action": "X", "action_code": 1, "customer_ids": ["C1"]},
])
def test_set_action_bad_body_is_400(body):
    with make_client() as client:
        content = body if isinstance(body, str) else json.dumps(body)
        response = client.post("/tms/v1/set-action", content=content)
        assert response.status_code == 400
        assert response.json()["error"]
        assert states(client) == {}


# customers/states


def test_states_are_paged_and_sorted():
    with make_client(seed_customers=5, states_page_size=2) as client:
        set_action(client, ["A0"])
        url = "/tms/v1/customers/states"
        pages = [client.get(url, params={"page": p}).json() for p in (1, 2, 3)]
        assert [p["next_page"] for p in pages] == [2, 3, None]
        cids = [c["cid"] for p in pages for c in p["customers"]]
        assert cids == ["A0", "C000001", "C000002", "C000003", "C000004", "C000005"]
        assert set(pages[0]["customers"][0]) == {"cid", "state", "last_action", "updated_at"}
        beyond = client.get("/tms/v1/customers/states", params={"page": 9}).json()
        assert beyond == {"customers": [], "next_page": None}
        assert client.get("/_sim/stats").json()["states_calls"] == 4


def test_states_without_page_is_first_page():
    with make_client(seed_customers=3, states_page_size=2) as client:
        answer = client.get("/tms/v1/customers/states").json()
        assert (len(answer["customers"]), answer["next_page"]) == (2, 2)


@pytest.mark.parametrize("page", ["0", "-1", "x", "1.5", ""])
def test_states_bad_page_is_400(page):
    with make_client() as client:
        response = client.get("/tms/v1/customers/states", params={"page": page})
        assert response.status_code == 400
        assert "page" in response.json()["error"]


# appstatus


def test_appstatus_batch_and_single_agree():
    cids = [f"C{n:06d}" for n in range(1, 201)]
    with make_client(seed_customers=200) as client:
        body = {"cids": cids + ["NEVER"], "app": "ALL"}
        statuses = client.post("/tms/v1/appstatus/batch", json=body).json()["statuses"]
        assert statuses["NEVER"]["status"] == "unknown"
        seen = {statuses[c]["status"] for c in cids}
        assert seen == {"healthy", "warning", "error"}
        assert [s["status"] for s in statuses.values()].count("healthy") > 100
        single = client.get("/tms/v1/appstatus/C000007", params={"app": "ALL"}).json()
        assert single == {"cid": "C000007", **statuses["C000007"]}
        assert set(single) == {"cid", "app", "status", "detail"}
        stats = client.get("/_sim/stats").json()
        assert (stats["appstatus_batch_calls"], stats["appstatus_single_calls"]) == (1, 1)
    # Deterministic: a fresh simulator says the same.
    with make_client(seed_customers=200) as client:
        again = client.post("/tms/v1/appstatus/batch", json={"cids": cids + ["NEVER"]}).json()
        assert again["statuses"] == statuses


def test_appstatus_batch_disabled_is_404():
    with make_client(appstatus_batch_enabled=False) as client:
        assert client.post("/tms/v1/appstatus/batch", json={"cids": ["C1"]}).status_code == 404
        assert client.get("/tms/v1/appstatus/C1").status_code == 200


def test_appstatus_batch_status_forces_fallback():
    with make_client(appstatus_batch_status=500) as client:
        assert client.post("/tms/v1/appstatus/batch", json={"cids": ["C1"]}).status_code == 500
        assert client.get("/tms/v1/appstatus/C1").json()["status"] == "unknown"


def test_appstatus_fail_cids():
    with make_client(seed_customers=2, appstatus_fail_cids=["C000001"]) as client:
        batch = client.post("/tms/v1/appstatus/batch", json={"cids": ["C000001", "C000002"]})
        assert list(batch.json()["statuses"]) == ["C000002"]
        assert client.get("/tms/v1/appstatus/C000001").status_code == 500
        assert client.get("/tms/v1/appstatus/C000002").status_code == 200


@pytest.mark.parametrize("body", [
    "not json", {"app": "ALL"}, {"cids": "C1"}, {"cids": [1]}, {"cids": ["C1"], "app": 3},
    {"cids": [f"C{n}" for n in range(1001)]},
])
def test_appstatus_batch_bad_body_is_400(body):
    with make_client() as client:
        content = body if isinstance(body, str) else json.dumps(body)
        response = client.post("/tms/v1/appstatus/batch", content=content)
        assert response.status_code == 400
        assert response.json()["error"]


def test_appstatus_batch_accepts_1000_cids():
    with make_client() as client:
        cids = [f"C{n}" for n in range(1000)]
        response = client.post("/tms/v1/appstatus/batch", json={"cids": cids, "app": "ALL"})
        assert len(response.json()["statuses"]) == 1000


# control routes


def test_put_knobs_partial_update():
    with make_client(latency_ms=0) as client:
        answer = client.put("/_sim/knobs", json={"failure_rate": 0.5, "fail_cids": {"C1": "x"}})
        assert answer.status_code == 200
        assert answer.json()["failure_rate"] == 0.5
        knobs = client.get("/_sim/knobs").json()
        assert (knobs["failure_rate"], knobs["fail_cids"], knobs["states_page_size"]) == (
            0.5, {"C1": "x"}, 100)


@pytest.mark.parametrize("body", [
    {"no_such_knob": 1},
    {"latency_ms": "fast"},
    {"latency_ms": -1},
    {"failure_rate": 2},
    {"set_action_status": True},
    {"set_action_status": 200},
    {"malformed": "yes"},
    {"fail_cids": ["C1"]},
    {"appstatus_fail_cids": "C1"},
    {"states_page_size": 0},
    {"failure_rate": 0.5, "states_page_size": "big"},  # all or nothing
    [1],
])
def test_put_knobs_rejects_bad_values(body):
    with make_client() as client:
        before = client.get("/_sim/knobs").json()
        response = client.put("/_sim/knobs", json=body)
        assert response.status_code == 400
        assert response.json()["error"]
        assert client.get("/_sim/knobs").json() == before


@pytest.mark.parametrize("method, path", [("PUT", "/_sim/knobs"), ("POST", "/tms/v1/set-action"),
                                          ("POST", "/tms/v1/appstatus/batch")])
def test_an_oversized_body_is_refused_unread(method, path):
    big = b'{"fail_cids": {"' + b"C" * simulator_module.MAX_BODY_BYTES + b'": "x"}}'
    with make_client() as client:
        declared = client.request(method, path, content=big)
        assert declared.status_code == 413 and "larger than" in declared.json()["error"]
        # without a Content-Length (chunked), reading stops at the limit
        streamed = client.request(method, path, content=iter([big[:1_000_000]] * 5))
        assert streamed.status_code == 413
        assert client.get("/_sim/knobs").json()["fail_cids"] == {}
        assert client.get("/_sim/stats").json()["customers_applied"] == 0


def test_put_knobs_seed_customers_adds_customers():
    with make_client() as client:
        client.put("/_sim/knobs", json={"seed_customers": 3})
        assert list(states(client)) == ["C000001", "C000002", "C000003"]


def test_reset_restores_initial_state():
    with make_client(seed_customers=2, latency_jitter_ms=1) as client:
        set_action(client, ["X1"])
        client.put("/_sim/knobs", json={"failure_rate": 1.0})
        assert client.post("/_sim/reset").status_code == 200
        assert client.get("/_sim/knobs").json()["failure_rate"] == 0.0
        assert client.get("/_sim/knobs").json()["latency_jitter_ms"] == 1
        assert list(states(client)) == ["C000001", "C000002"]
        stats = client.get("/_sim/stats").json()
        assert stats["set_action_calls"] == 0 and stats["request_ids"] == 0
        assert stats["states_calls"] == 1  # the states() call just above
        # The old request id is forgotten, so it is applied again.
        set_action(client, ["X1"])
        assert client.get("/_sim/stats").json()["duplicate_batches"] == 0


def test_simulator_on_app_state_and_reset_method():
    app = create_simulator_app(SimulatorKnobs(seed_customers=1))
    sim = app.state.simulator
    sim.knobs.failure_rate = 1.0
    sim.stats["set_action_calls"] = 7
    sim.reset()
    assert sim.knobs.failure_rate == 0.0 and sim.stats["set_action_calls"] == 0
    assert list(sim.customers) == ["C000001"]


def test_a_control_guard_closes_the_controls_only():
    async def nobody(request):
        raise HTTPException(403, "controls closed")

    app = create_simulator_app(SimulatorKnobs(), control_guard=nobody)
    with TestClient(app) as client:
        for method, path in CONTROLS:
            answer = client.request(method, path, json={"failure_rate": 1.0} if method == "PUT" else None)
            assert (answer.status_code, answer.text) == (403, "controls closed"), (method, path)
        assert app.state.simulator.knobs.failure_rate == 0.0
        # the cluster's own API is not a control: it answers as before
        assert set_action(client, ["C1"]).json() == {"success": True, "results": {"C1": {"ok": True}}}
        assert client.get("/tms/v1/appstatus/C1").status_code == 200


def test_works_mounted_under_sim():
    app = Starlette(routes=[Mount("/sim", app=create_simulator_app())])
    with TestClient(app) as client:
        body = {"action": "X", "action_code": 1, "customer_ids": ["C1"], "request_id": "r"}
        assert client.post("/sim/tms/v1/set-action", json=body).status_code == 200
        assert client.get("/sim/tms/v1/customers/states").json()["customers"][0]["cid"] == "C1"


# knobs: construction and environment


def test_knobs_validate_on_construction():
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatorKnobs(failure_rate=2)


def test_knobs_from_env_reads_values():
    knobs = knobs_from_env({
        "JOBMON_SIM_LATENCY_MS": "25",
        "JOBMON_SIM_FAILURE_RATE": "0.1",
        "JOBMON_SIM_SEED_CUSTOMERS": "50",
        "JOBMON_SIM_FAIL_CIDS": "C1=locked,C2",
        "JOBMON_SIM_APPSTATUS_FAIL_CIDS": "C3, C4",
        "JOBMON_SIM_APPSTATUS_BATCH_ENABLED": "false",
        "JOBMON_SIM_SET_ACTION_STATUS": "503",
        "JOBMON_SIM_REQUIRED_TOKEN": "tok",
        "JOBMON_SIM_HANG_SECONDS": "",  # empty means default
        "UNRELATED": "x",
    })
    assert knobs == SimulatorKnobs(
        latency_ms=25.0, failure_rate=0.1, seed_customers=50,
        fail_cids={"C1": "locked", "C2": "simulated failure"}, appstatus_fail_cids=["C3", "C4"],
        appstatus_batch_enabled=False, set_action_status=503, required_token="tok",
    )
    assert knobs_from_env({}) == SimulatorKnobs()


@pytest.mark.parametrize("name, value, expected", [
    ("JOBMON_SIM_LATENCY_MS", "fast", "non-negative number"),
    ("JOBMON_SIM_LATENCY_MS", "-5", "non-negative number"),
    ("JOBMON_SIM_FAILURE_RATE", "1.5", "from 0 to 1"),
    ("JOBMON_SIM_FAILURE_RATE", "nan", "from 0 to 1"),
    ("JOBMON_SIM_SEED_CUSTOMERS", "ten", "integer"),
    ("JOBMON_SIM_MALFORMED", "maybe", "true or false"),
    ("JOBMON_SIM_SET_ACTION_STATUS", "200", "400 to 599"),
    ("JOBMON_SIM_STATES_PAGE_SIZE", "0", "integer from 1"),
])
def test_knobs_from_env_bad_value_names_variable(name, value, expected):
    with pytest.raises(ValueError) as info:
        knobs_from_env({name: value})
    assert name in str(info.value) and expected in str(info.value)


# a real server on a loopback port


@pytest.mark.asyncio
async def test_hang_provokes_client_timeout_over_real_http():
    app = create_simulator_app(SimulatorKnobs(hang_seconds=0.3))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = {"action": "Trans-Begin", "action_code": 1, "customer_ids": ["C1"],
                    "request_id": "job:1"}
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/tms/v1/set-action", json=body, timeout=0.05)
            # Healthy again, a retry of the same batch gets an answer.
            await client.put("/_sim/knobs", json={"hang_seconds": 0})
            response = await client.post("/tms/v1/set-action", json=body, timeout=2)
            assert response.json()["results"] == {"C1": {"ok": True}}
    finally:
        server.should_exit = True
        await task

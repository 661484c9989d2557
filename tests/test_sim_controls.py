"""The embedded simulated cluster's `/sim/_sim` controls: admins only, unless in demo mode.

With no clusters file Job Monitor serves its own simulated cluster at `/sim`. Its controls change
how the cluster answers every user's jobs, so outside demo mode only an admin acting as admin may
use them; the cluster's own API, which the runner calls, stays as it was. Nothing shows or logs the
upstream token a user gives a Set Action.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from support import ROOT, LiveServer, api_error, free_port, http_client, unique

CONTROLS = [("GET", "/sim/_sim/knobs"), ("PUT", "/sim/_sim/knobs"), ("POST", "/sim/_sim/reset"),
            ("GET", "/sim/_sim/stats")]
SET_ACTION = {"action": "PE-Enable", "action_code": 2, "customer_ids": ["C1"], "request_id": "outside:1"}


def embedded_server(folder: Path, demo: bool) -> LiveServer:
    """Job Monitor with its defaults: no clusters file, so the simulated cluster is served at /sim."""
    return LiveServer({"JOBMON_DATA_DIR": str(folder / "data"),
                       "JOBMON_DATABASE_URL": f"sqlite:///{folder / 'jobmon.db'}",
                       "JOBMON_DEMO": "true" if demo else "false"})


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    """The embedded default as production runs it: not in demo mode."""
    server = embedded_server(tmp_path_factory.mktemp("sim-closed"), demo=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    server = embedded_server(tmp_path_factory.mktemp("sim-demo"), demo=True)
    yield server
    server.stop()


def simulator(server: LiveServer):
    """The SimulatedCluster object the server mounted at /sim."""
    for route in server.app.other_asgi_app.routes:
        if getattr(route, "path", None) == "/sim":
            return route.app.state.simulator
    raise AssertionError("no simulator mounted at /sim")


def use(api, method: str, path: str) -> httpx.Response:
    """One control call; the PUT tries to make every customer fail."""
    return api.http.request(method, path, json={"failure_rate": 1.0} if method == "PUT" else None)


@pytest.fixture
def quiet_cluster(closed):
    yield simulator(closed)
    simulator(closed).reset()


def test_anonymous_callers_get_401_on_every_control(closed, quiet_cluster):
    api = closed.client()
    for method, path in CONTROLS:
        assert api_error(use(api, method, path), 401)["code"] == "unauthorized", (method, path)
    api.http.headers["Authorization"] = "Bearer not-a-token-of-ours"
    for method, path in CONTROLS:
        assert api_error(use(api, method, path), 401)["code"] == "invalid_token", (method, path)
    assert quiet_cluster.knobs.failure_rate == 0.0


def test_users_and_an_admins_lesser_tokens_get_403_on_every_control(closed, quiet_cluster):
    user = closed.create_user(unique("user"))
    admin = closed.create_user(unique("admin"), role="admin")
    callers = {
        "a user's session": closed.client(user),
        "a user's write token": closed.client(token=closed.create_token(user, "write")),
        "an admin's read token": closed.client(token=closed.create_token(admin, "read")),
        "an admin's write token": closed.client(token=closed.create_token(admin, "write")),
    }
    quiet_cluster.stats["set_action_calls"] = 7  # a reset would show as 0
    for who, api in callers.items():
        for method, path in CONTROLS:
            error = api_error(use(api, method, path), 403)
            assert error["code"] == "forbidden" and "Admins only" in error["message"], (who, method, path)
    assert quiet_cluster.knobs.failure_rate == 0.0 and quiet_cluster.stats["set_action_calls"] == 7


def test_an_admin_may_use_every_control(closed, quiet_cluster):
    admin = closed.create_user(unique("admin"), role="admin")
    session = closed.client(admin)
    assert session.get("/sim/_sim/stats").status_code == 200
    assert session.get("/sim/_sim/knobs").json()["failure_rate"] == 0.0
    # a session's writes need its CSRF token, as everywhere else
    del session.http.headers["X-CSRF-Token"]
    assert api_error(session.put("/sim/_sim/knobs", json={"failure_rate": 1.0}), 403)["code"] == "csrf_failed"
    assert api_error(session.post("/sim/_sim/reset"), 403)["code"] == "csrf_failed"
    session.http.headers["X-CSRF-Token"] = session.csrf
    answer = session.put("/sim/_sim/knobs", json={"latency_ms": 5})
    assert answer.status_code == 200 and answer.json()["latency_ms"] == 5
    assert quiet_cluster.knobs.latency_ms == 5

    token = closed.client(token=closed.create_token(admin, "admin"))
    for wrong in ({"no_such_knob": 1}, {"failure_rate": "all"}, [1]):
        refused = token.put("/sim/_sim/knobs", json=wrong)
        assert refused.status_code == 400 and refused.json()["error"], wrong
    assert "no_such_knob" in token.put("/sim/_sim/knobs", json={"no_such_knob": 1}).json()["error"]
    assert token.put("/sim/_sim/knobs", content=b"{not json").status_code == 400
    assert quiet_cluster.knobs.failure_rate == 0.0
    assert token.put("/sim/_sim/knobs", json={"fail_cids": {"C2": "locked by the admin"}}).status_code == 200
    # the knob reaches the jobs: the runner's calls to the cluster are answered by it
    api = closed.client(closed.create_user(unique("user")))
    job = api.wait_for(api.start(["C1", "C2"])["job_id"])
    assert (job["status"], job["done"], job["failed"]) == ("PARTIAL", 2, 1)
    assert token.get("/sim/_sim/stats").json()["customers_applied"] == 1
    assert token.post("/sim/_sim/reset").json() == {"reset": True}
    assert token.get("/sim/_sim/knobs").json()["fail_cids"] == {} and quiet_cluster.knobs.latency_ms == 0


def test_the_clusters_own_api_needs_no_job_monitor_login(closed, quiet_cluster):
    anonymous = closed.client()
    answer = anonymous.post("/sim/tms/v1/set-action", json=SET_ACTION)
    assert answer.status_code == 200 and answer.json() == {"success": True, "results": {"C1": {"ok": True}}}
    assert anonymous.get("/sim/tms/v1/customers/states").json()["customers"][0]["cid"] == "C1"
    assert anonymous.get("/sim/tms/v1/appstatus/C1").json()["status"] in ("healthy", "warning", "error")
    assert "C1" in anonymous.post("/sim/tms/v1/appstatus/batch", json={"cids": ["C1"]}).json()["statuses"]
    api = closed.client(closed.create_user(unique("user")))
    assert api.wait_for(api.start(["C7", "C8"])["job_id"])["status"] == "SUCCESS"


def test_in_demo_mode_anyone_may_use_the_controls(demo):
    anonymous = demo.client()
    cluster = simulator(demo)
    assert anonymous.get("/sim/_sim/knobs").json()["failure_rate"] == 0.0
    changed = anonymous.put("/sim/_sim/knobs", json={"failure_rate": 1.0})
    assert changed.status_code == 200 and cluster.knobs.failure_rate == 1.0
    assert anonymous.get("/sim/_sim/stats").json()["set_action_calls"] == 0
    assert anonymous.post("/sim/_sim/reset").json() == {"reset": True}
    assert cluster.knobs.failure_rate == 0.0
    # bad input is still refused, naming the knob, and changes nothing
    refused = anonymous.put("/sim/_sim/knobs", json={"failure_rate": 2})
    assert refused.status_code == 400 and "failure_rate" in refused.json()["error"]
    assert cluster.knobs.failure_rate == 0.0


def test_no_authorization_value_in_stats_knobs_or_logs(closed, quiet_cluster, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("server", "uvicorn", "uvicorn.access", "aiohttp", "httpx"):
        caplog.set_level(logging.DEBUG, logger=name)
    secret = f"recognisable-{uuid.uuid4().hex}"
    admin = closed.client(token=closed.create_token(closed.create_user(unique("admin"), role="admin"), "admin"))
    # the cluster now refuses any call without this token: a job that succeeds shows it was forwarded
    assert admin.put("/sim/_sim/knobs", json={"required_token": secret}).json()["required_token"] == "(hidden)"
    api = closed.client(closed.create_user(unique("user")))
    denied = api.wait_for(api.start(["C1"])["job_id"])
    assert (denied["status"], denied["http_status"]) == ("FAILED", 401)
    answer = api.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": ["C2"],
                                                "upstream_token": secret})
    assert answer.status_code == 202
    assert api.wait_for(answer.json()["job"]["job_id"])["status"] == "SUCCESS"

    stats = admin.get("/sim/_sim/stats")
    knobs = admin.get("/sim/_sim/knobs")
    assert secret not in stats.text and secret not in knobs.text
    assert "last_authorization" not in stats.json() and stats.json()["authorized_calls"] == 1
    assert stats.json()["last_authorization_fingerprint"] == quiet_cluster.fingerprint(f"Bearer {secret}")
    logged = [record.getMessage() + repr(record.args) + str(record.exc_info) for record in caplog.records]
    assert logged, "nothing was captured: the check below would prove nothing"
    assert not [text for text in logged if secret in text]


def test_the_procfiles_production_start_never_opens_the_controls(tmp_path):
    """The `web:` line of the Procfile, run as a platform runs it, with JOBMON_DEMO=true left in
    the environment by mistake: the controls still answer 401."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBMON_")}
    env.update({"PORT": str(port), "JOBMON_DEMO": "true", "JOBMON_DATA_DIR": str(tmp_path / "data"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": str(ROOT)})
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        # a group of its own: the shell and the server it starts are stopped together below
        process = subprocess.Popen(["sh", "-c", line[len("web:"):].strip()], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        with http_client(base_url=url, timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the server did not become ready: " + log.read_text()
                time.sleep(0.05)
            for method, path in CONTROLS:
                answer = http.request(method, path, json={"failure_rate": 1.0} if method == "PUT" else None)
                assert api_error(answer, 401)["code"] == "unauthorized", (method, path)
            # no demo logins either
            login = http.post("/api/auth/login", json={"username": "admin", "password": "admin-password"})
            assert api_error(login, 401)["code"] == "invalid_credentials"
            assert http.post("/sim/tms/v1/set-action", json=SET_ACTION).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

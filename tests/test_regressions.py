"""Deploy regressions end to end on both backends: a cluster whose Set Actions fail more after a
deployment went live raises one `deploy_regression` job-alert (two nodes watching), naming the
deployment, both rates and the version to roll back to; too few customers or a small rise raise none.
Failures are driven with the simulated clusters' `fail_cids` knob; windows are a couple of seconds."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipelines_client import agent, report
from realtime_client import SioClient, session_cookie
from support import db_rows, finished_job

pytestmark = pytest.mark.asyncio

WINDOW = 2.0
SETTINGS = {"REGRESSION_WINDOW": str(WINDOW), "REGRESSION_RATE": "0.10", "REGRESSION_MIN_CUSTOMERS": "20"}


def go_live(api, service: str, version: str, cluster: str | None) -> dict:
    """A deployment taken through staging to production, as a CI agent reports it."""
    job = report(api, {"job_type": "deploy"})["job_id"]
    body = {"service_name": service, "version": version, **({"cluster": cluster} if cluster else {})}
    deployment = api.post("/api/dashboard/deployments", json=body).json()["deployment"]
    for step in ("staging", "production"):
        response = api.post(f"/api/dashboard/deployments/{deployment['id']}/{step}", json={"job_id": job})
        assert response.status_code == 200, response.text
    return response.json()["deployment"]


def alerts(server) -> list[tuple]:
    return db_rows(server.settings.database_url,
                   "SELECT alert_id, kind, severity, user_id, cluster, message FROM job_alerts "
                   "WHERE kind = 'deploy_regression'")


def checked(server, deployment: dict) -> bool:
    return bool(db_rows(server.settings.database_url, "SELECT regression_checked FROM deployments WHERE id = $1",
                        deployment["id"])[0][0])


async def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def cids(n: int, prefix: str = "C") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


async def test_a_failure_rate_that_rises_after_a_deployment_raises_one_alert(make_server, sim):
    first, second = make_server(**SETTINGS), make_server(**SETTINGS)  # two nodes on one database
    alice = await asyncio.to_thread(first.create_user, "alice")
    writer, ci = first.client(alice), await asyncio.to_thread(agent, first, alice)
    sockets = [await SioClient().connect(node.url, cookie=session_cookie(writer)) for node in (first, second)]
    try:
        # what was live before: the rollback target (on another cluster, so it is not judged here)
        previous = await asyncio.to_thread(go_live, ci, "billing", "4.1.0", "sim2")
        await asyncio.to_thread(finished_job, writer, cids(30))  # before: every customer succeeds
        deployment = await asyncio.to_thread(go_live, ci, "billing", "4.2.0", "sim")
        sim.knobs(fail_cids={cid: "customer locked" for cid in cids(15)})
        after = await asyncio.to_thread(finished_job, writer, cids(30))  # after: half of them fail
        assert after["failed"] == 15

        await wait_until(lambda: alerts(first), WINDOW + 8, "the deploy_regression alert")
        await wait_until(lambda: checked(first, previous), 5, "the earlier deployment's check")
        await asyncio.sleep(1.0)  # both nodes check a few more times
        (alert_id, kind, severity, user_id, cluster, message), = await asyncio.to_thread(alerts, first)
        assert (alert_id, kind, severity, user_id, cluster) == (
            f"deploy_regression:{deployment['id']}", "deploy_regression", "critical", alice["id"], "sim")
        assert f"billing 4.2.0 ({deployment['id'][:8]})" in message
        assert "50.0% in the 2 s after it went live (15 of 30 customers)" in message
        assert "0.0% in the 2 s before (0 of 30)" in message
        assert f"roll back to 4.1.0 (deployment {previous['id'][:8]})" in message

        # the owner's sockets got it once, from whichever node raised it
        received = [a for s in sockets for a in s.of("job-alert") if a["kind"] == "deploy_regression"]
        assert len(received) == 1 and received[0]["alert_id"] == alert_id and received[0]["message"] == message
        assert received[0]["job_id"] is None and received[0]["user_id"] == alice["id"]
        replayed = await SioClient().connect(first.url, cookie=session_cookie(writer))
        ack = await replayed.call("resume", {"alerts_since": deployment["live_at"]})
        assert ack["alerts"] == 2  # with the after job's job_partial
        assert [a["alert_id"] for a in replayed.of("job-alert") if a["kind"] == "deploy_regression"] == [alert_id]
        await replayed.close()
    finally:
        for client in sockets:
            await client.close()


@pytest.mark.slow  # waits for the windows to pass and the checks to run
async def test_too_few_customers_or_a_small_rise_raise_no_alert(make_server, sim, sim2):
    server = make_server(**SETTINGS)
    alice = await asyncio.to_thread(server.create_user, "alice")
    writer, ci = server.client(alice), await asyncio.to_thread(agent, server, alice)
    # sim: 40 customers before without failures, 40 after with 2 failures: a rise of 5 points
    await asyncio.to_thread(finished_job, writer, cids(40))
    # sim2: nothing before, 10 customers after, all failing: fewer than the minimum of 20
    small_rise = await asyncio.to_thread(go_live, ci, "api", "1.0", "sim")
    few = await asyncio.to_thread(go_live, ci, "web", "1.0", "sim2")
    sim.knobs(fail_cids={"C0003": "locked", "C0017": "locked"})
    sim2.knobs(fail_cids={cid: "down" for cid in cids(10)})
    assert (await asyncio.to_thread(finished_job, writer, cids(40)))["failed"] == 2
    assert (await asyncio.to_thread(finished_job, writer, cids(10), "sim2"))["failed"] == 10
    await wait_until(lambda: checked(server, small_rise) and checked(server, few), WINDOW + 8, "both checks")
    await asyncio.sleep(0.5)
    assert await asyncio.to_thread(alerts, server) == []

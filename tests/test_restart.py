"""A job survives its server: kill -9 mid-job, start again, the job finishes, no batch applied twice."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from support import SubprocessServer, ThreadedServer, database_url, db_rows, users_with_tokens, write_clusters_file

CUSTOMERS = 200
BATCH_SIZE = 10
BATCH_CONCURRENCY = 2


class AnswerLosingProxy:
    """Forwards calls to the cluster; while `losing`, the cluster's answers never come back.

    A batch sent then has been applied (acknowledged) by the cluster, but the server cannot
    have recorded it: exactly what a crash between the cluster's answer and the commit leaves.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.losing = False
        self.stopping = False
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT"])])
        self.server = ThreadedServer(app).start()
        self.url = self.server.url

    async def forward(self, request: Request) -> Response:
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            answer = await client.request(request.method, request.url.path, params=request.query_params,
                                          content=await request.body(),
                                          headers={"content-type": request.headers.get("content-type", "")})
        while self.losing and not self.stopping:
            await asyncio.sleep(0.05)  # until the server that asked is dead (the test kills it)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    def stop(self) -> None:
        self.stopping = True
        self.server.stop()


@pytest.mark.slow
def test_killed_server_finishes_the_job_after_a_restart(backend, tmp_path, sim):
    url, handle = database_url(backend, tmp_path)
    env = {
        "JOBMON_DATABASE_URL": url,
        "JOBMON_DATA_DIR": str(tmp_path / "data"),
        "JOBMON_BATCH_SIZE": str(BATCH_SIZE),
        "JOBMON_BATCH_CONCURRENCY": str(BATCH_CONCURRENCY),
        "JOBMON_LEASE_SECONDS": "1",
        "JOBMON_LOG_LEVEL": "WARNING",
    }
    servers: list[SubprocessServer] = []
    proxy = AnswerLosingProxy(sim.url)
    env["JOBMON_CLUSTERS_FILE"] = str(write_clusters_file(tmp_path / "clusters.json", {"sim": proxy.url}))
    try:
        [(_, token)] = users_with_tokens(url, ["alice"])
        headers = {"Authorization": f"Bearer {token}"}
        sim.knobs(latency_ms=30)
        first = SubprocessServer(env)
        servers.append(first.start())
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as http:
            answer = http.post("/api/set-actions", json={
                "cluster": "sim", "action": "Trans-Begin", "cids": [f"K{i:04d}" for i in range(CUSTOMERS)]})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job"]["job_id"]
            while http.get(f"/api/jobs/{job_id}").json()["job"]["done"] < 40:
                time.sleep(0.02)
        # from now on the cluster applies the batches but its answers are lost
        proxy.losing = True
        calls = sim.stats()["set_action_calls"]
        while sim.stats()["set_action_calls"] < calls + BATCH_CONCURRENCY:
            time.sleep(0.01)
        first.kill()
        assert first.process.returncode == -9
        while (at_kill := sim.stats()) != (time.sleep(0.3) or sim.stats()):
            pass  # calls the proxy was still forwarding have landed
        recorded = db_rows(url, "SELECT done FROM jobs")[0][0]
        assert 40 <= recorded < CUSTOMERS and recorded % BATCH_SIZE == 0
        unrecorded = at_kill["set_action_calls"] - recorded // BATCH_SIZE
        assert at_kill["customers_applied"] == recorded + unrecorded * BATCH_SIZE and unrecorded >= 1
        proxy.losing = False
        sim.knobs(latency_ms=0)

        second = SubprocessServer(env)
        servers.append(second.start())
        with httpx.Client(base_url=second.url, headers=headers, timeout=10) as http:
            deadline = time.monotonic() + 30
            while (job := http.get(f"/api/jobs/{job_id}").json()["job"])["status"] not in (
                    "SUCCESS", "FAILED", "PARTIAL", "CANCELLED"):
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
            assert (job["status"], job["done"], job["failed"]) == ("SUCCESS", CUSTOMERS, 0)
            assert job["attempts"] == 2  # claimed by the first server, then by the second
            customers = http.get(f"/api/jobs/{job_id}/customers", params={"limit": 5000}).json()["customers"]
            assert len(customers) == CUSTOMERS and {c["status"] for c in customers} == {"SUCCESS"}

        stats = sim.stats()
        batches = CUSTOMERS // BATCH_SIZE
        # every customer was applied exactly once, though some batches were sent twice
        assert stats["customers_applied"] == CUSTOMERS, stats
        # only the batches whose answer was lost were sent again, and the cluster dropped them by request_id
        assert stats["duplicate_batches"] == unrecorded, stats
        assert stats["set_action_calls"] == batches + stats["duplicate_batches"], stats
        events = db_rows(url, "SELECT event_id FROM job_events ORDER BY event_id")
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
    finally:
        for server in servers:
            server.stop()
        proxy.stop()
        if handle is not None:
            handle.drop()

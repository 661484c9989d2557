"""The official JavaScript client (socket.io-client from npm, under Node) against a live server.

The client lives in tests/js (package.json + package-lock.json); `make setup` installs it with
`npm ci --prefix tests/js`, and this test does the same when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

from realtime_client import session_cookie
from support import IN_CI, ROOT, missing

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

JS_DIR = ROOT / "tests" / "js"


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None or shutil.which("npm") is None:
        missing("Node.js and npm are not installed (apt-get install -y nodejs npm)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR,
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            (pytest.fail if IN_CI else pytest.skip)(f"npm ci in tests/js failed: {result.stderr[-2000:]}")
    return path


class NodeClient:
    """tests/js/client.mjs as a subprocess: JSON lines out, commands in."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[dict] = []
        self._reader = asyncio.create_task(self._read())
        self._next_id = 0

    @classmethod
    async def start(cls, node: str, **options) -> "NodeClient":
        process = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "client.mjs"), json.dumps(options), cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def _read(self) -> None:
        async for line in self.process.stdout:
            self.lines.append(json.loads(line))

    async def wait_for(self, predicate, timeout: float = 15, what: str = "a line") -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in self.lines:
                if predicate(line):
                    return line
            if asyncio.get_running_loop().time() > deadline:
                stderr = (await self.process.stderr.read()).decode() if self.process.returncode is not None else ""
                raise AssertionError(f"no {what}: {self.lines[-10:]} {stderr}")
            await asyncio.sleep(0.02)

    async def call(self, event: str, data=None) -> dict:
        self._next_id += 1
        command_id = self._next_id
        self.process.stdin.write((json.dumps({"id": command_id, "emit": event, "data": data}) + "\n").encode())
        await self.process.stdin.drain()
        line = await self.wait_for(lambda x: x["type"] == "ack" and x["id"] == command_id, what=f"ack of {event}")
        return line["data"]

    def events(self, name: str) -> list:
        return [x["data"] for x in self.lines if x["type"] == "event" and x["name"] == name]

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                self.process.stdin.write(b'{"quit": true}\n')
                await self.process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


async def test_the_official_javascript_client_connects_subscribes_and_gets_live_updates(node, server, alice, bob,
                                                                                        sim):
    alice_api, bob_api = server.client(alice), server.client(bob)
    token = await asyncio.to_thread(server.create_token, alice, "read")
    bobs_job = await asyncio.to_thread(bob_api.start, ["C9"])

    # a browser-like client: cookie, long-polling first, then the upgrade to WebSocket
    browser = await NodeClient.start(node, url=server.url, cookie=session_cookie(alice_api))
    wallboard = await NodeClient.start(node, url=server.url, token=token, transports=["websocket"])
    refused = await NodeClient.start(node, url=server.url, token="jm_wrong")
    try:
        await browser.wait_for(lambda x: x["type"] == "connect", what="the browser client to connect")
        await wallboard.wait_for(lambda x: x["type"] == "connect", what="the wallboard to connect")
        error = await refused.wait_for(lambda x: x["type"] == "connect_error", what="a refusal")
        assert error["message"] == "Invalid or revoked API token" and error["data"] == {"code": "invalid_token"}

        job = await asyncio.to_thread(alice_api.start, ["C1", "C2", "C3"])
        assert await browser.call("subscribe", {"job_id": job["job_id"]}) == {"ok": True}
        denied = await browser.call("subscribe", {"job_id": bobs_job["job_id"]})
        assert denied["error"]["status"] == 403
        for client in (browser, wallboard):
            await client.wait_for(lambda x: x["type"] == "event" and x["name"] == "job-update"
                                  and x["data"]["job"]["status"] == "SUCCESS", what="the final job-update")
            updates = client.events("job-update")
            assert [u["event_id"] for u in updates] == list(range(1, len(updates) + 1))
            assert {u["job"]["job_id"] for u in updates} == {job["job_id"]}
            await client.wait_for(lambda x: x["type"] == "event" and x["name"] == "job-stats"
                                  and x["data"]["counts"]["SUCCESS"] == 1, what="job-stats")
        stats = await wallboard.call("get-stats")
        assert stats["user_id"] == alice["id"] and stats["counts"]["SUCCESS"] == 1
        live = wallboard.events("job-update")
        replay = await wallboard.call("resume", {"last_event_id": 1})
        assert replay["replayed"] == len(live) - 1
        assert wallboard.events("job-update")[len(live):] == live[1:], "replayed before the ack, in order"
        assert (await wallboard.call("no-such-event", {}))["error"]["code"] == "unknown_event"
    finally:
        for client in (browser, wallboard, refused):
            await client.close()


async def test_the_official_javascript_client_gets_pipeline_updates_of_its_own_user_only(node, server, alice, bob):
    from pipelines_client import BUILD, JOBS

    alice_agent = server.client(token=await asyncio.to_thread(server.create_token, alice, "agent"))
    bob_agent = server.client(token=await asyncio.to_thread(server.create_token, bob, "agent"))
    listener = await NodeClient.start(node, url=server.url, token=await asyncio.to_thread(server.create_token, alice,
                                                                                           "read"),
                                      transports=["websocket"])
    try:
        await listener.wait_for(lambda x: x["type"] == "connect", what="the client to connect")
        subscribed = await listener.call("subscribe", {"dashboard": True})
        assert subscribed["ok"] is True and subscribed["summary"]["jobs_running"] == 0
        bobs = (await asyncio.to_thread(bob_agent.post, JOBS, json=BUILD)).json()["job"]
        mine = (await asyncio.to_thread(alice_agent.post, JOBS, json={**BUILD, "agent_id": "ci-7"})).json()["job"]
        done = await asyncio.to_thread(alice_agent.http.patch, f"{JOBS}/{mine['job_id']}/complete",
                                       json={"exit_code": 0})
        await listener.wait_for(lambda x: x["type"] == "event" and x["name"] == "pipeline-update"
                                and x["data"]["job"]["status"] == "success", what="the job's success")
        updates = listener.events("pipeline-update")
        assert [(u["event_id"], u["kind"]) for u in updates] == [(1, "created"), (2, "status")]
        assert updates[0]["job"] == mine and updates[1]["job"] == done.json()["job"]
        assert all(u["job"]["job_id"] != bobs["job_id"] for u in updates)
        await listener.wait_for(lambda x: x["type"] == "event" and x["name"] == "dashboard-summary"
                                and x["data"]["recent_jobs"] == [], what="the summary after the job finished")
        replay = await listener.call("resume", {"last_event_id": 0})
        assert replay["replayed"] == 2 and listener.events("pipeline-update")[2:] == updates
    finally:
        await listener.close()

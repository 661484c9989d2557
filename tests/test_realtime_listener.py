"""The listener CLI (`python -m server listen`) as a real subprocess against a live server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from support import ROOT

# the listener runs as a subprocess, started and stopped several times; its alerts count every user's batches
pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.own_server]


class ListenerProcess:
    """`python -m server listen ...`, with its JSON lines read as they come."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[dict] = []
        self.stderr: list[str] = []
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, url: str, token: str, *extra: str) -> "ListenerProcess":
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "listen", "--url", url, "--token", token, *extra,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def _read_stdout(self) -> None:
        async for line in self.process.stdout:
            self.lines.append(json.loads(line))

    async def _read_stderr(self) -> None:
        async for line in self.process.stderr:
            self.stderr.append(line.decode())

    async def wait_for(self, predicate, timeout: float = 20, what: str = "a line"):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := [x for x in self.lines if predicate(x)]):
            if asyncio.get_running_loop().time() > deadline or self.process.returncode is not None:
                raise AssertionError(f"no {what}; stdout {self.lines}, stderr {''.join(self.stderr)[-3000:]}")
            await asyncio.sleep(0.02)
        return found

    async def wait_log(self, text: str, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in line for line in self.stderr):
            if asyncio.get_running_loop().time() > deadline or self.process.returncode is not None:
                raise AssertionError(f"no log line with {text!r}: {''.join(self.stderr)[-3000:]}")
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout=15)
        await asyncio.gather(*self._tasks)
        return code


async def test_the_listener_prints_alerts_as_json_lines_and_catches_up_after_a_restart(server, alice, sim, tmp_path):
    api = server.client(alice)
    token = await asyncio.to_thread(server.create_token, alice, "read")
    state = tmp_path / "listener-state.json"
    listener = await ListenerProcess.start(server.url, token, "--state-file", str(state))
    try:
        await listener.wait_log("resumed")
        sim.knobs(set_action_status=500)
        failed = await asyncio.to_thread(api.start, ["C1", "C2"])
        alert = (await listener.wait_for(lambda x: x["event"] == "job-alert", what="an alert"))[0]["data"]
        assert alert["kind"] == "job_failed" and alert["job_id"] == failed["job_id"]
        assert alert["severity"] == "critical" and "failed" in alert["message"]
        assert {"alert_id", "severity", "kind", "job_id", "message", "at"} <= set(alert)
        assert not [x for x in listener.lines if x["event"] != "job-alert"], "no job-updates without --all"
    finally:
        assert await listener.stop() == 0

    # while no listener runs, another job fails; the next one (same state file) prints it, once
    missed = await asyncio.to_thread(api.start, ["C3"])
    await asyncio.to_thread(api.wait_for, missed["job_id"])
    sim.knobs(set_action_status=None)
    listener = await ListenerProcess.start(server.url, token, "--state-file", str(state), "--all")
    try:
        found = await listener.wait_for(lambda x: x["event"] == "job-alert", what="the missed alert")
        assert [x["data"]["job_id"] for x in found] == [missed["job_id"]]
        ok = await asyncio.to_thread(api.start, ["C4"])
        updates = await listener.wait_for(
            lambda x: x["event"] == "job-update" and x["data"]["job"]["job_id"] == ok["job_id"]
            and x["data"]["job"]["status"] == "SUCCESS", what="job-updates with --all")
        ids = [x["data"]["event_id"] for x in listener.lines if x["event"] == "job-update"]
        assert ids == sorted(set(ids)) and updates
        await listener.wait_for(lambda x: x["event"] == "job-stats", what="job-stats with --all")
        assert len([x for x in listener.lines if x["event"] == "job-alert"]) == 1
    finally:
        assert await listener.stop() == 0


async def test_the_listener_exits_2_on_a_refused_token_and_retries_an_unreachable_server(server, alice, sim):
    refused = await ListenerProcess.start(server.url, "jm_wrong-token")
    assert await asyncio.wait_for(refused.process.wait(), timeout=20) == 2
    await refused.stop()
    assert any("refused the token" in line for line in refused.stderr)

    unreachable = await ListenerProcess.start("http://127.0.0.1:9", "jm_whatever")
    try:
        await unreachable.wait_log("trying again in 1.0 seconds")
        await unreachable.wait_log("trying again in 2.0 seconds", timeout=10)
    finally:
        assert await unreachable.stop() == 0

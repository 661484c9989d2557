"""Periodic `job-stats`: every 5 s by default to connected sockets, with no event needed; figures
recomputed only for users whose jobs changed (their event counter moved, on any node), so a
connected user whose jobs are idle costs no query."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_client import SioClient, db_write, session_cookie
from server.config import load_settings
from support import BACKENDS



class StatsRecorder(SioClient):
    """A client that also notes when each job-stats arrived."""

    def __init__(self):
        super().__init__()
        self.stats: list[tuple[float, dict]] = []
        self.sio.on("job-stats", self._stats)

    async def _stats(self, data) -> None:
        self.stats.append((time.monotonic(), data))

    async def next_stats(self, count: int, timeout: float) -> list[dict]:
        """Wait for `count` more job-stats; return them."""
        start = len(self.stats)
        await self.wait_for(lambda: len(self.stats) >= start + count, timeout=timeout, what=f"{count} job-stats")
        return [data for _, data in self.stats[start:start + count]]


def test_the_default_interval_is_five_seconds(tmp_path):
    settings = load_settings({"JOBMON_DATA_DIR": str(tmp_path)})
    assert settings.stats_interval == 5.0


@pytest.mark.asyncio
@pytest.mark.slow  # waits for the 5 s interval
@pytest.mark.own_server
@pytest.mark.parametrize("backend", ["sqlite"])  # the clock, not the database, is under test
async def test_a_connected_dashboard_gets_job_stats_every_five_seconds_without_events(server):
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    client = await StatsRecorder().connect(server.url, cookie=session_cookie(api))
    try:
        await client.next_stats(2, timeout=15)
        gaps = [later - earlier for (earlier, _), (later, _) in zip(client.stats, client.stats[1:])]
        assert len(gaps) == 1 and 4.5 <= gaps[0] <= 6.0, gaps
        figures = [data for _, data in client.stats]
        assert all(f["user_id"] == alice["id"] and f["counts"]["SUCCESS"] == 0 for f in figures)
        assert [f["as_of"] for f in figures] == sorted({f["as_of"] for f in figures})  # fresh each time
    finally:
        await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_idle_users_figures_are_not_read_again_until_their_jobs_change(make_server, sim):
    server = make_server(STATS_INTERVAL="0.1")
    alice = await asyncio.to_thread(server.create_user, "alice")
    root = await asyncio.to_thread(server.create_user, "root", "admin")
    api = server.client(alice)
    await asyncio.to_thread(lambda: api.wait_for(api.start(["S1"])["job_id"]))
    mine = await StatsRecorder().connect(server.url, cookie=session_cookie(api))
    everyone = await StatsRecorder().connect(server.url, cookie=session_cookie(server.client(root)))
    try:
        both = (mine, everyone)
        await asyncio.gather(*(client.wait_for(lambda c=client: c.stats and c.stats[-1][1]["counts"]["SUCCESS"] == 1,
                                               what="the first figures") for client in both))
        # past the change-triggered push of the job's end (coalesced: up to half a second later)
        await asyncio.gather(*(client.next_stats(6, timeout=10) for client in both))
        # the figures change in the database, but no job event says so: the periodic pushes send the
        # figures computed before (with a new as_of), without reading them again
        await asyncio.to_thread(db_write, server, "UPDATE job_counts SET n = n + 100 "
                                f"WHERE user_id = {alice['id']} AND status = 'SUCCESS'")
        for later in await asyncio.gather(*(client.next_stats(5, timeout=10) for client in both)):
            assert [f["counts"]["SUCCESS"] for f in later] == [1] * 5
            assert [f["as_of"] for f in later] == sorted({f["as_of"] for f in later})
        # a job event of alice's (here written as another node would) makes both read them again
        await asyncio.to_thread(db_write, server, "UPDATE event_counters SET last_event_id = last_event_id + 1 "
                                f"WHERE user_id = {alice['id']}")
        await asyncio.gather(*(client.wait_for(lambda c=client: c.stats[-1][1]["counts"]["SUCCESS"] == 101,
                                               timeout=10, what="the figures read again") for client in both))
        assert {f["user_id"] for _, f in mine.stats} == {alice["id"]}
        assert {f["user_id"] for _, f in everyone.stats} == {None}
    finally:
        await mine.close()
        await everyone.close()

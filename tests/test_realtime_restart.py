"""A server killed (SIGKILL) and started again: clients that resume have lost nothing."""

from __future__ import annotations

import asyncio

import pytest

from realtime_client import SioClient
from support import Api, SubprocessServer, database_url, db_rows, free_port, users_with_tokens, write_clusters_file

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_after_a_kill_and_restart_resuming_clients_get_every_event_once_in_order(backend, tmp_path, sim):
    url, database = await asyncio.to_thread(database_url, backend, tmp_path)
    clusters = write_clusters_file(tmp_path / "clusters.json", {"sim": sim.url})
    env = {"JOBMON_DATABASE_URL": url, "JOBMON_DATA_DIR": str(tmp_path / "data"),
           "JOBMON_CLUSTERS_FILE": str(clusters), "JOBMON_LEASE_SECONDS": "1", "JOBMON_BATCH_CONCURRENCY": "1",
           "JOBMON_LOG_LEVEL": "WARNING"}
    port = free_port()
    [(user, token)] = await asyncio.to_thread(users_with_tokens, url, ["alice"])
    first = await asyncio.to_thread(SubprocessServer(env, port).start)
    second = None
    api = Api(first.url)
    api.http.headers["Authorization"] = f"Bearer {token}"
    browser = SioClient(reconnect=True, resume=True)  # reconnects by itself and resumes, like the web page
    late = SioClient()
    try:
        await browser.connect(first.url, token=token)
        sim.knobs(latency_ms=60)
        job = await asyncio.to_thread(api.start, [f"C{i}" for i in range(4000)])  # 40 batches, 2.5 s or more
        await browser.wait_for(lambda: len(browser.updates()) >= 3, what="events before the kill")
        await late.connect(first.url, token=token)
        await late.wait_for(lambda: len(late.updates()) >= 1, what="late client's first event")
        await late.close()  # this one stays away until well after the restart
        seen_by_late = late.updates()

        await asyncio.to_thread(first.kill)
        second = await asyncio.to_thread(SubprocessServer(env, port).start)
        # the job resumes on the new process once its lease expires
        await asyncio.to_thread(api.wait_for, job["job_id"], ("IN_PROGRESS",))
        await browser.wait_for(lambda: browser.finished(job["job_id"]), timeout=60, what="the job to finish")
        assert browser.connects >= 2 and browser.resume_acks and "error" not in browser.resume_acks[0]

        late = SioClient()
        await late.connect(second.url, token=token)
        ack = await late.call("resume", {"last_event_id": seen_by_late[-1]["event_id"]})
        assert ack["replayed"] >= 3, "the late client missed events on both sides of the restart"

        expected = [(r[0], r[1]) for r in await asyncio.to_thread(
            db_rows, url, "SELECT event_id, kind FROM job_events WHERE user_id = $1 ORDER BY event_id", user["id"])]
        assert [(u["event_id"], u["kind"]) for u in browser.updates()] == expected
        joined_at = seen_by_late[0]["event_id"]  # it connected mid-job: live from then on
        assert [(u["event_id"], u["kind"]) for u in seen_by_late + late.updates()] == expected[joined_at - 1:]
        assert browser.updates()[-1]["job"]["status"] == "SUCCESS"
        assert browser.updates()[-1]["job"]["done"] == 4000
    finally:
        await browser.close()
        await late.close()
        api.close()
        for process in (first, second):
            if process is not None:
                await asyncio.to_thread(process.stop)
        if database is not None:
            await asyncio.to_thread(database.drop)

"""Replay (`resume`) and progress pacing over real sockets: every event once, in order."""

from __future__ import annotations

import asyncio

import pytest

from realtime_client import CIDS, SioClient, db_write, session_cookie, start, user_events

pytestmark = pytest.mark.asyncio


# -- replay --------------------------------------------------------------------------------
@pytest.mark.slow  # a 3,000-customer job
async def test_a_client_that_misses_events_gets_each_once_in_order_after_resume(make_server, sim):
    server = make_server(BATCH_CONCURRENCY="1")
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    sim.knobs(latency_ms=60)
    first = await SioClient().connect(server.url, cookie=session_cookie(api))
    job = await start(api, [f"C{i}" for i in range(3000)])  # 30 batches, about 2 s
    await first.wait_for(lambda: len(first.updates()) >= 4, what="a few progress events")
    await first.close()
    seen = first.updates()
    await asyncio.sleep(0.6)  # events go on meanwhile
    second = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        ack = await second.call("resume", {"last_event_id": seen[-1]["event_id"]})
        assert ack["replayed"] >= 1 and ack["last_event_id"] >= seen[-1]["event_id"] + 1
        await second.wait_finished(job["job_id"])
        combined = seen + second.updates()
        ids = [u["event_id"] for u in combined]
        assert ids == list(range(1, ids[-1] + 1)), "every event once, in order"
        assert [(u["event_id"], u["kind"]) for u in combined] == await user_events(server, alice["id"])
        dones = [u["job"]["done"] for u in combined]
        assert dones == sorted(dones) and dones[-1] == 3000
    finally:
        await second.close()


async def test_resume_while_events_flow_never_duplicates_or_reorders(make_server, sim):
    server = make_server(BATCH_CONCURRENCY="2")
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    sim.knobs(latency_ms=10)
    client = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        jobs = [await start(api, [f"C{i}" for i in range(1500)]) for _ in range(3)]
        cuts = []
        deadline = asyncio.get_running_loop().time() + 30
        while not all(client.finished(j["job_id"]) for j in jobs):
            assert asyncio.get_running_loop().time() < deadline, [api.job(j["job_id"]) for j in jobs]
            # resume from a point in the past, again and again, while the jobs write events
            cut = max(0, client.last_event_id() - 3)
            ack = await client.call("resume", {"last_event_id": cut})
            cuts.append((cut, ack))
            assert "error" not in ack
            ids = [u["event_id"] for u in client.updates()]
            # everything after the cut came again, once, in order
            tail = ids[len(ids) - (ids[::-1].index(cut + 1)) - 1:] if cut + 1 in ids else []
            assert tail == sorted(set(tail))
            await asyncio.sleep(0.05)
        final = (await user_events(server, alice["id"]))[-1][0]
        await client.wait_for(lambda: client.last_event_id() == final)
        # apart from the replays asked for, the stream is exactly the database's, in order
        unique = []
        for update in client.updates():
            if not unique or update["event_id"] > unique[-1]:
                unique.append(update["event_id"])
        assert unique == [e for e, _ in await user_events(server, alice["id"])]
        assert len(cuts) >= 3
    finally:
        await client.close()


async def test_resume_edges_resync_instead_of_guessing(server, alice, admin, sim, monkeypatch):
    import server.realtime.namespace as realtime

    api = server.client(alice)
    for _ in range(3):
        await asyncio.to_thread(api.wait_for, (await start(api, CIDS[:1]))["job_id"])
    total = (await user_events(server, alice["id"]))[-1][0]
    client = await SioClient().connect(server.url, cookie=session_cookie(api))
    root = await SioClient().connect(server.url, cookie=session_cookie(server.client(admin)))
    try:
        assert await client.call("resume", {"last_event_id": total}) == {"replayed": 0, "last_event_id": total}
        assert await client.call("resume", {"last_event_id": total + 100}) == {
            "recovered": False, "reason": "unknown_event_id"}
        await client.wait_for(lambda: client.of("resync"), what="resync")
        assert client.of("resync")[-1] == {"reason": "unknown_event_id"}

        monkeypatch.setattr(realtime, "REPLAY_LIMIT", total - 2)
        assert (await client.call("resume", {"last_event_id": 0}))["reason"] == "too_many_missed_events"
        monkeypatch.undo()

        # events past the retention window are gone: the client must refetch
        await asyncio.to_thread(db_write, server,
                                f"DELETE FROM job_events WHERE event_id <= 2 AND user_id = {alice['id']}")
        assert (await client.call("resume", {"last_event_id": 1}))["reason"] == "events_expired"
        assert (await client.call("resume", {"last_event_id": 2}))["replayed"] == total - 2

        # an admin replays their own events and is told to refetch everyone else's
        ack = await root.call("resume", {"last_event_id": 0})
        assert ack == {"replayed": 0, "last_event_id": 0, "recovered": False, "reason": "admin_view"}
        await root.wait_for(lambda: root.of("resync"), what="admin resync")
    finally:
        await client.close()
        await root.close()


# -- progress pacing -----------------------------------------------------------------------
@pytest.mark.slow  # a 2,000-customer job, timed
async def test_progress_is_paced_but_shown_at_least_every_half_second(make_server, sim):
    server = make_server(BATCH_SIZE="10", BATCH_CONCURRENCY="4")
    alice = await asyncio.to_thread(server.create_user, "alice")
    api = server.client(alice)
    a = await SioClient().connect(server.url, cookie=session_cookie(api))
    try:
        sim.knobs(latency_ms=20)
        arrivals = []
        a.sio.on("job-update", lambda data: arrivals.append((asyncio.get_running_loop().time(), data)))
        job = await start(api, [f"C{i}" for i in range(2000)])  # 200 batches
        await a.wait_for(lambda: any(d["job"]["status"] in ("SUCCESS",) for _, d in arrivals), timeout=30)
        progress = [(t, d) for t, d in arrivals if d["kind"] == "progress"]
        started = next(t for t, d in arrivals if d["job"]["status"] == "IN_PROGRESS")
        finished = arrivals[-1][0]
        assert len(progress) < 200 / 4, "far fewer progress events than batches"
        assert len(progress) <= (finished - started) / 0.25 + 3
        times = [started] + [t for t, _ in progress] + [finished]
        assert max(b - a for a, b in zip(times, times[1:])) < 0.6, "progress shown at least every 500 ms"
        dones = [d["job"]["done"] for _, d in progress]
        assert dones == sorted(dones) and arrivals[-1][1]["job"]["done"] == 2000
        assert [d["event_id"] for _, d in arrivals] == list(range(1, len(arrivals) + 1))
        assert job["job_id"] == arrivals[-1][1]["job"]["job_id"]
    finally:
        await a.close()

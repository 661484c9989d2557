"""Events the bus lost reach the other nodes' sockets: two nodes on PostgreSQL and a Redis of the test's
own, which the test kills and starts again empty, or cuts off one node from (a TCP proxy reset, and a
silent network that passes nothing). Every status of a job run meanwhile reaches the sockets on the
other node, in order and once, with fresh job-stats (realtime/catchup.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from pipelines_client import report
from realtime_client import SioClient, session_cookie, user_events
from support import OwnRedis, free_port, require_postgres

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

CIDS = ["C1", "C2", "C3"]


@pytest.fixture
def backend():
    """Several nodes need a shared database server: PostgreSQL (a one-node test picks SQLite itself)."""
    require_postgres()
    return "postgres"


@pytest.fixture
def redis():
    server = OwnRedis().start()
    yield server
    server.kill()


class CuttableProxy:
    """A TCP proxy in front of Redis for one node: `cut()` resets its connections and refuses new ones
    until `restore()`; `freeze()` keeps them open but passes nothing (a silent network; with
    `subscriptions_only`, only the long-idle subscriber connections, as when a NAT forgets them)
    until `thaw()`."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.frozen: str | None = None  # None, "all", or "subscriptions"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        connection = {"subscriber": False}
        for task in (asyncio.create_task(self._pipe(reader, up_writer, connection, outbound=True)),
                     asyncio.create_task(self._pipe(up_reader, writer, connection, outbound=False))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: dict, *,
                    outbound: bool) -> None:
        try:
            while data := await reader.read(65536):
                if outbound and b"SUBSCRIBE" in data.upper():
                    connection["subscriber"] = True
                while self.frozen == "all" or (self.frozen == "subscriptions" and connection["subscriber"]):
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    async def cut(self) -> None:
        """A proxy reset: every connection through it dies at once, and new ones are refused."""
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    def freeze(self, *, subscriptions_only: bool = False) -> None:
        self.frozen = "subscriptions" if subscriptions_only else "all"

    def thaw(self) -> None:
        self.frozen = None

    async def close(self) -> None:
        self.thaw()
        with contextlib.suppress(Exception):
            await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def node_env(redis_url: str, channel: str, **extra) -> dict:
    # job-stats only from changes and catching up during the test (the periodic push would hide a miss)
    return {"REDIS_URL": redis_url, "REDIS_CHANNEL": channel, "STATS_INTERVAL": "600", **extra}


def seen(client: SioClient, user_id: int) -> list[tuple[int, str]]:
    """(event_id, kind) of the logged events (job-, pipeline-, deployment-update) of one user that a
    socket got, in arrival order."""
    return [(data["event_id"], data["kind"]) for name, data in client.events
            if name in ("job-update", "pipeline-update", "deployment-update")
            and (data.get("job") or data.get("deployment"))["user_id"] == user_id]


def statuses(client: SioClient, job_id: str) -> list[str]:
    return [u["job"]["status"] for u in client.updates(job_id)]


async def finished_on(api, job_id: str) -> dict:
    return await asyncio.to_thread(api.wait_for, job_id)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_node_that_hears_nothing_from_redis_catches_its_own_sockets_up(make_server, redis, sim):
    """One node, SQLite: its publishes reach Redis, but its subscription's connection passes nothing (a
    NAT or firewall forgot the long-idle connection). The periodic sweep delivers every event, in order,
    once; when the held messages arrive at last they are not delivered again."""
    proxy = await CuttableProxy(redis.port).start()
    node = make_server(**node_env(proxy.url, f"test-{uuid.uuid4().hex[:8]}", CATCHUP_INTERVAL="0.2"))
    alice = await asyncio.to_thread(node.create_user, "alice")
    api = node.client(alice)
    socket = await SioClient().connect(node.url, cookie=session_cookie(api))
    try:
        proxy.freeze(subscriptions_only=True)
        job = await asyncio.to_thread(api.start, CIDS)
        build = await asyncio.to_thread(report, api)  # a CI/CD agent's job, in the same event sequence
        assert (await socket.wait_finished(job["job_id"], timeout=10))["status"] == "SUCCESS"
        await socket.wait_for(lambda: socket.of("pipeline-update"), what="the pipeline job")
        assert seen(socket, alice["id"]) == await user_events(node, alice["id"])
        assert socket.of("pipeline-update")[0]["job"]["job_id"] == build["job_id"]
        proxy.thaw()
        after = await asyncio.to_thread(api.start, CIDS)
        await socket.wait_finished(after["job_id"])
        assert seen(socket, alice["id"]) == await user_events(node, alice["id"])
        assert socket.of("resync") == []
    finally:
        await socket.close()
        await proxy.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_node_that_missed_too_many_events_tells_its_sockets_to_resync(make_server, redis, sim):
    """Past GAP_FILL_LIMIT events missed (here an agent's heartbeats, reported on node A while node B
    was cut off), catching up sends `resync` instead of replaying them all; the socket then goes on
    live from the next event."""
    from server.realtime.fanout import GAP_FILL_LIMIT

    channel = f"test-{uuid.uuid4().hex[:8]}"
    proxy = await CuttableProxy(redis.port).start()
    node_a = make_server(**node_env(redis.url, channel, CATCHUP_INTERVAL="0"))
    node_b = make_server(**node_env(proxy.url, channel, CATCHUP_INTERVAL="0"))
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    api = node_a.client(alice)
    on_b = await SioClient().connect(node_b.url, cookie=session_cookie(api))
    try:
        build = await asyncio.to_thread(report, api)
        await on_b.wait_for(lambda: on_b.of("pipeline-update"), what="the pipeline job")
        await proxy.cut()

        def heartbeats() -> None:
            for _ in range(GAP_FILL_LIMIT + 1):
                assert api.http.patch(f"/api/dashboard/jobs/{build['job_id']}", json={}).status_code == 200

        await asyncio.to_thread(heartbeats)
        await proxy.restore()
        resync = await on_b.wait_for(lambda: on_b.of("resync"), what="resync")
        assert resync == [{"reason": "events_lost"}] and len(on_b.of("pipeline-update")) == 1
        assert api.http.patch(f"/api/dashboard/jobs/{build['job_id']}", json={"status": "running"}).status_code == 200
        await on_b.wait_for(lambda: on_b.of("pipeline-update")[-1]["job"]["status"] == "running",
                            what="live again")
        assert len(on_b.of("pipeline-update")) == 2 and len(on_b.of("resync")) == 1
    finally:
        await on_b.close()
        await proxy.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_job_run_while_redis_is_down_reaches_the_other_node_when_redis_is_back(make_server, redis, sim):
    channel = f"test-{uuid.uuid4().hex[:8]}"
    # no periodic sweep: what brings the events is catching up when the subscription is back
    node_a = make_server(**node_env(redis.url, channel, CATCHUP_INTERVAL="0"))
    node_b = make_server(**node_env(redis.url, channel, CATCHUP_INTERVAL="0"))
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    bob = await asyncio.to_thread(node_a.create_user, "bob")  # no event at all before the outage
    carol = await asyncio.to_thread(node_a.create_user, "carol")  # no socket on B: only the admin sees her
    boss = await asyncio.to_thread(node_a.create_user, "boss", "admin")
    alice_a, bob_a, carol_a = node_a.client(alice), node_a.client(bob), node_a.client(carol)
    alice_b = await SioClient().connect(node_b.url, cookie=session_cookie(alice_a))
    bob_b = await SioClient().connect(node_b.url, cookie=session_cookie(bob_a))
    boss_b = await SioClient().connect(node_b.url, cookie=session_cookie(node_b.client(boss)))
    try:
        before = await asyncio.to_thread(alice_a.start, CIDS)
        await alice_b.wait_finished(before["job_id"])

        redis.kill()
        during = await asyncio.to_thread(alice_a.start, CIDS)
        first = await asyncio.to_thread(bob_a.start, CIDS)
        hers = await asyncio.to_thread(carol_a.start, CIDS)
        for api, job in ((alice_a, during), (bob_a, first), (carol_a, hers)):
            assert (await finished_on(api, job["job_id"]))["status"] == "SUCCESS"
        await asyncio.sleep(1.0)
        assert alice_b.updates(during["job_id"]) == [] and bob_b.updates() == []  # the bus is down

        redis.start()  # the same port, empty
        back = time.monotonic()
        await alice_b.wait_finished(during["job_id"], timeout=15)
        await bob_b.wait_finished(first["job_id"], timeout=15)
        await boss_b.wait_for(lambda: all(boss_b.finished(job["job_id"]) for job in (during, first, hers)),
                              what="the admin's catch-up")
        print(f"\ncaught up {time.monotonic() - back:.2f} s after Redis was back")

        # every event, in order, once, with nothing else (no resync)
        for client, user in ((alice_b, alice), (bob_b, bob), (boss_b, alice), (boss_b, bob), (boss_b, carol)):
            assert seen(client, user["id"]) == await user_events(node_a, user["id"])
        assert statuses(alice_b, during["job_id"])[-1] == "SUCCESS"
        assert [c.of("resync") for c in (alice_b, bob_b, boss_b)] == [[], [], []]
        # fresh job-stats for what was caught up (those pushed during the outage were lost)
        await alice_b.wait_for(lambda: any(s["counts"]["SUCCESS"] == 2 for s in alice_b.of("job-stats")),
                               what="alice's job-stats after catching up")
        await bob_b.wait_for(lambda: any(s["counts"]["SUCCESS"] == 1 for s in bob_b.of("job-stats")),
                             what="bob's job-stats after catching up")
        await boss_b.wait_for(lambda: any(s["user_id"] is None and s["counts"]["SUCCESS"] == 4
                                          for s in boss_b.of("job-stats")), what="the admin's job-stats")

        # and the bus carries the next job live again, still once each
        after = await asyncio.to_thread(alice_a.start, CIDS)
        await alice_b.wait_finished(after["job_id"])
        await boss_b.wait_finished(after["job_id"])
        assert seen(alice_b, alice["id"]) == await user_events(node_a, alice["id"])
        assert seen(boss_b, alice["id"]) == await user_events(node_a, alice["id"])
    finally:
        for client in (alice_b, bob_b, boss_b):
            await client.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_node_cut_off_from_redis_catches_up_when_its_connection_is_back(make_server, redis, sim):
    """Redis never stops: node A publishes as usual, and only node B's connection (through a proxy) is
    reset and refused for a while; nothing tells A, and B hears nothing of what A published meanwhile."""
    channel = f"test-{uuid.uuid4().hex[:8]}"
    proxy = await CuttableProxy(redis.port).start()
    node_a = make_server(**node_env(redis.url, channel, CATCHUP_INTERVAL="0"))
    node_b = make_server(**node_env(proxy.url, channel, CATCHUP_INTERVAL="0"))
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    alice_a = node_a.client(alice)
    on_b = await SioClient().connect(node_b.url, cookie=session_cookie(alice_a))
    try:
        assert (await on_b.call("subscribe", {"dashboard": True}))["summary"]["jobs_running"] == 0
        warm = await asyncio.to_thread(alice_a.start, CIDS)
        await on_b.wait_finished(warm["job_id"])

        await proxy.cut()
        jobs = [await asyncio.to_thread(alice_a.start, CIDS) for _ in range(2)]
        build = await asyncio.to_thread(report, alice_a)  # a CI/CD agent's job, in the same event sequence
        for job in jobs:
            await finished_on(alice_a, job["job_id"])
        await asyncio.sleep(0.5)
        assert [on_b.updates(job["job_id"]) for job in jobs] == [[], []] and on_b.of("pipeline-update") == []

        await proxy.restore()
        back = time.monotonic()
        for job in jobs:
            await on_b.wait_finished(job["job_id"], timeout=15)
        await on_b.wait_for(lambda: on_b.of("pipeline-update"), what="the pipeline job")
        print(f"\ncaught up {time.monotonic() - back:.2f} s after the connection was back")
        assert seen(on_b, alice["id"]) == await user_events(node_a, alice["id"])
        assert [u["job"]["job_id"] for u in on_b.of("pipeline-update")] == [build["job_id"]]
        metrics = await asyncio.to_thread(lambda: node_b.client().get("/metrics").text)
        assert "jobmon_fanout_caught_up_users_total 1.0" in metrics
        assert on_b.of("resync") == []
        # fresh figures for what was caught up (node A's pushes of that time never reached B)
        await on_b.wait_for(lambda: any(s["counts"]["SUCCESS"] == 3 for s in on_b.of("job-stats")),
                            what="job-stats after catching up")
        await on_b.wait_for(lambda: any(s["jobs_running"] == 1 for s in on_b.of("dashboard-summary")),
                            what="dashboard-summary after catching up")

        # Redis drops every subscriber's connection (CLIENT KILL TYPE pubsub): the subscription comes
        # back, a sweep finds nothing missing, and the next job is live on B again, once each
        killed = await asyncio.to_thread(redis.kill_pubsub_clients)
        assert killed >= 2  # node A's and node B's subscriptions at least
        later = await asyncio.to_thread(alice_a.start, CIDS)
        await on_b.wait_finished(later["job_id"], timeout=15)
        await asyncio.sleep(0.3)
        assert seen(on_b, alice["id"]) == await user_events(node_a, alice["id"])
        assert on_b.of("resync") == []
    finally:
        await on_b.close()
        await proxy.close()


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_silent_network_is_caught_up_by_the_periodic_sweep(make_server, redis, sim):
    """Node B's connection to Redis stays open but passes nothing: its subscription notices nothing, and
    only the periodic sweep brings the events. When the network passes again, the messages it held
    arrive late and are not delivered twice. Node B starts after alice's first job: that is the past,
    which no sweep replays."""
    channel = f"test-{uuid.uuid4().hex[:8]}"
    proxy = await CuttableProxy(redis.port).start()
    node_a = make_server(**node_env(redis.url, channel, CATCHUP_INTERVAL="0.5"))
    alice = await asyncio.to_thread(node_a.create_user, "alice")
    alice_a = node_a.client(alice)
    past = await asyncio.to_thread(alice_a.start, CIDS)
    await finished_on(alice_a, past["job_id"])
    node_b = make_server(**node_env(proxy.url, channel, CATCHUP_INTERVAL="0.5"))
    boss = await asyncio.to_thread(node_a.create_user, "boss", "admin")
    on_b = await SioClient().connect(node_b.url, cookie=session_cookie(alice_a))
    boss_b = await SioClient().connect(node_b.url, cookie=session_cookie(node_b.client(boss)))
    try:
        await asyncio.sleep(1.5)  # three sweeps
        for client in (on_b, boss_b):  # nothing replayed, no resync
            assert [name for name, _ in client.events if name != "job-stats"] == []
        skip = len(await user_events(node_a, alice["id"]))
        warm = await asyncio.to_thread(alice_a.start, CIDS)
        await on_b.wait_finished(warm["job_id"])

        proxy.freeze()
        job = await asyncio.to_thread(alice_a.start, CIDS)
        await finished_on(alice_a, job["job_id"])
        committed = time.monotonic()
        await on_b.wait_finished(job["job_id"], timeout=10)
        print(f"\ncaught up {time.monotonic() - committed:.2f} s after the job ended, the network still silent")
        await boss_b.wait_finished(job["job_id"], timeout=10)
        for client in (on_b, boss_b):
            assert seen(client, alice["id"]) == (await user_events(node_a, alice["id"]))[skip:]

        proxy.thaw()  # the held messages arrive now: dropped as already delivered
        after = await asyncio.to_thread(alice_a.start, CIDS)
        await on_b.wait_finished(after["job_id"])
        await boss_b.wait_finished(after["job_id"])
        await asyncio.sleep(0.3)
        for client in (on_b, boss_b):
            assert seen(client, alice["id"]) == (await user_events(node_a, alice["id"]))[skip:]
            assert client.of("resync") == []
    finally:
        await boss_b.close()
        await on_b.close()
        await proxy.close()

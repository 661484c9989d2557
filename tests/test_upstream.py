"""The upstream cluster client against the real simulator and against misbehaving servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.upstream.clusters import Cluster
from server.upstream.client import TmsClient, UpstreamError
from support import free_port


class RawServer:
    """A TCP server on a loopback port that answers every connection with `handler(reader, writer)`."""

    def __init__(self, handler):
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.url = ""

    async def __aenter__(self) -> "RawServer":
        async def serve(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()


async def drip(reader, writer):
    """Headers at once, then one byte of body every 100 ms: no single read ever waits long."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n")
    await writer.drain()
    for _ in range(100):
        await asyncio.sleep(0.1)
        writer.write(b" ")
        await writer.drain()


async def hang_up(reader, writer):
    """Close the connection without an answer."""


def answer(body: bytes, status: str = "200 OK"):
    async def handler(reader, writer):
        writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    return handler


@pytest.mark.asyncio
async def test_set_action_against_the_simulator(sim):
    sim.knobs(fail_cids={"C2": "customer locked"})
    client = TmsClient(timeout=5)
    try:
        cluster = Cluster("sim", "Simulated", sim.url)
        results = await client.set_action(cluster, "PE-Enable", 2, ["C1", "C2"], request_id="job:0")
        assert {cid: (r.ok, r.error) for cid, r in results.items()} == {
            "C1": (True, None), "C2": (False, "customer locked")}
        assert sim.stats()["last_authorization_fingerprint"] is None
        # the same request_id again: the cluster drops it and repeats its first answer
        again = await client.set_action(cluster, "PE-Enable", 2, ["C1", "C2"], request_id="job:0")
        assert again == results
        assert sim.stats()["duplicate_batches"] == 1 and sim.stats()["customers_applied"] == 1

        service = Cluster("sim", "Simulated", sim.url, service_token="svc-token")
        await client.set_action(service, "PE-Enable", 2, ["C3"], request_id="job:1")
        assert sim.stats()["last_authorization_fingerprint"] == sim.fingerprint("Bearer svc-token")
        await client.set_action(service, "PE-Enable", 2, ["C4"], request_id="job:2", user_token="mine")
        # the user's own token wins
        assert sim.stats()["last_authorization_fingerprint"] == sim.fingerprint("Bearer mine")
        assert "svc-token" not in repr(service)

        customers, next_page = await client.customer_states_page(cluster, 1)
        assert {c["cid"] for c in customers} == {"C1", "C3", "C4"} and next_page is None
        statuses = await client.appstatus_batch(cluster, ["C1", "NEW"], "ALL")
        assert statuses["NEW"]["status"] == "unknown" and statuses["C1"]["app"] == "ALL"
        single = await client.appstatus_one(cluster, "C1", "ALL")
        assert single["cid"] == "C1"
    finally:
        await client.aclose()


async def failure_of(client: TmsClient, sim, **knobs) -> UpstreamError:
    """The error of a Set Action on the simulator with these knobs (then set back)."""
    sim.knobs(**knobs)
    with pytest.raises(UpstreamError) as caught:
        await client.set_action(Cluster("sim", "Simulated", sim.url), "PE-Enable", 2, ["C1"],
                                request_id=f"r{time.monotonic()}")
    sim.knobs(set_action_status=None, set_action_error=None, malformed=False, hang_seconds=0)
    return caught.value


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_an_http_error_status_becomes_an_upstream_error(sim, status):
    client = TmsClient(timeout=0.5)
    try:
        error = await failure_of(client, sim, set_action_status=status)
        assert (error.http_status, error.kind) == (status, "http")
        assert error.message.startswith(f"HTTP {status} from cluster 'sim': ")
        assert error.message.endswith(f"(simulated HTTP {status})")
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_every_failure_becomes_an_upstream_error(sim):
    client = TmsClient(timeout=0.5)
    try:
        error = await failure_of(client, sim, set_action_error="locked by another operator")
        assert (error.http_status, error.kind) == (200, "rejected")
        assert error.message == "Cluster 'sim' refused the Set Action: locked by another operator"
        error = await failure_of(client, sim, malformed=True)
        assert (error.http_status, error.kind, error.message) == (
            502, "malformed", "Cluster 'sim' answered with malformed JSON")

        refused = Cluster("off", "Off", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(UpstreamError) as caught:
            await client.set_action(refused, "PE-Enable", 2, ["C1"], request_id="x")
        assert (caught.value.http_status, caught.value.kind) == (503, "connection")
        assert caught.value.message == ("Could not connect to cluster 'off': the connection was refused or "
                                        "the host is unreachable")
    finally:
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.slow  # waits for the hung call to end
async def test_a_hanging_cluster_is_cut_off_at_the_deadline(sim):
    client = TmsClient(timeout=0.5)
    started = time.monotonic()
    try:
        error = await failure_of(client, sim, hang_seconds=1.0)
        assert time.monotonic() - started < 0.9
        assert (error.http_status, error.kind) == (408, "timeout")
        assert "UpstreamError('timeout', 408" in repr(error)
    finally:
        await client.aclose()
        # let the simulator finish the hung call (1 s) before its next reset
        await asyncio.sleep(max(0.0, started + 1.2 - time.monotonic()))


@pytest.mark.asyncio
async def test_the_deadline_is_total_not_per_read():
    async with RawServer(drip) as server:
        # httpx's own timeout restarts at every byte, so the drip would hold it for 10 s
        client = TmsClient(timeout=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await client.set_action(Cluster("slow", "Slow", server.url), "PE-Enable", 2, ["C1"],
                                        request_id="x")
            assert time.monotonic() - started < 1.5
            assert (caught.value.http_status, caught.value.kind) == (408, "timeout")
            assert caught.value.message == "Cluster 'slow' did not answer within 0.5 s"
        finally:
            await client.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("handler, status, kind, message", [
    (hang_up, 502, "connection", "Lost the connection to cluster 'odd' before it answered"),
    (answer(b"<html>oops</html>"), 502, "malformed", "Cluster 'odd' answered with malformed JSON"),
    (answer(b"[1, 2]"), 502, "malformed", "Cluster 'odd' answered without a 'success' flag"),
    (answer(b'{"success": "yes"}'), 502, "malformed", "Cluster 'odd' answered without a 'success' flag"),
    (answer(b'{"success": true}'), 502, "malformed", "Cluster 'odd' answered without per-customer results"),
    (answer(b'{"success": false}'), 200, "rejected", "Cluster 'odd' refused the Set Action: no reason given"),
    (answer(b'{"error": {"message": "bad gateway"}}', "502 Bad Gateway"), 502, "http",
     "HTTP 502 from cluster 'odd': the cluster's gateway failed (bad gateway)"),
    (answer(b"x" * 5000, "500 Internal Server Error"), 500, "http",
     "HTTP 500 from cluster 'odd': the cluster had an internal error (" + "x" * 200 + ")"),
])
async def test_misbehaving_clusters(handler, status, kind, message):
    async with RawServer(handler) as server:
        client = TmsClient(timeout=2)
        try:
            with pytest.raises(UpstreamError) as caught:
                await client.set_action(Cluster("odd", "Odd", server.url), "PE-Enable", 2, ["C1"], request_id="x")
            assert (caught.value.http_status, caught.value.kind) == (status, kind)
            assert caught.value.message.startswith(message), caught.value.message
        finally:
            await client.aclose()


@pytest.mark.asyncio
async def test_odd_per_customer_answers():
    body = b'{"success": true, "results": {"C1": {"ok": true}, "C2": {"ok": false}, "C3": "yes", "X": {}}}'
    async with RawServer(answer(body)) as server:
        client = TmsClient(timeout=2)
        try:
            results = await client.set_action(Cluster("odd", "Odd", server.url), "PE-Enable", 2,
                                              ["C1", "C2", "C3", "C4"], request_id="x")
        finally:
            await client.aclose()
    assert {cid: (r.ok, r.error) for cid, r in results.items()} == {
        "C1": (True, None), "C2": (False, "failed on the cluster"),
        "C3": (False, "the cluster's answer did not include this customer"),
        "C4": (False, "the cluster's answer did not include this customer")}


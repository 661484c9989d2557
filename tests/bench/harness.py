"""What the Socket.IO benchmarks share: protocol-level clients in child processes, and readings of a
server process (CPU seconds, resident memory) from /proc.

The clients speak the Socket.IO v5 protocol over WebSocket directly (connect with an auth payload,
answer pings, decode events): the same frames python-socketio's AsyncClient or socket.io-client
exchange, at a fraction of their CPU cost, so on a small machine the clients do not starve the
server they measure. Each child process runs many clients on one uvloop and is driven through a
pipe by `ClientFleet`:

    fleet = ClientFleet(url, [{"token": t} for t in tokens], processes=3)   # connects them all
    fleet.start_window(start_ms, end_ms); ... ; results = fleet.window_results()
    fleet.close()

`url` may instead be a list, one server URL per client (several nodes): the results then also come
per URL (`results.by_url`), so what the clients of one node saw can be set against that node's CPU.

For every `job-update` that arrives inside a window, a client records its delay from the
payload's `at` (ISO 8601, milliseconds; the server stamps it from the same machine's clock) to its
arrival, and checks that its event ids only increase (a repeat or a step back counts as out of order).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

EVENT_PREFIX = '42["job-update"'


# -- readings of a process ---------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def wait_ready(url: str, process, timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200 (the process must not exit meanwhile)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def percentile(ordered, fraction: float) -> float:
    """The value at `fraction` of an already sorted sequence (nan when empty)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if len(ordered) else float("nan")


# -- the clients (in child processes) -----------------------------------------------------------
def _client_process(conn, urls: list[str], auths: list[dict], connect_concurrency: int) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(_clients(conn, urls, auths, connect_concurrency))


async def _clients(conn, urls: list[str], auths: list[dict], connect_concurrency: int) -> None:
    """Client i connects to urls[i] with auths[i]; what they see is counted per URL."""
    import aiohttp
    import orjson

    from server.timeutil import parse_iso

    window = [float("inf"), float("-inf")]
    # per URL (a node): the delays of its clients' events in this window, and their counters
    delays_by = {url: array("f") for url in urls}
    counters_by = {url: {"received": 0, "in_window": 0, "out_of_order": 0, "refused": 0, "closed_by_server": 0}
                   for url in urls}
    last_ids: list[int] = []  # per client: the last event id seen in this window
    refusals: list[str] = []  # why connections failed (the first few)
    settled = asyncio.Event()
    pending = [len(auths)]

    def connect_step_done() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            settled.set()

    async def client(session: aiohttp.ClientSession, url: str, auth: dict, ready: asyncio.Semaphore) -> None:
        me = len(last_ids)
        last_ids.append(0)
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        delays, counters = delays_by[url], counters_by[url]
        try:
            async with ready:
                ws = await session.ws_connect(ws_url, max_msg_size=0)
                opened = await ws.receive_str()  # "0{sid, pingInterval, ...}"
                assert opened.startswith("0"), opened
                await ws.send_str("40" + orjson.dumps(auth).decode())
                answer = await ws.receive_str()  # "40{sid}" or "44{message, data}"
                if not answer.startswith("40"):
                    await ws.close()
                    raise RuntimeError(answer)
        except Exception as exc:
            counters["refused"] += 1
            if len(refusals) < 3:
                refusals.append(f"{url}: {exc!r}"[:300])
            connect_step_done()
            return
        connect_step_done()
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = message.data
                if data == "2":
                    await ws.send_str("3")  # Engine.IO ping -> pong
                elif data.startswith(EVENT_PREFIX):
                    arrived = time.time() * 1000
                    update = orjson.loads(data[2:])[1]
                    counters["received"] += 1
                    if update["event_id"] <= last_ids[me]:
                        counters["out_of_order"] += 1
                    last_ids[me] = update["event_id"]
                    if window[0] <= arrived <= window[1]:
                        counters["in_window"] += 1
                        delays.append(arrived - parse_iso(update["at"]))
            counters["closed_by_server"] += 1
        finally:
            await ws.close()

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        ready = asyncio.Semaphore(connect_concurrency)
        tasks = [asyncio.create_task(client(session, url, auth, ready)) for url, auth in zip(urls, auths)]
        await settled.wait()
        # the connections live as long as the process: no collection walks them again (a full one
        # over 300+ WebSocket clients stalls every socket of this process for tens of ms, which
        # would count as the server's delay)
        gc.collect()
        gc.freeze()
        conn.send(("connected", {url: (urls.count(url) - counters["refused"], counters["refused"])
                                 for url, counters in counters_by.items()}, refusals))
        while True:
            # ("window", start_ms, end_ms, renumbered) or ("stop",)
            command = await loop.run_in_executor(None, conn.recv)
            if command[0] != "window":
                break
            for delays, counters in zip(delays_by.values(), counters_by.values()):
                del delays[:]
                counters["in_window"] = 0
                if command[3]:  # this window's events are numbered afresh: order is checked from here on
                    counters["received"] = counters["out_of_order"] = 0
            if command[3]:
                for i in range(len(last_ids)):
                    last_ids[i] = 0
            window[0], window[1] = command[1], command[2]
            await asyncio.sleep(max(0.0, (command[2] - time.time() * 1000) / 1000) + 0.5)
            results = {}
            for url, counters in counters_by.items():
                failed = [t.exception() for t, u in zip(tasks, urls)
                          if u == url and t.done() and not t.cancelled() and t.exception()]
                counters["client_errors"] = len(failed)
                counters["first_error"] = repr(failed[0]) if failed else None
                results[url] = (delays_by[url].tobytes(), dict(counters))
            conn.send(("result", results))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.close()


@dataclass
class WindowResult:
    """What the clients saw in one measurement window, over all their processes."""

    delays: list[float]  # sorted, milliseconds
    received: int = 0
    in_window: int = 0
    out_of_order: int = 0
    client_errors: int = 0
    closed_by_server: int = 0
    errors: list[str] = field(default_factory=list)
    client_cpu_percent: list[int] = field(default_factory=list)  # each load process, over the window
    by_url: dict[str, "WindowResult"] = field(default_factory=dict)  # the same, for each server URL's clients

    def p(self, fraction: float) -> float:
        return percentile(self.delays, fraction)

    def add(self, raw: bytes, their: dict) -> None:
        """Count in one client process's report (the delays stay unsorted: `window_results` sorts them)."""
        part = array("f")
        part.frombytes(raw)
        self.delays.extend(part)
        for key in ("received", "in_window", "out_of_order", "client_errors", "closed_by_server"):
            setattr(self, key, getattr(self, key) + their[key])
        if their["first_error"]:
            self.errors.append(their["first_error"])


class ClientFleet:
    """N protocol-level Socket.IO clients, spread over `processes` child processes, connected on creation.

    `url`: the server every client connects to, or a list of one URL per client (several nodes)."""

    def __init__(self, url: str | list[str], auths: list[dict], processes: int, connect_concurrency: int = 50):
        urls = [url] * len(auths) if isinstance(url, str) else list(url)
        assert len(urls) == len(auths), "one URL per client"
        context = multiprocessing.get_context("spawn")
        self.children: list[tuple] = []
        started = time.monotonic()
        for part in range(processes):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_client_process, daemon=True,
                                      args=(child_end, urls[part::processes], auths[part::processes],
                                            connect_concurrency))
            process.start()
            self.children.append((process, parent_end))
        self.connected = self.refused = 0
        self.connected_by_url = dict.fromkeys(urls, 0)
        self.refusals: list[str] = []  # the first reasons a connection failed, from each process
        for _, pipe in self.children:
            _, by_url, refusals = pipe.recv()
            self.refusals += refusals
            for part_url, (ok, bad) in by_url.items():
                self.connected, self.refused = self.connected + ok, self.refused + bad
                self.connected_by_url[part_url] += ok
        self.connect_seconds = time.monotonic() - started
        self._cpu_before: list[float] = []

    def start_window(self, start_ms: float, end_ms: float, renumbered: bool = False) -> None:
        """Count the events that arrive between these wall-clock times (epoch milliseconds);
        `renumbered`: the events from now on have ids of their own (order is checked afresh)."""
        self._cpu_before = [cpu_seconds(process.pid) for process, _ in self.children]
        self._window_seconds = (end_ms - time.time() * 1000) / 1000 + 0.5
        for _, pipe in self.children:
            pipe.send(("window", start_ms, end_ms, renumbered))

    def window_results(self) -> WindowResult:
        """Wait for the window to end; what every client saw, merged."""
        result = WindowResult(delays=array("f"))
        for (process, pipe), before in zip(self.children, self._cpu_before):
            _, by_url = pipe.recv()
            result.client_cpu_percent.append(round(100 * (cpu_seconds(process.pid) - before) / self._window_seconds))
            for url, (raw, their) in by_url.items():
                result.add(raw, their)
                result.by_url.setdefault(url, WindowResult(delays=array("f"))).add(raw, their)
        for merged in (result, *result.by_url.values()):
            merged.delays = sorted(merged.delays)
        return result

    def close(self) -> None:
        for process, pipe in self.children:
            try:
                pipe.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for process, _ in self.children:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

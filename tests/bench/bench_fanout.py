"""Fan-out benchmark: N Socket.IO clients spread over users while 200 jobs progress at once.

    .venv/bin/python tests/bench/bench_fanout.py                       # N = 1,000 and 5,000
    .venv/bin/python tests/bench/bench_fanout.py --clients 1000 --seconds 10 --client-procs 2

For each N it starts, from scratch: the simulated cluster (`python -m server simulator`, every batch
answered after --latency-ms), a fresh SQLite database (or --database-url), the server
(`python -m server serve`, a real process), then N WebSocket clients in --client-procs processes,
each authenticated with its user's token. It measures:

- memory per idle connection: the server's resident memory with the N clients connected and idle,
  minus before they connected, divided by N;
- while --jobs jobs progress at once (one batch each per --latency-ms, so every job writes progress
  events all through the window): for every job-update that arrives, its delay from the event's
  timestamp (taken in the transaction that commits it, so the commit is included) to its arrival,
  read from the same clock (p50, p99, max); deliveries per second over all clients; and that every
  client saw its user's event ids in order, with no repeat.

The clients speak the Socket.IO v5 protocol over WebSocket directly (connect with auth, answer
pings, decode events): the same frames python-socketio's AsyncClient exchanges, at a fraction of
its CPU cost, so on a small machine the clients do not starve the server they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


# -- clients (run in child processes) -----------------------------------------------------------
def _client_process(conn, url: str, tokens: list[str], connect_concurrency: int) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(_clients(conn, url, tokens, connect_concurrency))


async def _clients(conn, url: str, tokens: list[str], connect_concurrency: int) -> None:
    import aiohttp
    import orjson

    from server.timeutil import parse_iso

    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    delays = array("f")
    window = [float("inf"), float("-inf")]
    counters = {"received": 0, "in_window": 0, "out_of_order": 0, "refused": 0, "closed_by_server": 0}

    settled = asyncio.Event()
    pending = [len(tokens)]

    def connect_step_done() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            settled.set()

    async def client(session: aiohttp.ClientSession, token: str, ready: asyncio.Semaphore) -> None:
        last_id = 0
        try:
            async with ready:
                ws = await session.ws_connect(ws_url, max_msg_size=0)
                opened = await ws.receive_str()  # "0{sid, pingInterval, ...}"
                assert opened.startswith("0"), opened
                await ws.send_str("40" + orjson.dumps({"token": token}).decode())
                answer = await ws.receive_str()  # "40{sid}" or "44{message, data}"
                if not answer.startswith("40"):
                    await ws.close()
                    raise RuntimeError(answer)
        except Exception:
            counters["refused"] += 1
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
                elif data.startswith('42["job-update"'):
                    arrived = time.time() * 1000
                    update = orjson.loads(data[2:])[1]
                    counters["received"] += 1
                    if update["event_id"] <= last_id:
                        counters["out_of_order"] += 1
                    last_id = update["event_id"]
                    if window[0] <= arrived <= window[1]:
                        counters["in_window"] += 1
                        delays.append(arrived - parse_iso(update["at"]))
            counters["closed_by_server"] += 1
        finally:
            await ws.close()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        ready = asyncio.Semaphore(connect_concurrency)
        tasks = [asyncio.create_task(client(session, token, ready)) for token in tokens]
        await settled.wait()
        conn.send(("connected", len(tokens) - counters["refused"], counters["refused"]))
        command = await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # ("window", start, end)
        window[0], window[1] = command[1], command[2]
        await asyncio.sleep(max(0.0, (command[2] - time.time() * 1000) / 1000) + 0.5)
        failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
        counters["client_errors"] = len(failed)
        counters["first_error"] = repr(failed[0]) if failed else None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("result", delays.tobytes(), counters))
    conn.close()


# -- the parent ----------------------------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, path: str, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def _metric(url: str, prefix: str) -> float:
    """One value of the server's Prometheus metrics (the first line that starts with `prefix`)."""
    import httpx

    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


def run_once(n: int, args) -> dict:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    sim_port, port = _free_port(), _free_port()
    sim_url, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    database = None
    if args.backend == "postgres":
        from support import PostgresDatabase

        database = PostgresDatabase()
        database_url = database.url
    else:
        database_url = f"sqlite:///{tmp / 'jobmon.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBMON_DATABASE_URL": database_url,
           "JOBMON_DATA_DIR": str(tmp / "data"), "JOBMON_CLUSTERS_FILE": str(tmp / "clusters.json"),
           "JOBMON_JOB_CONCURRENCY": "256", "JOBMON_BATCH_CONCURRENCY": "1", "JOBMON_BATCH_SIZE": "1", "JOBMON_UPSTREAM_CONNECTIONS": "256",
           "JOBMON_LOG_LEVEL": "WARNING", "JOBMON_RATE_LIMIT": "0"}
    (tmp / "clusters.json").write_text(json.dumps([{"id": "sim", "name": "Simulated", "base_url": sim_url}]))
    processes: list[subprocess.Popen] = []
    children: list[tuple] = []
    try:
        sim = subprocess.Popen([sys.executable, "-m", "server", "simulator", "--port", str(sim_port)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(sim)
        _wait_ready(sim_url, "/_sim/stats", sim)
        httpx.put(sim_url + "/_sim/knobs", json={"latency_ms": args.latency_ms}).raise_for_status()
        from support import users_with_tokens

        tokens = [token for _, token in users_with_tokens(database_url, [f"bench{i:03d}" for i in range(args.users)])]
        # the server's log goes to a file: an unread pipe would fill up and stall the server
        server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
        processes.append(server)
        _wait_ready(url, "/readyz", server)
        time.sleep(2)
        rss_before = _rss_kb(server.pid)

        # N clients, spread round-robin over the users, in several processes
        client_tokens = [tokens[i % len(tokens)] for i in range(n)]
        context = multiprocessing.get_context("spawn")
        started = time.monotonic()
        for part in range(args.client_procs):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_client_process, daemon=True,
                                      args=(child_end, url, client_tokens[part::args.client_procs], 50))
            process.start()
            children.append((process, parent_end))
        connected = refused = 0
        for _, pipe in children:
            _, ok, bad = pipe.recv()
            connected, refused = connected + ok, refused + bad
        connect_seconds = time.monotonic() - started
        time.sleep(3)
        rss_idle = _rss_kb(server.pid)
        sockets = _metric(url, "jobmon_node_sockets")

        # the jobs: one customer per batch (JOBMON_BATCH_SIZE=1), so each job sends one batch per
        # latency_ms, for far longer than the run (it is stopped with the server)
        batches = int((args.seconds + 300) * 1000 / args.latency_ms)
        cids = [f"C{i:06d}" for i in range(batches)]
        created = time.monotonic()
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(args.jobs):
                response = http.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": cids},
                                     headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"})
                response.raise_for_status()
        create_seconds = time.monotonic() - created
        deadline = time.monotonic() + 30
        while int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}')) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        running_at_start = int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}'))
        start_ms = time.time() * 1000 + 500
        end_ms = start_ms + args.seconds * 1000
        for _, pipe in children:
            pipe.send(("window", start_ms, end_ms))
        cpu_before = _cpu_seconds(server.pid)
        time.sleep(args.seconds + 0.5)
        cpu_server = _cpu_seconds(server.pid) - cpu_before
        running_at_end = int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}'))
        delays = array("f")
        counters = {"received": 0, "in_window": 0, "out_of_order": 0, "client_errors": 0, "closed_by_server": 0}
        errors = []
        for process, pipe in children:
            _, raw, their = pipe.recv()
            part = array("f")
            part.frombytes(raw)
            delays.extend(part)
            for key in counters:
                counters[key] += their[key]
            if their["first_error"]:
                errors.append(their["first_error"])
            process.join(timeout=30)
        ordered = sorted(delays)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")  # noqa: E731
        return {
            "clients": n, "connected": connected, "refused": refused, "server_sockets": int(sockets),
            "connect_seconds": round(connect_seconds, 1), "users": args.users,
            "kb_per_idle_connection": round((rss_idle - rss_before) / max(connected, 1), 1),
            "server_rss_mb_idle": round(rss_idle / 1024, 1),
            "jobs_in_progress": (running_at_start, running_at_end), "jobs_created_in_s": round(create_seconds, 1),
            "window_s": args.seconds, "deliveries": counters["in_window"],
            "deliveries_per_s": round(counters["in_window"] / args.seconds),
            "p50_ms": round(pick(0.50), 1), "p99_ms": round(pick(0.99), 1),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "mean_ms": round(statistics.fmean(ordered), 1) if ordered else None,
            "out_of_order_or_repeated": counters["out_of_order"], "received_total": counters["received"],
            "client_errors": counters["client_errors"], "closed_by_server": counters["closed_by_server"],
            "first_client_error": errors[0] if errors else None,
            "server_cpu_percent": round(100 * cpu_server / (args.seconds + 0.5)),
        }
    finally:
        for process, pipe in children:
            if process.is_alive():
                process.kill()
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if database is not None:
            database.drop()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--latency-ms", type=float, default=1000.0, help="the cluster's answer time per batch")
    parser.add_argument("--client-procs", type=int, default=3)
    from support import BACKEND_NAMES

    parser.add_argument("--backend", choices=BACKEND_NAMES, default="sqlite",
                        help="a fresh SQLite file, or a fresh database on the local PostgreSQL")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; {args.jobs} jobs progressing, {args.users} users, "
          f"clients in {args.client_procs} processes, {args.backend}",
          flush=True)
    for n in args.clients:
        result = run_once(n, args)
        print(json.dumps(result), flush=True)
        print(f"N={n:>5}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
              f"{result['deliveries_per_s']} deliveries/s; {result['kb_per_idle_connection']} KB per idle "
              f"connection; jobs in progress {result['jobs_in_progress']}; "
              f"out of order {result['out_of_order_or_repeated']}", flush=True)


if __name__ == "__main__":
    main()

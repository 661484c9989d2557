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

The clients speak the Socket.IO v5 protocol over WebSocket directly (tests/bench/harness.py): the
same frames python-socketio's AsyncClient exchanges, at a fraction of its CPU cost, so on a small
machine the clients do not starve the server they measure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bench")]

from harness import ClientFleet, cpu_seconds, rss_kb, wait_ready  # noqa: E402
from support import free_port  # noqa: E402


# -- the parent ----------------------------------------------------------------------------------
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
    sim_port, port = free_port(), free_port()
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
    fleet = None
    try:
        sim = subprocess.Popen([sys.executable, "-m", "server", "simulator", "--port", str(sim_port)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(sim)
        wait_ready(sim_url + "/_sim/stats", sim)
        httpx.put(sim_url + "/_sim/knobs", json={"latency_ms": args.latency_ms}).raise_for_status()
        from support import users_with_tokens

        tokens = [token for _, token in users_with_tokens(database_url, [f"bench{i:03d}" for i in range(args.users)])]
        # the server's log goes to a file: an unread pipe would fill up and stall the server
        server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
        processes.append(server)
        wait_ready(url + "/readyz", server)
        time.sleep(2)
        rss_before = rss_kb(server.pid)

        # N clients, spread round-robin over the users, in several processes
        fleet = ClientFleet(url, [{"token": tokens[i % len(tokens)]} for i in range(n)], args.client_procs)
        connected, refused, connect_seconds = fleet.connected, fleet.refused, fleet.connect_seconds
        time.sleep(3)
        rss_idle = rss_kb(server.pid)
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
        fleet.start_window(start_ms, end_ms)
        cpu_before = cpu_seconds(server.pid)
        time.sleep(args.seconds + 0.5)
        cpu_server = cpu_seconds(server.pid) - cpu_before
        running_at_end = int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}'))
        seen = fleet.window_results()
        ordered = seen.delays
        return {
            "clients": n, "connected": connected, "refused": refused, "server_sockets": int(sockets),
            "connect_seconds": round(connect_seconds, 1), "users": args.users,
            "kb_per_idle_connection": round((rss_idle - rss_before) / max(connected, 1), 1),
            "server_rss_mb_idle": round(rss_idle / 1024, 1),
            "jobs_in_progress": (running_at_start, running_at_end), "jobs_created_in_s": round(create_seconds, 1),
            "window_s": args.seconds, "deliveries": seen.in_window,
            "deliveries_per_s": round(seen.in_window / args.seconds),
            "p50_ms": round(seen.p(0.50), 1), "p99_ms": round(seen.p(0.99), 1),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "mean_ms": round(statistics.fmean(ordered), 1) if ordered else None,
            "out_of_order_or_repeated": seen.out_of_order, "received_total": seen.received,
            "client_errors": seen.client_errors, "closed_by_server": seen.closed_by_server,
            "first_client_error": seen.errors[0] if seen.errors else None,
            "server_cpu_percent": round(100 * cpu_server / (args.seconds + 0.5)),
            "client_cpu_percent": seen.client_cpu_percent,
        }
    finally:
        if fleet is not None:
            fleet.close()
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if database is not None:
            database.drop()


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

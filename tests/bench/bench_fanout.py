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

Several nodes, to see whether the Redis bus multiplies the work (every node reads every event):

    .venv/bin/python tests/bench/bench_fanout.py --backend postgres --clients 1000 --seconds 8 --nodes 2
    .venv/bin/python tests/bench/bench_fanout.py --backend postgres --clients 1000 --seconds 8 --redis

`--redis`: the server(s) publish their events through the local Redis (a fresh channel prefix per
run). `--nodes 2` (PostgreSQL and Redis): two server processes share the database. As when a node
is added because the load grew, each node carries the load the one node carried (`--load
per-node`, the default): twice the clients, users and jobs, dealt to the nodes as a load balancer
that knows nothing of users would, so every user has clients, and jobs, on both (each node runs at
most half of the jobs: JOBMON_JOB_CONCURRENCY). Each node then delivers as much as the one node did
and reads the other node's events from the bus besides: the work the bus adds, and nothing else,
is in the comparison. `--load total` splits the one node's load between the two instead; that
comparison also holds the job runner's cost per batch, which is higher at a lighter load (its
database work is grouped less). For each node it prints deliveries/s, the delays, the events out of
order or repeated, and its CPU seconds per 1,000 deliveries: CPU from /proc/PID/stat over the
window, over the deliveries that the clients connected to that node received in it. Before the two
nodes, the same load runs on one node (`--baseline`: with Redis, the fair comparison, and without),
and a summary line sets each node's CPU per delivery against the one node's.
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
import uuid
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


NODE_NAMES = "AB"


def _sleep_until(epoch_ms: float) -> None:
    time.sleep(max(0.0, epoch_ms / 1000 - time.time()))


def run_once(n: int, args, nodes: int = 1, redis: bool = False, per_node: bool = False) -> dict:
    """One measurement at N clients; `nodes` servers (more than one: PostgreSQL and `redis`).
    The figures per node (`nodes` in the result) come with several nodes, Redis, or `per_node`."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    sim_port = free_port()
    ports = [free_port() for _ in range(nodes)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    sim_url, url = f"http://127.0.0.1:{sim_port}", urls[0]
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
    if redis:
        env["JOBMON_REDIS_URL"] = args.redis_url
        env["JOBMON_REDIS_CHANNEL"] = f"bench-fanout-{uuid.uuid4().hex[:12]}"  # runs never hear each other
    if nodes > 1:
        env["JOBMON_SECRET_KEY"] = uuid.uuid4().hex * 2  # the same on every node
        # each node runs at most its share of the jobs, whichever node claims first
        env["JOBMON_JOB_CONCURRENCY"] = str(-(-args.jobs // nodes))
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
        servers = []
        for i, port in enumerate(ports):
            # the server's log goes to a file: an unread pipe would fill up and stall the server
            suffix = "" if i == 0 else f"-{NODE_NAMES[i]}"
            server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], cwd=ROOT,
                                      env={**env, "JOBMON_DATA_DIR": str(tmp / f"data{suffix}")},
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f"server{suffix}.log", "w"))
            processes.append(server)
            servers.append(server)
            wait_ready(urls[i] + "/readyz", server)
        server = servers[0]
        time.sleep(2)
        rss_before = [rss_kb(s.pid) for s in servers]

        # N clients, spread round-robin over the users, in several processes; with several nodes,
        # each user's clients go round the nodes (client i: user i % users, node (i // users) % nodes)
        client_urls = [urls[(i // len(tokens)) % nodes] for i in range(n)]
        fleet = ClientFleet(client_urls, [{"token": tokens[i % len(tokens)]} for i in range(n)], args.client_procs)
        connected, refused, connect_seconds = fleet.connected, fleet.refused, fleet.connect_seconds
        idle_from = [cpu_seconds(s.pid) for s in servers]
        time.sleep(3)
        # a node's own upkeep, with its clients connected and no job running (its share of no event)
        cpu_idle = [cpu_seconds(s.pid) - before for s, before in zip(servers, idle_from)]
        rss_idle = [rss_kb(s.pid) for s in servers]
        sockets = sum(_metric(u, "jobmon_node_sockets") for u in urls)

        # the jobs: one customer per batch (JOBMON_BATCH_SIZE=1), so each job sends one batch per
        # latency_ms, for far longer than the run (it is stopped with the server)
        batches = int((args.seconds + 300) * 1000 / args.latency_ms)
        cids = [f"C{i:06d}" for i in range(batches)]
        created = time.monotonic()
        https = [httpx.Client(base_url=u, timeout=60) for u in urls]
        try:
            for i in range(args.jobs):
                # like the clients: each user's jobs go round the nodes
                http = https[(i // len(tokens)) % nodes]
                response = http.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": cids},
                                     headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"})
                response.raise_for_status()
        finally:
            for http in https:
                http.close()
        create_seconds = time.monotonic() - created
        deadline = time.monotonic() + 30
        while int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}')) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        running_at_start = int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}'))
        node_jobs = [int(_metric(u, "jobmon_node_running_jobs")) for u in urls]
        start_ms = time.time() * 1000 + 500
        end_ms = start_ms + args.seconds * 1000
        fleet.start_window(start_ms, end_ms)
        cpu_before = cpu_seconds(server.pid)
        # each node's CPU over exactly the window, for its CPU per delivery
        _sleep_until(start_ms)
        cpu_at_start = [cpu_seconds(s.pid) for s in servers]
        _sleep_until(end_ms)
        cpu_window = [cpu_seconds(s.pid) - before for s, before in zip(servers, cpu_at_start)]
        cpu_server = cpu_seconds(server.pid) - cpu_before
        running_at_end = int(_metric(url, 'jobmon_jobs{status="IN_PROGRESS"}'))
        seen = fleet.window_results()
        ordered = seen.delays
        node_figures = []
        for i, u in enumerate(urls):
            mine = seen.by_url.get(u) or seen  # one node: all of them
            clients = fleet.connected_by_url.get(u, 0)
            node_figures.append({
                "node": NODE_NAMES[i], "clients": clients, "jobs_running": node_jobs[i],
                "deliveries": mine.in_window, "deliveries_per_s": round(mine.in_window / args.seconds),
                "p50_ms": round(mine.p(0.50), 1), "p99_ms": round(mine.p(0.99), 1),
                "max_ms": round(mine.delays[-1], 1) if mine.delays else None,
                "cpu_s_per_1000_deliveries":
                    round(1000 * cpu_window[i] / mine.in_window, 4) if mine.in_window else None,
                "cpu_percent": round(100 * cpu_window[i] / args.seconds),
                "cpu_idle_percent": round(100 * cpu_idle[i] / 3),
                "out_of_order_or_repeated": mine.out_of_order, "received_total": mine.received,
                "kb_per_idle_connection": round((rss_idle[i] - rss_before[i]) / max(clients, 1), 1),
            })
        result = {
            "clients": n, "connected": connected, "refused": refused, "first_refusal": (fleet.refusals or [None])[0],
            "server_sockets": int(sockets),
            "connect_seconds": round(connect_seconds, 1), "users": args.users,
            "kb_per_idle_connection": round((sum(rss_idle) - sum(rss_before)) / max(connected, 1), 1),
            "server_rss_mb_idle": round(rss_idle[0] / 1024, 1),
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
        if nodes > 1 or redis or per_node:  # the default run's output stays as it was
            result["server_rss_mb_idle"] = [round(rss / 1024, 1) for rss in rss_idle]
            result["server_cpu_percent"] = [node["cpu_percent"] for node in node_figures]
            result.update(nodes=node_figures, redis=redis)
        return result
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


def print_nodes(result: dict) -> None:
    for node in result["nodes"]:
        print(f"  node {node['node']}: {node['deliveries_per_s']} deliveries/s to its {node['clients']} clients "
              f"({node['jobs_running']} jobs running on it); p50 {node['p50_ms']} ms, p99 {node['p99_ms']} ms, "
              f"max {node['max_ms']} ms; CPU {node['cpu_s_per_1000_deliveries']} s per 1,000 deliveries "
              f"({node['cpu_percent']}% of a core; {node['cpu_idle_percent']}% idle before the jobs); "
              f"out of order or repeated {node['out_of_order_or_repeated']}",
              flush=True)


def print_comparison(two: dict, one: dict, label: str) -> None:
    """Each of the two nodes' CPU per delivery against the one node's (1.00: the same work per delivery)."""
    base = one["nodes"][0]["cpu_s_per_1000_deliveries"]
    figures = [node["cpu_s_per_1000_deliveries"] for node in two["nodes"]]
    if not base or None in figures:
        print(f"CPU per delivery, 2 nodes vs 1 ({label}): no deliveries to compare", flush=True)
        return
    print(f"CPU per delivery, 2 nodes vs 1 ({label}, {base} s per 1,000): "
          + ", ".join(f"node {node['node']} {node['cpu_s_per_1000_deliveries']}" for node in two["nodes"])
          + " (ratios " + ", ".join(f"{figure / base:.2f}" for figure in figures) + ")", flush=True)


def report(n: int, result: dict) -> None:
    print(json.dumps(result), flush=True)
    print(f"N={n:>5}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
          f"{result['deliveries_per_s']} deliveries/s; {result['kb_per_idle_connection']} KB per idle "
          f"connection; jobs in progress {result['jobs_in_progress']}; "
          f"out of order {result['out_of_order_or_repeated']}", flush=True)
    if "nodes" in result:
        print_nodes(result)


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
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1,
                        help="server processes; 2 share the PostgreSQL database and Redis (--backend postgres)")
    parser.add_argument("--redis", action="store_true", help="one node publishing its events through Redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--load", choices=("per-node", "total"), default="per-node",
                        help="with --nodes 2: each node carries the one node's clients, users and jobs "
                             "(per-node), or the two share them (total)")
    parser.add_argument("--baseline", choices=("both", "redis", "plain", "none"), default="both",
                        help="with --nodes 2: the one-node runs first measured for the comparison "
                             "(with Redis, without, both, or none)")
    args = parser.parse_args()
    if args.nodes > 1 and args.backend != "postgres":
        parser.error("--nodes 2 shares one database between the nodes: add --backend postgres")
    print(f"machine: {os.cpu_count()} CPUs; {args.jobs} jobs progressing, {args.users} users, "
          f"clients in {args.client_procs} processes, {args.backend}"
          + (f", {args.nodes} nodes with Redis" if args.nodes > 1 else ", Redis" if args.redis else ""),
          flush=True)
    for n in args.clients:
        if args.nodes == 1:
            report(n, run_once(n, args, redis=args.redis))
            continue
        baselines = {}
        for kind in (("redis", "plain") if args.baseline == "both" else () if args.baseline == "none"
                     else (args.baseline,)):
            print(f"one node, {'with' if kind == 'redis' else 'without'} Redis:", flush=True)
            baselines[kind] = run_once(n, args, redis=kind == "redis", per_node=True)
            report(n, baselines[kind])
        scale = args.nodes if args.load == "per-node" else 1
        scaled = argparse.Namespace(**{**vars(args), "users": args.users * scale, "jobs": args.jobs * scale})
        print(f"{args.nodes} nodes with Redis, {n * scale} clients, {scaled.users} users, {scaled.jobs} jobs:",
              flush=True)
        result = run_once(n * scale, scaled, nodes=args.nodes, redis=True)
        report(n * scale, result)
        for kind, label in (("redis", "one node with Redis"), ("plain", "one node without Redis")):
            if kind in baselines:
                print_comparison(result, baselines[kind], label)


if __name__ == "__main__":
    main()

"""Job Monitor's live delivery against a Node.js socket.io 4.8 server, side by side, in one sitting.

    npm ci --prefix tests/bench/node            # once (or: make tests/bench/node/node_modules/.installed)
    .venv/bin/python tests/bench/bench_vs_node.py
    .venv/bin/python tests/bench/bench_vs_node.py --clients 1000 --users 100 --rate 5000 --seconds 10

The two servers, one after the other, each a process of its own on a free port:
- Node: tests/bench/node/server.js, socket.io 4.8 with its defaults, a room per user, `io.emit`;
- Python: tests/bench/delivery_server.py, Job Monitor's real delivery path (its python-socketio
  stack as `serve` builds it, the Realtime connect handler, the Fanout with its encode-once send),
  authentication bypassed there only.

Each gets N WebSocket connections (default 1,000) over U users (default 100), from protocol-level
clients in --client-procs processes (tests/bench/harness.py), then four workloads of `job-update`
events shaped like a real one (the job of `public_job`, `event_id`, `kind`, `at`), no coalescing:
- per-user, paced: --rate deliveries a second (each event to one user's N/U sockets);
- per-user, as fast as possible (the server emits, yields to its event loop, emits again);
- broadcast (every event to every socket), paced at the same --rate deliveries a second;
- broadcast, as fast as possible.
For each: deliveries a second (counted by the clients over the window), p50/p99 delay from the
event's `at` (the server's clock at the emit, milliseconds) to its arrival (the same machine's
clock), the server's CPU seconds per 1,000 deliveries (/proc/PID/stat over the window), and the
load processes' CPU; once per server, memory per idle connection (RSS with N idle connections
minus before, / N). Then the ratios Python / Node (above 1 is Python ahead: for CPU and delay it
is Node's figure over Python's).

As fast as possible, the two do not send the same number of events, and on a small machine the
delays follow how much waits in the sockets for the load generator. So each round also paces
Python at the rates Node reached as fast as possible (per-user and broadcast, `at Node's rate`),
and sets those delays against Node's own at that rate: the same load, on both sides
(--no-matched leaves them out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bench")]

from harness import ClientFleet, cpu_seconds, machine_busy, rss_kb, wait_ready  # noqa: E402
from support import free_port  # noqa: E402

NODE_DIR = ROOT / "tests" / "bench" / "node"
WORKLOADS = [("per-user", "paced"), ("per-user", "fast"), ("broadcast", "paced"), ("broadcast", "fast")]


def sample_job() -> dict:
    """A running job as clients get it in a `job-update` (public_job over a jobs row)."""
    from server.jobs.store import public_job

    now = int(time.time() * 1000)
    return public_job({
        "job_id": "6f1c2a3e-8b4d-4c1e-9a7f-2d5e6b7c8d9e", "user_id": 0, "action_name": "PE-Enable",
        "action_code": 2, "cluster": "sim", "status": "IN_PROGRESS", "customer_count": 1000, "done": 0,
        "failed": 3, "http_status": 200, "error_message": "customer C000042: account locked",
        "created_at": now - 60_000, "started_at": now - 59_950, "updated_at": now, "finished_at": None,
        "duration_ms": None, "batch_id": None, "parent_job_id": None, "idempotency_key": None,
        "cancel_requested": False, "attempts": 1,
    })


def start_server(side: str, port: int, job: dict, log: Path) -> subprocess.Popen:
    if side == "node":
        command = [shutil.which("node") or "node", str(NODE_DIR / "server.js"), str(port), json.dumps(job)]
    else:
        command = [sys.executable, str(ROOT / "tests" / "bench" / "delivery_server.py"), str(port), json.dumps(job)]
    # the log goes to a file: an unread pipe would fill up and stall the server
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_side(side: str, args, job: dict, matched: dict[str, float] | None = None) -> dict:
    """One server's figures for every workload; `matched` (mode -> deliveries a second): also
    paced at those rates, as `<mode> at Node's rate`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(f"/tmp/bench-vs-node-{side}.log")
    server = start_server(side, port, job, log)
    fleet = None
    try:
        wait_ready(url + "/bench/ready", server)
        time.sleep(1)
        rss_before = rss_kb(server.pid)
        fleet = ClientFleet(url, [{"user": i % args.users} for i in range(args.clients)], args.client_procs)
        if fleet.refused:
            raise RuntimeError(f"{side}: {fleet.refused} connections refused (see {log})")
        time.sleep(3)
        result = {"side": side, "connected": fleet.connected, "connect_s": round(fleet.connect_seconds, 1),
                  "kb_per_idle_connection": round((rss_kb(server.pid) - rss_before) / fleet.connected, 1),
                  "rss_mb_idle": round(rss_kb(server.pid) / 1024, 1)}
        per_event = {"per-user": args.clients / args.users, "broadcast": args.clients}
        workloads = [(f"{mode} {pace}", mode, args.rate if pace == "paced" else 0) for mode, pace in WORKLOADS]
        workloads += [(f"{mode} at Node's rate", mode, rate) for mode, rate in (matched or {}).items()]
        for key, mode, deliveries_per_s in workloads:
            events_per_s = deliveries_per_s / per_event[mode]
            warmup = 1.0
            now_ms = time.time() * 1000
            start_ms, end_ms = now_ms + warmup * 1000, now_ms + (warmup + args.seconds) * 1000
            fleet.start_window(start_ms, end_ms, renumbered=True)
            httpx.post(f"{url}/bench/emit", params={"mode": mode, "rate": events_per_s, "users": args.users,
                                                    "seconds": warmup + args.seconds + 0.5}).raise_for_status()
            time.sleep(max(0.0, start_ms / 1000 - time.time()))
            cpu_before, busy_before = cpu_seconds(server.pid), machine_busy()
            time.sleep(max(0.0, end_ms / 1000 - time.time()))
            cpu = cpu_seconds(server.pid) - cpu_before
            busy_after = machine_busy()
            seen = fleet.window_results()
            result[key] = {
                "deliveries_per_s": round(seen.in_window / args.seconds),
                "p50_ms": round(seen.p(0.50), 1), "p99_ms": round(seen.p(0.99), 1),
                "server_cpu_s_per_1000": round(1000 * cpu / max(seen.in_window, 1), 4),
                "server_cpu_percent": round(100 * cpu / args.seconds),
                "load_cpu_percent": seen.client_cpu_percent,
                "machine_busy_percent": round(100 * (busy_after[0] - busy_before[0]) /
                                              max(busy_after[1] - busy_before[1], 1)),
                "out_of_order": seen.out_of_order, "client_errors": seen.client_errors,
            }
            time.sleep(2)  # what is still queued drains before the next workload
        return result
    finally:
        if fleet is not None:
            fleet.close()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def ratio(python: float, node: float, higher_is_better: bool) -> str:
    if not python or not node:
        return "-"
    return f"{(python / node) if higher_is_better else (node / python):.2f}"


def report(node: dict, python: dict) -> None:
    print(f"\nmemory per idle connection: Node {node['kb_per_idle_connection']} KB, Python "
          f"{python['kb_per_idle_connection']} KB (ratio {ratio(python['kb_per_idle_connection'], node['kb_per_idle_connection'], False)})")
    header = (f"{'workload':<20} {'side':<7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1000':>11} "
              f"{'server CPU':>10} {'load CPU (per process)':>24} {'machine':>8}")
    print(header)
    for mode, pace in WORKLOADS:
        key = f"{mode} {pace}"
        compare(key, node[key], python[key])
    for mode in ("per-user", "broadcast"):
        key = f"{mode} at Node's rate"
        if key in python:  # Node's own figures at that rate are its fast ones
            print(f"{key}: Node as fast as possible, Python paced at the deliveries a second Node reached")
            compare("", node[f"{mode} fast"], python[key])


def compare(label: str, node: dict, python: dict) -> None:
    """Node's figures, Python's, and the ratios, under `label`."""
    for side, r in (("Node", node), ("Python", python)):
        print(f"{label:<20} {side:<7} {r['deliveries_per_s']:>8,} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['server_cpu_s_per_1000']:>11.4f} {r['server_cpu_percent']:>9}% "
              f"{' '.join(f'{c}%' for c in r['load_cpu_percent']):>24} {r['machine_busy_percent']:>7}%"
              + (f"  out of order {r['out_of_order']}!" if r["out_of_order"] else "")
              + (f"  client errors {r['client_errors']}!" if r["client_errors"] else ""))
    print(f"{'':<20} {'Py/Node':<7} {ratio(python['deliveries_per_s'], node['deliveries_per_s'], True):>8} "
          f"{ratio(python['p50_ms'], node['p50_ms'], False):>8} {ratio(python['p99_ms'], node['p99_ms'], False):>8} "
          f"{ratio(python['server_cpu_s_per_1000'], node['server_cpu_s_per_1000'], False):>11}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5000, help="deliveries a second in the paced workloads")
    parser.add_argument("--seconds", type=float, default=10.0, help="each workload's measurement window")
    parser.add_argument("--client-procs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="Node then Python, this many times (A/B/A/B)")
    parser.add_argument("--no-matched", dest="matched", action="store_false",
                        help="leave out Python paced at the rates Node reached as fast as possible")
    parser.add_argument("--side", choices=("both", "node", "python"), default="both",
                        help="one side alone prints its figures without ratios (for quick looks)")
    args = parser.parse_args()
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        print(f"socket.io is not installed: npm ci --prefix {NODE_DIR.relative_to(ROOT)}", file=sys.stderr)
        return 2
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sio_version = json.loads((NODE_DIR / "node_modules" / "socket.io" / "package.json").read_text())["version"]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{args.clients} connections over {args.users} users, load generator in {args.client_procs} processes; "
          f"Node {node_version} socket.io {sio_version}, Python {sys.version.split()[0]}", flush=True)
    job = sample_job()
    for round_no in range(args.rounds):
        if args.side != "both":
            print(json.dumps(run_side(args.side, args, job), indent=1), flush=True)
            continue
        node = run_side("node", args, job)
        print(json.dumps(node), flush=True)
        matched = {mode: node[f"{mode} fast"]["deliveries_per_s"] for mode in ("per-user", "broadcast")}
        python = run_side("python", args, job, matched if args.matched else None)
        print(json.dumps(python), flush=True)
        print(f"\n== round {round_no + 1}, load average now "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        report(node, python)
    return 0


if __name__ == "__main__":
    sys.exit(main())

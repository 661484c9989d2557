"""Benchmark of the app-status cache: one job of 10,000 customers, cold and warm.

    .venv/bin/python tests/bench/bench_appstatus.py                     # SQLite and PostgreSQL
    .venv/bin/python tests/bench/bench_appstatus.py --backend sqlite --latency-ms 50

The simulated cluster (`python -m server simulator`) and the Job Monitor (`python -m server
serve`) run as subprocesses; this process is the client. A real Set Action creates the job, then:
- cold: the job's entries are invalidated, and one GET /api/jobs/{id}/appstatus fetches all of
  them from the cluster; the upstream calls are counted at the simulator;
- first read: the GET right after a cold one, all hits, read from the database (it also builds the
  node's serialized snapshot of the job's answer);
- warm: repeated GETs answered from the cache (the snapshot, checked against the database), no
  upstream call.
Targets: warm p99 < 50 ms; cold makes at most ceil(customers / batch size) upstream calls.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import (BACKEND_NAMES, PostgresDatabase, SubprocessServer, free_port, users_with_tokens,  # noqa: E402
                     write_clusters_file)

SECRET = "bench-secret-key-0123456789abcdef"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def start_simulator(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBMON_SIM_LATENCY_MS": str(latency_ms)}
    process = subprocess.Popen([sys.executable, "-m", "server", "simulator", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/_sim/stats", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the simulator did not start")


def run(backend: str, customers: int, batch_size: int, concurrency: int, latency_ms: float,
        warm_runs: int, cold_runs: int) -> dict:
    sim_process, sim_url = start_simulator(latency_ms)
    pg = PostgresDatabase() if backend == "postgres" else None
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = pg.url if pg else f"sqlite:///{tmp}/bench.db"
            clusters = write_clusters_file(Path(tmp) / "clusters.json", {"sim": sim_url})
            server = SubprocessServer({
                "JOBMON_DATA_DIR": tmp, "JOBMON_DATABASE_URL": url, "JOBMON_SECRET_KEY": SECRET,
                "JOBMON_CLUSTERS_FILE": str(clusters), "JOBMON_BATCH_SIZE": "1000",
                "JOBMON_APPSTATUS_BATCH_SIZE": str(batch_size),
                "JOBMON_APPSTATUS_CONCURRENCY": str(concurrency), "JOBMON_LOG_LEVEL": "WARNING", "JOBMON_RATE_LIMIT": "0",
            }).start()
            [(_, token)] = users_with_tokens(url, ["bench"])
            http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            sim = httpx.Client(base_url=sim_url, timeout=10)
            cids = [f"C{n:06d}" for n in range(1, customers + 1)]
            response = http.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": cids})
            response.raise_for_status()
            job_id = response.json()["job"]["job_id"]
            while http.get(f"/api/jobs/{job_id}").json()["job"]["status"] not in ("SUCCESS", "PARTIAL", "FAILED"):
                time.sleep(0.2)
            path = f"/api/jobs/{job_id}/appstatus"

            def upstream_calls() -> int:
                stats = sim.get("/_sim/stats").json()
                return stats["appstatus_batch_calls"] + stats["appstatus_single_calls"]

            cold, cold_calls, first = [], [], []
            for _ in range(cold_runs):
                http.post("/api/cache/invalidate", json={"job_id": job_id}).raise_for_status()
                before = upstream_calls()
                started = time.perf_counter()
                response = http.get(path)
                cold.append((time.perf_counter() - started) * 1000)
                body = response.json()
                assert body["cache_misses"] == customers and not body["failed_cids"], body["cache_misses"]
                cold_calls.append(upstream_calls() - before)
                started = time.perf_counter()
                response = http.get(path)
                first.append((time.perf_counter() - started) * 1000)
                assert response.json()["cache_hits"] == customers

            warm = []
            before = upstream_calls()
            for _ in range(warm_runs):
                started = time.perf_counter()
                response = http.get(path)
                content = response.content
                warm.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            body = response.json()
            assert body["cache_hits"] == customers, body["cache_hits"]
            warm_calls = upstream_calls() - before
            http.close()
            sim.close()
            return {"backend": backend, "customers": customers, "batch_size": batch_size,
                    "cold_ms": cold, "cold_calls": cold_calls, "first_ms": first, "warm_ms": warm, "warm_calls": warm_calls,
                    "bytes": len(content)}
        finally:
            if server is not None:
                server.stop()
            if pg is not None:
                pg.drop()
            sim_process.terminate()
            sim_process.wait(timeout=10)


def report(result: dict, latency_ms: float) -> bool:
    limit = math.ceil(result["customers"] / result["batch_size"])
    warm, cold = result["warm_ms"], result["cold_ms"]
    warm_p99 = percentile(warm, 0.99)
    print(f"\n== {result['backend']}: {result['customers']} customers, app-status batch size "
          f"{result['batch_size']}, simulator latency {latency_ms:g} ms, answer {result['bytes'] / 1e6:.2f} MB")
    print(f"cold ({len(cold)} runs, all misses): p50 {statistics.median(cold):.0f} ms, "
          f"max {max(cold):.0f} ms; upstream calls per run {sorted(set(result['cold_calls']))} "
          f"(limit {limit})")
    first = result["first_ms"]
    print(f"first read after each cold run ({len(first)} runs, all hits, from the database): "
          f"p50 {statistics.median(first):.0f} ms, max {max(first):.0f} ms")
    print(f"warm ({len(warm)} runs, all hits):   p50 {statistics.median(warm):.1f} ms, "
          f"p99 {warm_p99:.1f} ms, max {max(warm):.1f} ms; upstream calls {result['warm_calls']}")
    slowest = sorted(range(len(warm)), key=warm.__getitem__)[-3:]
    print("slowest warm runs (index: ms):", ", ".join(f"{i}: {warm[i]:.0f}" for i in reversed(slowest)))
    ok = warm_p99 < 50 and max(result["cold_calls"]) <= limit and result["warm_calls"] == 0
    print("targets (warm p99 < 50 ms, cold calls <= limit, warm calls 0):", "MET" if ok else "MISSED")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=[*BACKEND_NAMES, "both"], default="both")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated upstream latency per call")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--cold", type=int, default=5)
    args = parser.parse_args()
    backends = BACKEND_NAMES if args.backend == "both" else [args.backend]
    ok = True
    for backend in backends:
        result = run(backend, args.customers, args.batch_size, args.concurrency, args.latency_ms,
                     args.warm, args.cold)
        ok = report(result, args.latency_ms) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the core: a 10,000-customer Set Action, and GET /api/jobs/mine over 100,000 jobs.

    .venv/bin/python tests/bench/bench_core.py                    # SQLite and PostgreSQL
    .venv/bin/python tests/bench/bench_core.py --backend sqlite --customers 20000 --jobs 200000

The simulated cluster (`python -m server simulator`, zero latency) and the Job Monitor
(`python -m server serve`) run as subprocesses; this process is the client.
- Set Action: one job of N customers (default batch size and concurrency) from POST to its final
  status; the figure is N / (finished_at - created_at) as the server recorded them, i.e. customers
  sent, answered and persisted per second. Target >= 5,000/s on SQLite.
- Job list: 100,000 jobs of one user are written straight into `jobs` with multi-row inserts
  (job_counts is not kept consistent: the list does not read it), then the first page of
  GET /api/jobs/mine is requested repeatedly over one keep-alive connection. Target p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import (BACKEND_NAMES, PostgresDatabase, SubprocessServer, free_port, users_with_tokens,  # noqa: E402
                     write_clusters_file)

SECRET = "bench-secret-key-0123456789abcdef"
FINAL = ("SUCCESS", "PARTIAL", "FAILED", "CANCELLED")
INSERT_ROWS = 500  # rows per multi-row INSERT (SQLite allows 32,766 bound parameters)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_simulator() -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "server", "simulator", "--port", str(port)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/_sim/stats", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the simulator did not start")


def job_rows(user_id: int, count: int) -> list[tuple]:
    """`count` finished jobs of one user spread over the last 30 days, in the columns of `jobs`."""
    rng = random.Random(7)
    now = int(time.time() * 1000)
    actions = [("Trans-Begin", 1), ("PE-Enable", 2), ("T-Enable", 3), ("PE-Finalize", 4), ("PE-Direct", 5)]
    rows = []
    for _ in range(count):
        created = now - rng.randrange(30 * 86_400_000)
        name, code = rng.choice(actions)
        customers = rng.randrange(1, 500)
        status = rng.choices(["SUCCESS", "PARTIAL", "FAILED", "CANCELLED"], [80, 10, 7, 3])[0]
        failed = 0 if status == "SUCCESS" else customers if status == "FAILED" else rng.randrange(1, customers + 1)
        duration = rng.randrange(200, 60_000)
        error = None if status == "SUCCESS" else "HTTP 503 from cluster 'sim': the cluster is unavailable"
        rows.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)), user_id, name, code, "sim", status,
                     customers, customers, failed, 200 if status != "FAILED" else 503, error, created,
                     created + 50, created + 50 + duration, created + 50 + duration, duration, None, None, None,
                     100, 1, None, None, False, False))
    return rows


COLUMNS = ("job_id", "user_id", "action_name", "action_code", "cluster", "status", "customer_count", "done",
           "failed", "http_status", "error_message", "created_at", "started_at", "updated_at", "finished_at",
           "duration_ms", "batch_id", "parent_job_id", "idempotency_key", "batch_size", "attempts", "lease_owner",
           "lease_expires_at", "cancel_requested", "stuck_alerted")


def insert_jobs(database_url: str, rows: list[tuple]) -> None:
    """Multi-row INSERTs straight into `jobs`, in one transaction."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url[len("sqlite:///"):]) as conn:
            for start in range(0, len(rows), INSERT_ROWS):
                chunk = rows[start:start + INSERT_ROWS]
                marks = ", ".join(["(" + ", ".join("?" * len(COLUMNS)) + ")"] * len(chunk))
                conn.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES {marks}",
                             [value for row in chunk for value in row])
            conn.execute("ANALYZE")
        return

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                for start in range(0, len(rows), INSERT_ROWS):
                    chunk = rows[start:start + INSERT_ROWS]
                    width = len(COLUMNS)
                    marks = ", ".join("(" + ", ".join(f"${i * width + k + 1}" for k in range(width)) + ")"
                                      for i in range(len(chunk)))
                    await conn.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES {marks}",
                                       *[value for row in chunk for value in row])
            await conn.execute("ANALYZE jobs")
        finally:
            await conn.close()

    asyncio.run(run())


def seconds_between(start: str, end: str) -> float:
    parse = lambda stamp: datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run(backend: str, customers: int, jobs: int, requests: int) -> dict:
    sim_process, sim_url = start_simulator()
    pg = PostgresDatabase() if backend == "postgres" else None
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = pg.url if pg else f"sqlite:///{tmp}/bench.db"
            clusters = write_clusters_file(Path(tmp) / "clusters.json", {"sim": sim_url})
            server = SubprocessServer({
                "JOBMON_DATA_DIR": tmp, "JOBMON_DATABASE_URL": url, "JOBMON_SECRET_KEY": SECRET,
                "JOBMON_CLUSTERS_FILE": str(clusters), "JOBMON_LOG_LEVEL": "WARNING", "JOBMON_RATE_LIMIT": "0",
            }).start()
            [(user, token)] = users_with_tokens(url, ["bench"])
            user_id = user["id"]
            http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

            cids = [f"C{n:06d}" for n in range(1, customers + 1)]
            started = time.perf_counter()
            response = http.post("/api/set-actions", json={"cluster": "sim", "action": "PE-Enable", "cids": cids})
            response.raise_for_status()
            accepted = time.perf_counter() - started
            job_id = response.json()["job"]["job_id"]
            while (job := http.get(f"/api/jobs/{job_id}").json()["job"])["status"] not in FINAL:
                time.sleep(0.02)
            wall = time.perf_counter() - started
            assert job["status"] == "SUCCESS" and job["done"] == customers, job
            applied = httpx.get(sim_url + "/_sim/stats").json()["customers_applied"]
            assert applied == customers, applied
            recorded = seconds_between(job["created_at"], job["finished_at"])

            inserting = time.perf_counter()
            insert_jobs(url, job_rows(user_id, jobs))
            insert_seconds = time.perf_counter() - inserting
            first = http.get("/api/jobs/mine").json()
            assert len(first["jobs"]) == 50 and first["next_cursor"], first.keys()
            for _ in range(50):  # warm up connections and caches
                http.get("/api/jobs/mine")
            latencies = []
            for _ in range(requests):
                t0 = time.perf_counter()
                answer = http.get("/api/jobs/mine")
                body = answer.content
                latencies.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200
            http.close()
            return {"backend": backend, "customers": customers, "accepted_s": accepted, "wall_s": wall,
                    "recorded_s": recorded, "jobs": jobs + 1, "insert_s": insert_seconds,
                    "latencies": latencies, "page_bytes": len(body)}
        finally:
            if server is not None:
                server.stop()
            if pg is not None:
                pg.drop()
            sim_process.terminate()
            sim_process.wait(timeout=10)


def report(result: dict) -> bool:
    rate = result["customers"] / result["recorded_s"]
    wall_rate = result["customers"] / result["wall_s"]
    lat = result["latencies"]
    p50, p99 = statistics.median(lat), percentile(lat, 0.99)
    print(f"\n== {result['backend']}")
    print(f"Set Action of {result['customers']:,} customers: POST answered in {result['accepted_s'] * 1000:.0f} ms; "
          f"created -> finished {result['recorded_s']:.2f} s = {rate:,.0f} customers/s "
          f"(client wall time {result['wall_s']:.2f} s = {wall_rate:,.0f}/s)")
    print(f"GET /api/jobs/mine, first page of 50, {result['jobs']:,} jobs of this user "
          f"(inserted in {result['insert_s']:.1f} s), {len(lat)} requests: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(lat):.1f} ms, {result['page_bytes'] / 1024:.0f} KiB per page")
    ok = p99 < 20 and (result["backend"] != "sqlite" or rate >= 5000)
    print("targets (>= 5,000 customers/s on SQLite, p99 < 20 ms):", "MET" if ok else "MISSED")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=[*BACKEND_NAMES, "both"], default="both")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    ok = True
    for backend in BACKEND_NAMES if args.backend == "both" else [args.backend]:
        ok = report(run(backend, args.customers, args.jobs, args.requests)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

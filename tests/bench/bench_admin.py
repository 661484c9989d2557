"""Benchmark of the admin API at scale: a million jobs, then p50/p99 of the admin list and stats.

    .venv/bin/python tests/bench/bench_admin.py                 # SQLite and PostgreSQL, 1,000,000 jobs
    .venv/bin/python tests/bench/bench_admin.py --backend sqlite --jobs 200000
    .venv/bin/python tests/bench/bench_admin.py --keep           # keep the generated data, then
    .venv/bin/python tests/bench/bench_admin.py --reuse          # measure again without regenerating

The jobs (1-5 customers each, two years of them, 50 users) and their aggregates (job_counts,
daily_stats, duration_histogram) are written straight into the database in bulk (SQLite:
executemany in one transaction; PostgreSQL: COPY), indexes built afterwards, all consistent
(the admin check that recounts the aggregates from `jobs` runs at the end and must find nothing).
Then a real server (`python -m server serve`, a subprocess) answers HTTP requests from this
process, one at a time. Target: p99 < 50 ms for the first four measurements (first page, a
filtered page, a deep cursor page, stats); the others are shown for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from server.db import schema as tables  # noqa: E402
from server.jobs.catalogue import ACTIONS  # noqa: E402
from server.db import Db, migrate  # noqa: E402
from server.db.migrations import _create_all  # noqa: E402
from server.stats.histogram import bucket_of  # noqa: E402
from server.timeutil import day_of  # noqa: E402

DAY_MS = 86_400_000
SPAN_DAYS = 730
USERS = 50
CLUSTERS = ("sim", "sim2", "eu-west")
CID_POOL = 300_000
CHUNK = 20_000
SECRET = "bench-secret-key-0123456789abcdef"
ERRORS = ("HTTP 503 from the cluster", "Timed out after 30 s", "Customer is locked by another action",
          "Malformed answer from the cluster", "Token expired upstream")
JOB_COLUMNS = [c.name for c in tables.jobs.columns]
CUSTOMER_COLUMNS = [c.name for c in tables.job_customers.columns]


class Generator:
    """Jobs, customers and the aggregates they imply, in chunks of rows ready to insert."""

    def __init__(self, total: int, now: int, seed: int = 7):
        self.total = total
        self.now = now
        self.rng = random.Random(seed)
        # a few heavy users and a long tail of light ones
        weights = [1 / (rank + 1) for rank in range(USERS)]
        self.user_ids = list(range(2, USERS + 2))
        self.user_weights = weights
        self.job_counts: Counter = Counter()
        self.daily: dict[tuple, list[int]] = defaultdict(lambda: [0] * 7)
        self.histogram: Counter = Counter()

    def chunks(self):
        rng = self.rng
        start = self.now - SPAN_DAYS * DAY_MS
        made = 0
        while made < self.total:
            size = min(CHUNK, self.total - made)
            jobs, customers = [], []
            users = rng.choices(self.user_ids, self.user_weights, k=size)
            for i in range(size):
                index = made + i
                created = start + (index * SPAN_DAYS * DAY_MS) // self.total + rng.randrange(1000)
                created = min(created, self.now - 1000)
                job, rows = self._job(users[i], created)
                jobs.append(job)
                customers.extend(rows)
            made += size
            yield jobs, customers

    def _job(self, user_id: int, created: int) -> tuple[tuple, list[tuple]]:
        rng = self.rng
        action = rng.choice(ACTIONS)
        cluster = CLUSTERS[0] if rng.random() < 0.6 else rng.choice(CLUSTERS[1:])
        job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        n = rng.randint(1, 5)
        cids = [f"C{rng.randrange(CID_POOL):06d}" for _ in range(n)]
        age = self.now - created
        roll = rng.random()
        if age < 600_000 and roll < 0.3:
            status = "QUEUED" if roll < 0.15 else "IN_PROGRESS"
        elif roll < 0.80:
            status = "SUCCESS"
        elif roll < 0.87:
            status = "FAILED"
        elif roll < 0.95:
            status = "PARTIAL" if n > 1 else "FAILED"
        else:
            status = "CANCELLED"
        started = created + rng.randrange(50, 2000) if status != "QUEUED" else None
        duration = int(rng.lognormvariate(math.log(3000), 1.0)) + 1
        finished = None
        if status not in ("QUEUED", "IN_PROGRESS"):
            finished = min(started + duration, self.now - 1)
            duration = finished - started
        error = None
        failed = 0
        statuses = ["SUCCESS"] * n
        if status == "FAILED":
            failed = n
            statuses = ["FAILED"] * n
            error = rng.choice(ERRORS)
        elif status == "PARTIAL":
            failed = rng.randint(1, n - 1)
            statuses = ["FAILED"] * failed + ["SUCCESS"] * (n - failed)
            error = f"{failed} of {n} customers failed: {rng.choice(ERRORS)}"
        elif status == "CANCELLED":
            statuses = ["SUCCESS"] * (n // 2) + ["SKIPPED"] * (n - n // 2)
            error = f"Cancelled by its owner; {n - n // 2} customer(s) were not sent"
        elif status in ("QUEUED", "IN_PROGRESS"):
            statuses = ["PENDING"] * n
        done = sum(1 for s in statuses if s in ("SUCCESS", "FAILED"))
        updated = finished or (started or created)
        job = {
            "job_id": job_id, "user_id": user_id, "action_name": action.name, "action_code": action.code,
            "cluster": cluster, "status": status, "customer_count": n, "done": done, "failed": failed,
            "http_status": (503 if failed else 200) if done else None, "error_message": error,
            "created_at": created, "started_at": started, "updated_at": updated, "finished_at": finished,
            "duration_ms": duration if finished else None, "batch_id": None, "parent_job_id": None,
            "idempotency_key": None, "batch_size": 100, "attempts": 1 if started else 0,
            # active jobs are leased to a node that never comes: the bench server leaves them alone
            "lease_owner": "bench-node" if not finished else None,
            "lease_expires_at": self.now + 10 * 365 * DAY_MS if not finished else None,
            "cancel_requested": status == "CANCELLED", "stuck_alerted": False,
        }
        self.job_counts[(user_id, status)] += 1
        self.daily[(day_of(created), user_id, action.name, cluster)][0] += 1
        if finished:
            key = (day_of(finished), user_id, action.name, cluster)
            column = {"SUCCESS": 1, "FAILED": 2, "PARTIAL": 3, "CANCELLED": 4}[status]
            self.daily[key][column] += 1
            self.daily[key][5] += duration
            self.daily[key][6] += 1
            self.histogram[(day_of(finished), action.name, cluster, bucket_of(duration))] += 1
        customers = [(job_id, seq, cid, statuses[seq],
                      (503 if statuses[seq] == "FAILED" else 200) if statuses[seq] in ("SUCCESS", "FAILED") else None,
                      error if statuses[seq] == "FAILED" else None,
                      finished if statuses[seq] != "PENDING" else None) for seq, cid in enumerate(cids)]
        return tuple(job[c] for c in JOB_COLUMNS), customers

    def aggregate_rows(self):
        counts = [(u, s, n) for (u, s), n in self.job_counts.items()]
        daily = [(*key, *values) for key, values in self.daily.items()]
        hist = [(*key, n) for key, n in self.histogram.items()]
        return counts, daily, hist


async def _prepare_schema(url: str) -> None:
    """Create the schema, then drop the secondary indexes of the big tables (rebuilt after loading)."""
    db = Db(url)
    await db.connect()
    try:
        await migrate(db)
        for table in (tables.jobs, tables.job_customers):
            for index in table.indexes:
                await db.execute(f"DROP INDEX IF EXISTS {index.name}")
    finally:
        await db.disconnect()


async def _finish_schema(url: str, admin_password: str) -> None:
    from server.accounts.store import Accounts

    db = Db(url)
    await db.connect()
    try:
        started = time.perf_counter()
        await _create_all(db)
        print(f"  indexes built in {time.perf_counter() - started:.1f} s")
        await Accounts(db).create_user("bench-admin", admin_password, "admin")
    finally:
        await db.disconnect()


def _user_rows(now: int) -> list[tuple]:
    return [(uid, f"operator{uid:03d}", "!unusable", "user", now, False) for uid in range(2, USERS + 2)]


def load_sqlite(path: Path, total: int, now: int) -> None:
    url = f"sqlite:///{path}"
    asyncio.run(_prepare_schema(url))
    gen = Generator(total, now)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    jobs_sql = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
    cust_sql = f"INSERT INTO job_customers ({', '.join(CUSTOMER_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    with conn:
        conn.executemany("INSERT INTO users (id, username, password_hash, role, created_at, disabled) "
                         "VALUES (?, ?, ?, ?, ?, ?)", _user_rows(now))
        for jobs, customers in gen.chunks():
            conn.executemany(jobs_sql, jobs)
            conn.executemany(cust_sql, customers)
        counts, daily, hist = gen.aggregate_rows()
        conn.executemany("INSERT INTO job_counts (user_id, status, n) VALUES (?, ?, ?)", counts)
        conn.executemany("INSERT INTO daily_stats (day, user_id, action_name, cluster, created, success, failed, "
                         "partial, cancelled, duration_sum_ms, duration_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)", daily)
        conn.executemany("INSERT INTO duration_histogram (day, action_name, cluster, bucket, n) "
                         "VALUES (?, ?, ?, ?, ?)", hist)
    conn.close()
    asyncio.run(_finish_schema(url, "bench-admin-password"))


async def _load_postgres(url: str, total: int, now: int) -> None:
    import asyncpg

    await _prepare_schema(url)
    gen = Generator(total, now)
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table("users", records=_user_rows(now),
                                         columns=["id", "username", "password_hash", "role", "created_at",
                                                  "disabled"])
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('users', 'id'), {USERS + 1})")
        for jobs, customers in gen.chunks():
            await conn.copy_records_to_table("jobs", records=jobs, columns=JOB_COLUMNS)
            await conn.copy_records_to_table("job_customers", records=customers, columns=CUSTOMER_COLUMNS)
        counts, daily, hist = gen.aggregate_rows()
        await conn.copy_records_to_table("job_counts", records=counts, columns=["user_id", "status", "n"])
        await conn.copy_records_to_table("daily_stats", records=daily, columns=[
            "day", "user_id", "action_name", "cluster", "created", "success", "failed", "partial", "cancelled",
            "duration_sum_ms", "duration_count"])
        await conn.copy_records_to_table("duration_histogram", records=hist,
                                         columns=["day", "action_name", "cluster", "bucket", "n"])
    finally:
        await conn.close()
    await _finish_schema(url, "bench-admin-password")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def generate(backend: str, total: int, workdir: Path) -> str:
    """Fill a fresh database of the backend; return its URL."""
    now = int(time.time() * 1000)
    started = time.perf_counter()
    if backend == "sqlite":
        path = workdir / f"admin-bench-{total}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        load_sqlite(path, total, now)
        url = f"sqlite:///{path}"
    else:
        url = _pg_database(total, create=True)
        asyncio.run(_load_postgres(url, total, now))
    print(f"  generated {total:,} jobs in {time.perf_counter() - started:.1f} s")
    return url


def _pg_database(total: int, create: bool, drop: bool = False) -> str:
    """The URL of the bench's PostgreSQL database: created afresh, found, or dropped."""
    import asyncpg

    from support import PG_ADMIN_URL

    name = f"jobmon_admin_bench_{total}"

    async def run():
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if (create or drop) and exists:
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            if create:
                await conn.execute(f'CREATE DATABASE "{name}"')
            return exists
        finally:
            await conn.close()

    exists = asyncio.run(run())
    if not create and not exists:
        return ""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _deep_cursor(url: str, rank: int) -> str:
    """A cursor into the default order (created_at desc) after `rank` jobs, signed as the server would."""
    from server.jobs.cursors import CursorCodec

    async def run():
        db = Db(url)
        await db.connect()
        try:
            row = await db.fetch_one(f"SELECT created_at, job_id FROM jobs ORDER BY created_at DESC, job_id DESC "
                                     f"LIMIT 1 OFFSET {rank - 1}")
            return row
        finally:
            await db.disconnect()

    row = asyncio.run(run())
    return CursorCodec(SECRET).encode("jobs", "created_at", "desc", 0, [row[0], row[1]])


def _sample(url: str, total: int) -> dict:
    """Real values to search for: a job id, a CID and a date a year ago."""

    async def run():
        db = Db(url)
        await db.connect()
        try:
            job = await db.fetch_one(f"SELECT job_id FROM jobs ORDER BY created_at LIMIT 1 OFFSET {total // 8}")
            cid = await db.fetch_one(f"SELECT cid FROM job_customers WHERE job_id = '{job[0]}' LIMIT 1")
            return {"job_id": job[0], "cid": cid[0]}
        finally:
            await db.disconnect()

    return asyncio.run(run())


# the requests the issue sets its target for; the others show how the rest of the API fares
TARGETS = 4


def measure(url: str, total: int, workdir: Path, requests: int) -> list[tuple[str, float, float, float]]:
    from support import SubprocessServer, write_clusters_file

    clusters = write_clusters_file(workdir / "clusters.json", {c: "http://127.0.0.1:9" for c in CLUSTERS})
    env = {"JOBMON_DATABASE_URL": url, "JOBMON_DATA_DIR": str(workdir / "data"), "JOBMON_SECRET_KEY": SECRET,
           "JOBMON_CLUSTERS_FILE": str(clusters), "JOBMON_RETENTION_DAYS": "0", "JOBMON_LOG_LEVEL": "WARNING",
           "JOBMON_RATE_LIMIT": "0"}  # measuring the server, not the per-user limits
    deep = _deep_cursor(url, total // 2)
    sample = _sample(url, total)
    year_ago = datetime.fromtimestamp(time.time() - 365 * 86400, tz=timezone.utc).date()
    scenarios = [
        ("list: first page", "/admin/jobs", {"limit": 50}),
        ("list: filtered page (FAILED+PARTIAL, PE-Enable)", "/admin/jobs",
         {"status": "FAILED,PARTIAL", "action": "PE-Enable", "limit": 50}),
        (f"list: deep cursor page (after {total // 2:,} jobs)", "/admin/jobs", {"cursor": deep, "limit": 50}),
        ("stats", "/admin/jobs/stats", {}),
        ("list: one user, sort updated_at asc", "/admin/jobs",
         {"user": "operator002", "sort": "updated_at", "order": "asc", "limit": 50}),
        ("list: light user + SUCCESS, sort duration", "/admin/jobs",
         {"user": "operator051", "status": "SUCCESS", "sort": "duration", "limit": 50}),
        ("list: QUEUED+IN_PROGRESS, sort finished_at asc", "/admin/jobs",
         {"status": "QUEUED,IN_PROGRESS", "sort": "finished_at", "order": "asc", "limit": 50}),
        ("list: created in one week a year ago, sort duration", "/admin/jobs",
         {"created_from": year_ago.isoformat(), "created_to": (year_ago + timedelta(days=6)).isoformat(),
          "sort": "duration", "limit": 50}),
        ("list: finished one day a year ago, sort updated_at desc", "/admin/jobs",
         {"finished_from": year_ago.isoformat(), "finished_to": year_ago.isoformat(), "sort": "updated_at",
          "limit": 50}),
        ("list: sort status, cluster eu-west", "/admin/jobs", {"sort": "status", "cluster": "eu-west", "limit": 50}),
        ("list: text = a CID", "/admin/jobs", {"text": sample["cid"], "limit": 50}),
        ("list: text = job id prefix (8)", "/admin/jobs", {"text": sample["job_id"][:8], "limit": 50}),
        ("list: text = error substring", "/admin/jobs", {"text": "locked", "limit": 50}),
        ("list: limit 500", "/admin/jobs", {"limit": 500}),
        ("stats, 90-day window", "/admin/jobs/stats", {"days": 90}),
    ]
    server = SubprocessServer(env).start()
    results = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            login = http.post("/api/auth/login", json={"username": "bench-admin", "password": "bench-admin-password"})
            login.raise_for_status()
            for index, (name, path, params) in enumerate(scenarios):
                if index == TARGETS:
                    print("  -- more of the API (no target) --")
                for _ in range(20):
                    response = http.get(path, params=params)
                    assert response.status_code == 200, (name, response.text[:300])
                timings = []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = http.get(path, params=params)
                    timings.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (name, response.text[:300])
                timings.sort()
                p50 = statistics.median(timings)
                p99 = timings[min(len(timings) - 1, math.ceil(0.99 * len(timings)) - 1)]
                results.append((name, p50, p99, timings[-1]))
                print(f"  {name:58s} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {timings[-1]:6.1f} ms", flush=True)
            started = time.perf_counter()
            with http.stream("GET", "/admin/jobs.csv", params={"status": "FAILED"}) as response:
                lines = sum(chunk.count("\n") for chunk in response.iter_text())
            elapsed = time.perf_counter() - started
            print(f"  CSV export of every FAILED job: {lines - 1:,} rows in {elapsed:.1f} s "
                  f"({(lines - 1) / elapsed:,.0f} rows/s)")
            started = time.perf_counter()
            check = http.get("/admin/jobs/stats/verify").json()
            print(f"  aggregates recounted from jobs: ok={check['ok']} differences={check['difference_count']} "
                  f"in {time.perf_counter() - started:.1f} s")
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    from support import BACKEND_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=[*BACKEND_NAMES, "both"], default="both")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario")
    parser.add_argument("--workdir", default="/tmp/jobmon-admin-bench")
    parser.add_argument("--reuse", action="store_true", help="reuse data kept by an earlier run")
    parser.add_argument("--keep", action="store_true", help="keep the generated data (for --reuse)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    failed = False
    for backend in (BACKEND_NAMES if args.backend == "both" else [args.backend]):
        print(f"{backend}: {args.jobs:,} jobs", flush=True)
        url = ""
        if args.reuse:
            path = workdir / f"admin-bench-{args.jobs}.db"
            url = (f"sqlite:///{path}" if path.exists() else "") if backend == "sqlite" else _pg_database(args.jobs, False)
            if url:
                print("  reusing the generated data")
        if not url:
            url = generate(backend, args.jobs, workdir)
        for name, p50, p99, _ in measure(url, args.jobs, workdir, args.requests)[:TARGETS]:
            if p99 >= 50:
                failed = True
                print(f"  ABOVE TARGET: {name} p99 {p99:.1f} ms")
        if not (args.keep or args.reuse):
            if backend == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(str(workdir / f"admin-bench-{args.jobs}.db") + suffix).unlink(missing_ok=True)
            else:
                _pg_database(args.jobs, create=False, drop=True)
    shutil.rmtree(workdir / "data", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The database goes away mid-run, and comes back.

PostgreSQL: a server of the test's own (initdb into a temporary folder, its own port, so nothing
else is disturbed) is crashed (`pg_ctl stop -m immediate`) or stopped for 20 s while jobs run and a
socket is connected: requests answer 503 `database_unavailable` at once, `/readyz` 503, the runner
sends no batch while it is down and finishes every job after, with no customer applied twice and
no more batches sent again than were in flight; the socket stays connected and gets every event.

SQLite: the database files made read-only (`chattr +i`: permissions do not bind root) or the disk
full (a small tmpfs filled up): writes answer 503 / 507 with a clear message and leave no trace,
reads go on, and everything works again once the files are writable or space is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from realtime_client import Refused, SioClient
from support import (PostgresDatabase, SubprocessServer, db_rows, free_port, missing, users_with_tokens,
                     write_clusters_file)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

PG_BIN = Path(os.environ.get("JOBMON_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
FINAL = ("SUCCESS", "FAILED", "PARTIAL", "CANCELLED")
BATCH_SIZE = 10
BATCH_CONCURRENCY = 2


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary folder, on its own port.

    It runs as the `postgres` OS user (PostgreSQL refuses to run as root)."""

    def __init__(self):
        if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
            missing(f"PostgreSQL server binaries are not in {PG_BIN} (apt-get install postgresql-15, "
                    "or set JOBMON_TEST_PG_BIN)")
        if shutil.which("runuser") is None:
            missing("runuser is missing: the test's own PostgreSQL must run as the postgres user")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("there is no postgres OS user to run the test's own PostgreSQL")
        self.folder = Path(tempfile.mkdtemp(prefix="jobmon-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, mode: str) -> None:
        """`immediate`: a crash (no shutdown, recovery at the next start); `fast`: a clean stop."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def server_env(tmp_path: Path, url: str, sim_url: str) -> dict[str, str]:
    return {
        "JOBMON_DATABASE_URL": url,
        "JOBMON_DATA_DIR": str(tmp_path / "data"),
        "JOBMON_CLUSTERS_FILE": str(write_clusters_file(tmp_path / "clusters.json", {"sim": sim_url})),
        "JOBMON_BATCH_SIZE": str(BATCH_SIZE),
        "JOBMON_BATCH_CONCURRENCY": str(BATCH_CONCURRENCY),
        "JOBMON_LEASE_SECONDS": "3",
    }


def start_job(http: httpx.Client, cids: list[str]) -> str:
    answer = http.post("/api/set-actions", json={"cluster": "sim", "action": "Trans-Begin", "cids": cids})
    assert answer.status_code == 202, answer.text
    return answer.json()["job"]["job_id"]


def wait_job(http: httpx.Client, job_id: str, until, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get(f"/api/jobs/{job_id}")
        if answer.status_code == 200 and until(job := answer.json()["job"]):
            return job
        assert time.monotonic() < deadline, f"job {job_id} not {what} after {timeout} s: {answer.text}"
        time.sleep(0.05)


def outage_error(answer: httpx.Response, status: int, code: str) -> dict:
    """The error a client gets while the database is out: the usual envelope, and Retry-After."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"], error
    assert int(answer.headers["Retry-After"]) > 0
    return error


def log_lines(server: SubprocessServer, pattern: str) -> list[str]:
    return [line for line in server.output().splitlines() if re.search(pattern, line)]


def tracebacks(server: SubprocessServer) -> str:
    """Every traceback the server logged, with the lines before it, for the assertion message."""
    lines = server.output().splitlines()
    return "\n---\n".join("\n".join(lines[max(0, i - 2):i + 40])
                          for i, line in enumerate(lines) if line.startswith("Traceback"))


# -- PostgreSQL ------------------------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.parametrize("mode, down_for", [("immediate", 3.0), ("fast", 20.0)], ids=["crash", "down-20s"])
async def test_postgres_outage_mid_run(mode, down_for, tmp_path, sim):
    pg = await asyncio.to_thread(PrivatePostgres)
    server = client = http = None
    try:
        await asyncio.to_thread(pg.start)
        [(user, token)] = await asyncio.to_thread(users_with_tokens, pg.url, ["alice"])
        server = await asyncio.to_thread(SubprocessServer(server_env(tmp_path, pg.url, sim.url)).start)
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        client = await SioClient(reconnect=True, resume=True).connect(server.url, token=token)
        sim.knobs(latency_ms=100)
        customers = {"A": 400, "B": 300}  # 40 + 30 batches, 2 at a time per job: 2 s or more each
        jobs = {name: await asyncio.to_thread(start_job, http, [f"{name}{i:04d}" for i in range(n)])
                for name, n in customers.items()}
        await asyncio.to_thread(wait_job, http, jobs["B"], lambda job: job["done"] >= 50, 20, "half way")

        await asyncio.to_thread(pg.stop, mode)
        went_down = time.monotonic()
        # what a client sees: at once, the error envelope with Retry-After, not a hang or a traceback
        for _ in range(3):
            started = time.monotonic()
            ready = await asyncio.to_thread(http.get, "/readyz")
            assert ready.status_code == 503 and ready.json()["database"] == "database_unavailable", ready.text
            assert int(ready.headers["Retry-After"]) > 0
            outage_error(await asyncio.to_thread(http.get, "/api/jobs/mine"), 503, "database_unavailable")
            outage_error(await asyncio.to_thread(http.get, f"/api/jobs/{jobs['A']}"), 503, "database_unavailable")
            refused = await asyncio.to_thread(http.post, "/api/set-actions",
                                              json={"cluster": "sim", "action": "PE-Enable", "cids": ["LOST1"]})
            error = outage_error(refused, 503, "database_unavailable")
            assert "nothing was changed" in error["message"]
            assert time.monotonic() - started < 5, "a request waited for the database"
            ack = await client.call("get-stats")
            assert ack["error"]["code"] == "database_unavailable" and ack["error"]["status"] == 503, ack
            await asyncio.sleep(0.3)
        # a socket that connects now (a page opened, a reconnection) is told why, and tries again later
        with pytest.raises(Refused) as refused:
            await SioClient().connect(server.url, token=token)
        assert refused.value.reason["data"]["code"] == "database_unavailable", refused.value.reason
        # the runner stops taking batches: the ones in flight end, then no call reaches the cluster
        await asyncio.sleep(1.0)
        calls_while_down = sim.stats()["set_action_calls"]
        await asyncio.sleep(max(0.0, down_for - (time.monotonic() - went_down)))
        assert sim.stats()["set_action_calls"] == calls_while_down, "a batch was sent while the database was down"
        assert client.connected, "the socket was dropped during the outage"

        await asyncio.to_thread(pg.start)
        back = time.monotonic()
        while (await asyncio.to_thread(http.get, "/readyz")).status_code != 200:
            assert time.monotonic() - back < 10, "not ready 10 s after the database came back"
            await asyncio.sleep(0.05)
        ready_after = time.monotonic() - back
        # jobs resume at once (their leases are given back as soon as the database answers)
        await asyncio.to_thread(wait_job, http, jobs["A"],
                                lambda job: sim.stats()["set_action_calls"] > calls_while_down, 10, "resumed")
        resumed_after = time.monotonic() - back
        finished = {name: await asyncio.to_thread(wait_job, http, job_id, lambda job: job["status"] in FINAL,
                                                  30, "finished")
                    for name, job_id in jobs.items()}
        for name, job in finished.items():
            assert (job["status"], job["done"], job["failed"]) == ("SUCCESS", customers[name], 0), job
        rows = await asyncio.to_thread(db_rows, pg.url, "SELECT status, COUNT(*) FROM jobs GROUP BY status")
        assert rows == [("SUCCESS", 2)], "a job was lost, half-written or left running"
        stats = sim.stats()
        # every customer applied once; sent again only the batches that were in flight when it went down
        assert stats["customers_applied"] == sum(customers.values()), stats
        assert stats["duplicate_batches"] <= BATCH_CONCURRENCY * len(jobs), stats
        assert stats["set_action_calls"] == sum(customers.values()) // BATCH_SIZE + stats["duplicate_batches"]

        # live delivery resumed: the socket got every event of the user, once, in order
        expected = [r[0] for r in await asyncio.to_thread(
            db_rows, pg.url, "SELECT event_id FROM job_events WHERE user_id = $1 ORDER BY event_id", user["id"])]
        await client.wait_for(lambda: all(client.finished(job_id) for job_id in jobs.values()), 15,
                              "the final status events")
        await client.wait_for(lambda: client.last_event_id() >= expected[-1], 5, "every event")
        assert [u["event_id"] for u in client.updates()] == expected

        # the log says it once each way, without a traceback
        noted = "\n".join(log_lines(server, r"WARNING|ERROR|Error|Traceback"))
        assert len(log_lines(server, "claiming jobs paused: database_unavailable")) == 1, noted
        assert len(log_lines(server, "claiming jobs resumed")) == 1, noted
        assert not tracebacks(server), tracebacks(server)
        print(f"\n{mode}: down {down_for:.0f} s; ready {ready_after:.2f} s after PostgreSQL came back, "
              f"batches again after {resumed_after:.2f} s; {stats['duplicate_batches']} batch(es) sent again")
    finally:
        if client is not None:
            await client.close()
        if http is not None:
            http.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(pg.remove)


@pytest.mark.postgres
async def test_transactions_cut_off_by_the_database_give_their_connection_back():
    """A transaction whose connection dies under it (the database restarted) fails with
    DatabaseOutage, and its pooled connection is not lost: more of them than the pool holds, then
    a query still gets a connection at once (it used to wait forever)."""
    from server.db import Db
    from server.errors import DatabaseOutage

    database = await asyncio.to_thread(PostgresDatabase)
    db = Db(database.url)
    await db.connect()
    try:
        for _ in range(25):  # the pool holds 20
            with pytest.raises(DatabaseOutage):
                async with db.transaction():
                    await db.fetch_val("SELECT 1")
                    # the backend ends, as in a restart: the statement, then the ROLLBACK, fail
                    await db.fetch_val("SELECT pg_terminate_backend(pg_backend_pid())")
        assert await asyncio.wait_for(db.fetch_val("SELECT 41 + 1"), 5) == 42
    finally:
        await db.disconnect()
        await asyncio.to_thread(database.drop)


# -- SQLite ----------------------------------------------------------------------------------------

def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


@contextlib.contextmanager
def small_disk(where: Path, megabytes: int):
    """A tmpfs of this size mounted at `where` (needs CAP_SYS_ADMIN: root in a privileged container)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where))
    if mounted.returncode != 0:
        missing(f"cannot mount a small tmpfs to fill up (mount: {mounted.stderr.strip()}); needs root "
                "with CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        _run("umount", "-l", str(where))


def fill_up(folder: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with contextlib.suppress(OSError), open(folder / "filler2", "wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 512)
    return filler


def truncate_wal(path: Path) -> None:
    """Checkpoint the WAL into the database file and cut it to zero bytes (retried while busy)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=1)) as conn:
        deadline = time.monotonic() + 10
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the WAL stayed busy"
            time.sleep(0.01)


def until_quiet(sim, seconds: float = 1.0) -> None:
    """Wait until no batch has reached the cluster for this long."""
    calls = sim.stats()["set_action_calls"]
    while True:
        time.sleep(seconds)
        now = sim.stats()["set_action_calls"]
        if now == calls:
            return
        calls = now


def counts(url: str) -> tuple:
    """What the database holds: jobs, customer rows, events, tokens, pipeline jobs."""
    return tuple(db_rows(url, f"SELECT COUNT(*) FROM {table}")[0][0]
                 for table in ("jobs", "job_customers", "job_events", "api_tokens", "pipeline_jobs"))


async def _sqlite_server(tmp_path: Path, folder: Path, sim):
    url = f"sqlite:///{folder / 'jobmon.db'}"
    [(user, token)] = await asyncio.to_thread(users_with_tokens, url, ["alice"])
    server = await asyncio.to_thread(SubprocessServer(server_env(tmp_path, url, sim.url)).start)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return url, server, http


async def test_sqlite_disk_full(tmp_path, sim):
    server = http = None
    with small_disk(tmp_path / "disk", 16) as disk:
        try:
            url, server, http = await _sqlite_server(tmp_path, disk, sim)
            first = await asyncio.to_thread(start_job, http, [f"F{i}" for i in range(50)])
            await asyncio.to_thread(wait_job, http, first, lambda job: job["status"] in FINAL, 20, "finished")
            sim.knobs(latency_ms=100)
            running = await asyncio.to_thread(start_job, http, [f"R{i:04d}" for i in range(300)])
            await asyncio.to_thread(wait_job, http, running, lambda job: job["done"] >= 40, 20, "under way")

            # SQLite writes into the WAL file's space again once a checkpoint has copied it all: empty
            # it, then take every free byte, so the next writes need space there is none of
            await asyncio.to_thread(truncate_wal, disk / "jobmon.db")
            filler = await asyncio.to_thread(fill_up, disk)
            # the running job meets the full disk and stops (it may record a batch or two first)
            await asyncio.to_thread(until_quiet, sim)
            before = await asyncio.to_thread(counts, url)
            refused = await asyncio.to_thread(http.post, "/api/set-actions",
                                              json={"cluster": "sim", "action": "PE-Enable",
                                                    "cids": [f"N{i}" for i in range(2000)]})
            error = outage_error(refused, 507, "storage_full")
            assert "disk is full" in error["message"] and "not saved" in error["message"], error
            outage_error(await asyncio.to_thread(http.post, "/api/tokens", json={"name": "x", "scope": "read"}),
                         507, "storage_full")
            # a CI agent's report (group commit: the whole batch of changes fails, each caller told)
            outage_error(await asyncio.to_thread(http.post, "/api/dashboard/jobs", json={
                "job_type": "build", "repo": "acme/api", "agent_id": "ci-1"}), 507, "storage_full")
            after = await asyncio.to_thread(counts, url)
            assert after == before, f"a refused write left something behind: {before} -> {after}"
            # reads go on
            mine = await asyncio.to_thread(http.get, "/api/jobs/mine")
            assert mine.status_code == 200 and {j["job_id"] for j in mine.json()["jobs"]} == {first, running}
            assert (await asyncio.to_thread(http.get, "/readyz")).status_code == 200
            stuck = (await asyncio.to_thread(http.get, f"/api/jobs/{running}")).json()["job"]
            assert stuck["status"] == "IN_PROGRESS" and stuck["done"] < 300
            calls = sim.stats()["set_action_calls"]
            await asyncio.sleep(1.0)
            assert sim.stats()["set_action_calls"] == calls, "batches were sent that could not be recorded"

            os.unlink(filler)
            os.unlink(disk / "filler2")
            job = await asyncio.to_thread(wait_job, http, running, lambda job: job["status"] in FINAL, 30, "finished")
            assert (job["status"], job["done"], job["failed"]) == ("SUCCESS", 300, 0), job
            again = await asyncio.to_thread(start_job, http, ["N1", "N2"])
            await asyncio.to_thread(wait_job, http, again, lambda job: job["status"] == "SUCCESS", 20, "done")
            stats = sim.stats()
            assert stats["customers_applied"] == 50 + 300 + 2 and stats["duplicate_batches"] <= BATCH_CONCURRENCY
            assert len(log_lines(server, "claiming jobs paused: storage_full")) <= 1
            assert not tracebacks(server), tracebacks(server)
        finally:
            if http is not None:
                http.close()
            if server is not None:
                await asyncio.to_thread(server.stop)


async def test_sqlite_database_made_read_only(tmp_path, sim):
    folder = tmp_path / "db"
    folder.mkdir()
    server = http = None
    files: list[str] = []
    try:
        url, server, http = await _sqlite_server(tmp_path, folder, sim)
        first = await asyncio.to_thread(start_job, http, [f"F{i}" for i in range(50)])
        await asyncio.to_thread(wait_job, http, first, lambda job: job["status"] in FINAL, 20, "finished")
        # immutable even for root (chmod is not); the -shm index is mapped into memory and stays writable
        files = [str(folder / "jobmon.db"), str(folder / "jobmon.db-wal")]
        made = _run("chattr", "+i", *files)
        if made.returncode != 0:
            files = []
            missing(f"chattr +i does not work here ({made.stderr.strip()}): needs root on ext4 or alike")
        before = await asyncio.to_thread(counts, url)
        refused = await asyncio.to_thread(http.post, "/api/set-actions",
                                          json={"cluster": "sim", "action": "PE-Enable", "cids": ["N1", "N2"]})
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] in ("database_read_only", "database_unavailable"), error
        assert "not saved" in error["message"] and int(refused.headers["Retry-After"]) > 0
        assert await asyncio.to_thread(counts, url) == before
        mine = await asyncio.to_thread(http.get, "/api/jobs/mine")
        assert mine.status_code == 200 and [j["job_id"] for j in mine.json()["jobs"]] == [first]

        assert _run("chattr", "-i", *files).returncode == 0
        files = []
        again = await asyncio.to_thread(start_job, http, ["N1", "N2"])
        await asyncio.to_thread(wait_job, http, again, lambda job: job["status"] == "SUCCESS", 20, "done")
        assert not tracebacks(server), tracebacks(server)
    finally:
        if files:
            _run("chattr", "-i", *files)
        if http is not None:
            http.close()
        if server is not None:
            await asyncio.to_thread(server.stop)

"""Test harness: real servers on loopback ports, real databases, and an HTTP client for the API.

Nothing here is mocked: the Job Monitor runs under uvicorn in a thread (or as a subprocess for
kill tests), the simulated cluster runs under uvicorn on its own port, and PostgreSQL tests get a
fresh database of their own on the local server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("JOBMON_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("JOBMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = os.environ.get("JOBMON_TEST_CHROMIUM", "/usr/bin/chromium")

# The database backends every database test runs on (conftest's `backend` fixture, test_admin's `world`,
# the benchmarks' --backend); a PostgreSQL case skips without PostgreSQL, and fails without it in CI.
BACKEND_NAMES = ("sqlite", "postgres")
# The fast tier (-m "not slow") runs every module's logic on SQLite; the PostgreSQL runs of the
# same tests (where its locking and types differ) are in the full suite.
BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]


# One TLS context for every test client: httpx builds one per client otherwise (about 20 ms each,
# loading the CA bundle), though every server here is plain HTTP on loopback
TLS = ssl.create_default_context()


def http_client(**kwargs) -> httpx.Client:
    """An httpx client for the loopback servers (sharing TLS)."""
    return httpx.Client(verify=TLS, **kwargs)


def async_http_client(**kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=TLS, **kwargs)


def missing(reason: str) -> None:
    """Skip for a missing service on a developer's machine; fail in CI, where it is mandatory."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true makes this mandatory)")
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if not _port_open("127.0.0.1", 5432):
        missing("PostgreSQL is not running on 127.0.0.1:5432")


def require_redis() -> None:
    if not _port_open("127.0.0.1", 6379):
        missing("Redis is not running on 127.0.0.1:6379")


def require_redis_server() -> str:
    """The redis-server binary, for tests that start (and kill) a Redis of their own."""
    path = shutil.which("redis-server")
    if not path:
        missing("redis-server is not installed (apt-get install -y redis-server)")
    return path


def require_chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        missing("Chromium is not installed (apt-get install -y chromium)")
    return path


def free_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port (no race between pick and bind)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return sock.getsockname()[1]


def unique(name: str) -> str:
    """A username no other test uses: tests that share a server meet only the users they made."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class _PromptServer(uvicorn.Server):
    """uvicorn's server, which notices a stop at once rather than at its next tick (0.1 s): every
    test server is stopped, and the tenths of a second add up."""

    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    def stop_soon(self) -> None:
        self.should_exit = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._stopping.set)


class ThreadedServer:
    """Runs an ASGI app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app, sock: socket.socket | None = None):
        from server.app import UVICORN_OPTIONS

        self.sock = sock or free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                                **UVICORN_OPTIONS)
        self.server = _PromptServer(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 20 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.stop_soon()
        self.thread.join(timeout=15)
        self.sock.close()


class SimulatorServer:
    """The simulated cluster on its own port, with helpers for its control routes."""

    def __init__(self):
        from server.sim.cluster import create_simulator_app

        self.app = create_simulator_app()
        self.server = ThreadedServer(self.app).start()
        self.url = self.server.url
        self.http = http_client(base_url=self.url, timeout=10)

    def knobs(self, **changes) -> dict:
        response = self.http.put("/_sim/knobs", json=changes)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def stats(self) -> dict:
        return self.http.get("/_sim/stats").json()

    def fingerprint(self, authorization: str) -> str:
        """What the stats show as `last_authorization_fingerprint` for this Authorization value."""
        return self.app.state.simulator.fingerprint(authorization)

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


class OwnRedis:
    """A redis-server of the test's own on a free loopback port, which the test may kill and start
    again (empty: nothing is saved); the shared Redis at 6379 is never touched."""

    def __init__(self):
        self.binary = require_redis_server()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> "OwnRedis":
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def kill_pubsub_clients(self) -> int:
        """`CLIENT KILL TYPE pubsub`: Redis drops every subscriber's connection and stays up."""
        import redis

        client = redis.Redis(port=self.port)
        try:
            return client.client_kill_filter(_type="pubsub")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as when the machine or the container running Redis dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class PostgresDatabase:
    """A fresh, empty PostgreSQL database for one server, dropped afterwards."""

    def __init__(self):
        require_postgres()
        self.name = f"jobmon_test_{uuid.uuid4().hex[:12]}"
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        self._admin(f'CREATE DATABASE "{self.name}"')

    def _admin(self, *statements: str) -> None:
        import asyncpg

        async def run():
            conn = await asyncpg.connect(PG_ADMIN_URL)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())

    def drop(self) -> None:
        self._admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}' "
            "AND pid <> pg_backend_pid()",
            f'DROP DATABASE IF EXISTS "{self.name}"',
        )


def database_url(backend: str, tmp_path: Path) -> tuple[str, object]:
    """(url, handle) for a fresh database of the backend; handle.drop() when done (or None)."""
    if backend == "postgres":
        database = PostgresDatabase()
        return database.url, database
    return f"sqlite:///{tmp_path / 'jobmon.db'}", None


@contextlib.asynccontextmanager
async def fresh_db(backend: str, tmp_path: Path):
    """A connected Db on a fresh database of the backend, dropped (PostgreSQL) when done."""
    from server.db import Db

    url, handle = await asyncio.to_thread(database_url, backend, tmp_path)  # it runs its own loop
    database = Db(url)
    await database.connect()
    try:
        yield database
    finally:
        await database.disconnect()
        if handle is not None:
            await asyncio.to_thread(handle.drop)


def write_clusters_file(path: Path, clusters: dict[str, str]) -> Path:
    path.write_text(json.dumps([{"id": cid, "name": f"Cluster {cid}", "base_url": url}
                                for cid, url in clusters.items()]))
    return path


def server_settings(folder: Path, database: str, clusters: dict[str, str]) -> dict[str, str]:
    """The JOBMON_ settings of a test server: its data in `folder`, these clusters, short leases."""
    return {
        "JOBMON_DATA_DIR": str(folder / "data"),
        "JOBMON_DATABASE_URL": database,
        "JOBMON_CLUSTERS_FILE": str(write_clusters_file(folder / "clusters.json", clusters)),
        "JOBMON_LEASE_SECONDS": "2",
        "JOBMON_UPSTREAM_TIMEOUT": "5",
    }


class LiveServer:
    """A Job Monitor server under uvicorn in a thread, with its settings and database."""

    def __init__(self, env: dict[str, str]):
        from server.app import create_app
        from server.config import load_settings

        # tests poll and log in from one address far faster than people do: the rate limits are off
        # unless a test sets JOBMON_RATE_LIMIT (test_ratelimit.py)
        env = {"JOBMON_RATE_LIMIT": "0", **env}
        self.env = env
        self.settings = load_settings(env)
        sock = free_socket()
        port = sock.getsockname()[1]
        self.app = create_app(self.settings, self_url=f"http://127.0.0.1:{port}")
        self.server = ThreadedServer(self.app, sock).start()
        self.url = self.server.url
        self._clients: list[Api] = []

    def stop(self) -> None:
        self.close_clients()
        self.server.stop()

    def close_clients(self) -> None:
        """Close the API clients made so far by client()."""
        for api in self._clients:
            api.close()
        self._clients.clear()

    def busy_jobs(self) -> int:
        """How many jobs are queued or running."""
        sql = "SELECT COUNT(*) FROM jobs WHERE status IN ('QUEUED', 'IN_PROGRESS')"
        return db_rows(self.settings.database_url, sql)[0][0]

    def settle(self, timeout: float = 30) -> None:
        """Wait until no job is queued or running: a shared server's next test starts on a quiet server."""
        deadline = time.monotonic() + timeout
        while (busy := self.busy_jobs()) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{busy} job(s) still queued or running {timeout} s after the test")
            time.sleep(0.02)

    def stop_serving(self) -> None:
        """Shut the server down as a stop would, keeping its port, settings and database (see restart)."""
        self.server.stop()

    def restart(self) -> None:
        """Serve again on the same port and database after stop_serving(), with a fresh app."""
        from server.app import create_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.server.port))
        self.app = create_app(self.settings, self_url=self.url)
        self.server = ThreadedServer(self.app, sock).start()

    def _accounts(self, action):
        from server.accounts.store import Accounts

        return on_database(self.settings.database_url, lambda db: action(Accounts(db)), migrated=True)

    def create_user(self, username: str, role: str = "user", password: str = "correct-horse") -> dict:
        user = self._accounts(lambda accounts: accounts.create_user(username, password, role))
        user["password"] = password
        return user

    def create_token(self, user: dict, scope: str = "read", name: str = "test") -> str:
        from server.accounts.store import Scope

        token = self._accounts(lambda accounts: accounts.create_token(
            user["id"], user["role"], Scope.parse(scope), name))
        return token["token"]

    def client(self, user: dict | None = None, token: str | None = None) -> "Api":
        api = Api(self.url)
        self._clients.append(api)
        if user is not None:
            api.login(user["username"], user["password"])
        if token is not None:
            api.http.headers["Authorization"] = f"Bearer {token}"
        return api


class Api:
    """An HTTP client of the API as a browser or a script uses it (cookie + CSRF, or a token)."""

    def __init__(self, url: str):
        self.url = url
        self.http = http_client(base_url=url, timeout=30)
        self.csrf: str | None = None

    def login(self, username: str, password: str) -> httpx.Response:
        response = self.http.post("/api/auth/login", json={"username": username, "password": password})
        if response.status_code == 200:
            self.csrf = response.json()["csrf_token"]
            self.http.headers["X-CSRF-Token"] = self.csrf
        return response

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def delete(self, path: str, **kwargs) -> httpx.Response:
        return self.http.delete(path, **kwargs)

    def put(self, path: str, **kwargs) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def start(self, cids, action: str = "PE-Enable", cluster: str = "sim", **kwargs) -> dict:
        """Start a Set Action; return the job (asserting 202)."""
        response = self.post("/api/set-actions", json={"cluster": cluster, "action": action, "cids": cids},
                             **kwargs)
        assert response.status_code == 202, response.text
        return response.json()["job"]

    def job(self, job_id: str) -> dict:
        response = self.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()["job"]

    def wait_for(self, job_id: str, statuses=("SUCCESS", "FAILED", "PARTIAL", "CANCELLED"),
                 timeout: float = 30) -> dict:
        """Poll until the job reaches one of the statuses; return it."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
            time.sleep(0.02)

    def close(self) -> None:
        self.http.close()


class SubprocessServer:
    """`python -m server serve` as a real process, for tests that kill it."""

    def __init__(self, env: dict[str, str], port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "JOBMON_RATE_LIMIT": "0", **env, "PYTHONPATH": str(ROOT)}  # see LiveServer
        self.process: subprocess.Popen | None = None
        # a file, not a pipe: nobody reads a pipe while the server runs, and a full pipe blocks it
        fd, self.log_path = tempfile.mkstemp(prefix="jobmon-server-", suffix=".log")
        os.close(fd)

    def output(self) -> str:
        """Everything the server printed so far."""
        return Path(self.log_path).read_text(errors="replace")

    def start(self) -> "SubprocessServer":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        with http_client(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.output()}")
                try:
                    if http.get(self.url + "/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError("server did not become ready within 30 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def api_error(response: httpx.Response, status: int) -> dict:
    """The `error` object of a JSON error answer, after checking the status and the envelope."""
    assert response.status_code == status, f"{response.status_code} != {status}: {response.text}"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"], error
    return error


def finished_job(api: Api, cids: list[str], cluster: str = "sim") -> dict:
    """Start a Set Action and wait until it has finished; the job as it ended."""
    return api.wait_for(api.start(cids, cluster=cluster)["job_id"])


def on_database(url: str, action, migrated: bool = False):
    """Run `action(db)` on a connection of our own to the database at `url` (migrated first, unless
    a server has done it already)."""
    from server.db import Db, migrate

    async def run():
        db = Db(url)
        await db.connect()
        try:
            if not migrated:
                await migrate(db)
            return await action(db)
        finally:
            await db.disconnect()

    return asyncio.run(run())


def with_db(server, action):
    """Run `action(db)` on a connection of our own to the server's database."""
    return on_database(server.settings.database_url, action, migrated=True)


def users_with_tokens(url: str, usernames: list[str], password: str = "correct-horse") -> list[tuple[dict, str]]:
    """New users, each with a write token, made straight in the database at `url`."""
    from server.accounts.store import Accounts, Scope

    async def make(db) -> list[tuple[dict, str]]:
        accounts = Accounts(db)
        made = []
        for username in usernames:
            user = await accounts.create_user(username, password)
            made.append((user, (await accounts.create_token(user["id"], "user", Scope.WRITE, "test"))["token"]))
        return made

    return on_database(url, make)


def db_rows(url: str, sql: str, *args) -> list[tuple]:
    """Rows of one SQL query, read straight from a server's database (SQLite path or PostgreSQL URL)."""
    if url.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as conn:
            # PostgreSQL's $n parameters as SQLite's ?n; a write is committed
            rows = [tuple(row) for row in conn.execute(re.sub(r"\$(\d+)", r"?\1", sql), args).fetchall()]
            conn.commit()
            return rows
    import asyncpg

    async def run():
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())

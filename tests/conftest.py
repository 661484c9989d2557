"""Fixtures: the simulated clusters, fresh databases on each backend, and live servers.

Most tests only need a running server: they get the `server` of their backend, one per backend for
the whole session, and are kept apart by their users (`alice`, `bob` and `admin` have unique names;
each test sees only what its own users did). A test that reads global figures (everyone's stats,
every user, every cache entry) is marked `own_server` and gets a server with a database of its own;
`make_server(**settings)` makes servers with other settings, several nodes, or a restart.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import BACKENDS, LiveServer, SimulatorServer, database_url, server_settings, unique


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes():
    """Argon2 at its cheapest in the in-process servers and helpers: the same checks, in a millisecond
    instead of a fifth of a second per user made and per login (as Django's test settings do)."""
    from argon2 import PasswordHasher

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("server.accounts.store.PasswordHasher",
                      functools.partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1))
        yield


@pytest.fixture(scope="session")
def simulator_session():
    sim = SimulatorServer()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def simulator2_session():
    sim = SimulatorServer()
    yield sim
    sim.stop()


@pytest.fixture
def sim(simulator_session):
    """The simulated cluster 'sim' on its own loopback port, reset for each test."""
    simulator_session.reset()
    yield simulator_session
    simulator_session.reset()


@pytest.fixture
def sim2(simulator2_session):
    """A second simulated cluster, 'sim2', for isolation between clusters."""
    simulator2_session.reset()
    yield simulator2_session
    simulator2_session.reset()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def stop_later():
    """`stop_later(servers, databases)`: stop quiet servers and drop their databases in the background
    while the next tests run (uvicorn takes a tenth of a second to stop); all done by the session's end."""
    pool = ThreadPoolExecutor(2, thread_name_prefix="stop-later")
    pending = []

    def stop(servers, databases) -> None:
        for server in servers:
            server.stop()
        for database in databases:
            database.drop()

    def later(servers, databases) -> None:
        if any(server.busy_jobs() for server in servers):
            stop(servers, databases)  # a job still calling the clusters: stopped before the next test
        else:
            pending.append(pool.submit(stop, servers, databases))

    yield later
    pool.shutdown(wait=True)
    for future in pending:
        future.result()


@pytest.fixture
def make_server(backend, tmp_path, sim, sim2, stop_later):
    """Start Job Monitor servers on a fresh database of the test's backend; `make_server(**env)` adds
    JOBMON_ settings. Every server made by one test shares that test's database."""
    started, databases = [], []
    url, handle = database_url(backend, tmp_path)
    if handle is not None:
        databases.append(handle)
    defaults = server_settings(tmp_path, url, {"sim": sim.url, "sim2": sim2.url})

    def make(**env) -> LiveServer:
        settings = dict(defaults)
        settings.update({key if key.startswith("JOBMON_") else f"JOBMON_{key.upper()}": str(value)
                         for key, value in env.items()})
        server = LiveServer(settings)
        started.append(server)
        return server

    make.database_url = url
    yield make
    stop_later(started, databases)


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory, simulator_session, simulator2_session):
    """`shared_servers(backend)`: the session's server on that backend, started when first asked for."""
    servers: dict[str, LiveServer] = {}
    databases = []

    def get(backend: str) -> LiveServer:
        if backend not in servers:
            folder = tmp_path_factory.mktemp(f"shared-{backend}")
            url, handle = database_url(backend, folder)
            if handle is not None:
                databases.append(handle)
            servers[backend] = LiveServer(server_settings(folder, url, {"sim": simulator_session.url,
                                                                         "sim2": simulator2_session.url}))
        return servers[backend]

    yield get
    for server in servers.values():
        server.stop()
    for database in databases:
        database.drop()


@pytest.fixture
def server(request, backend, shared_servers, sim, sim2):
    """A Job Monitor server with default settings: the backend's shared one, or with
    @pytest.mark.own_server one with a database of its own."""
    if request.node.get_closest_marker("own_server"):
        yield request.getfixturevalue("make_server")()
        return
    shared = shared_servers(backend)
    yield shared
    # the next test starts on a quiet server: no job of this one still calling the clusters
    sim.reset()
    sim2.reset()
    shared.settle()
    shared.close_clients()


@pytest.fixture
def alice(server):
    return server.create_user(unique("alice"))


@pytest.fixture
def bob(server):
    return server.create_user(unique("bob"))


@pytest.fixture
def admin(server):
    return server.create_user(unique("root-admin"), role="admin")

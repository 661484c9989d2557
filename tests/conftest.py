"""Fixtures: the simulated cluster, fresh databases on each backend, and live servers."""

from __future__ import annotations

import pytest

from support import SimulatorServer, LiveServer, database_url, write_clusters_file

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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


@pytest.fixture
def make_server(backend, tmp_path, sim, sim2):
    """Start Job Monitor servers on the test's backend; `make_server(**env)` adds JOBMON_ settings."""
    started, databases = [], []
    url, handle = database_url(backend, tmp_path)
    if handle is not None:
        databases.append(handle)
    clusters = write_clusters_file(tmp_path / "clusters.json", {"sim": sim.url, "sim2": sim2.url})

    def make(**env) -> LiveServer:
        settings = {
            "JOBMON_DATA_DIR": str(tmp_path / "data"),
            "JOBMON_DATABASE_URL": url,
            "JOBMON_CLUSTERS_FILE": str(clusters),
            "JOBMON_LEASE_SECONDS": "2",
            "JOBMON_UPSTREAM_TIMEOUT": "5",
        }
        settings.update({key if key.startswith("JOBMON_") else f"JOBMON_{key.upper()}": str(value)
                         for key, value in env.items()})
        server = LiveServer(settings)
        started.append(server)
        return server

    make.database_url = url
    yield make
    for server in started:
        server.stop()
    for database in databases:
        database.drop()


@pytest.fixture
def server(make_server):
    """One Job Monitor server with default settings."""
    return make_server()


@pytest.fixture
def alice(server):
    return server.create_user("alice")


@pytest.fixture
def bob(server):
    return server.create_user("bob")


@pytest.fixture
def admin(server):
    return server.create_user("root-admin", role="admin")

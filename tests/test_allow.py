"""The `Allow` header of 405 answers (server/api/allow.py): every method the path serves.

Every path of the app's route table (the embedded simulator's, under its Mount, and the static
files' included) is tried with every method over real HTTP. What a path serves is what did not
answer 405; each 405 must name exactly that in `Allow`, in the error envelope.
"""

from __future__ import annotations

import re

import pytest
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from support import LiveServer, api_error

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PATH_PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The embedded default (no clusters file: the simulated cluster is mounted at /sim)."""
    folder = tmp_path_factory.mktemp("allow")
    server = LiveServer({"JOBMON_DATA_DIR": str(folder / "data"),
                         "JOBMON_DATABASE_URL": f"sqlite:///{folder / 'jobmon.db'}"})
    yield server
    server.stop()


def concrete_paths(routes, prefix: str = "") -> list[str]:
    """One request path for each route: path parameters filled with a sample value."""
    paths = []
    for route in routes:
        if isinstance(route, Mount):
            if isinstance(route.app, StaticFiles):
                paths.append(f"{prefix}{route.path}/index.html")
            else:
                paths += concrete_paths(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            paths.append(prefix + PATH_PARAM.sub("x1", route.path))
    return sorted(set(paths))


def test_every_405_names_every_method_the_path_serves(server):
    paths = concrete_paths(server.app.other_asgi_app.routes)
    assert {"/api/tokens", "/admin/users", "/sim/_sim/knobs", "/sim/tms/v1/appstatus/batch",
            "/web/index.html"} <= set(paths)
    api = server.client()
    checked = 0
    for path in paths:
        answers = {method: api.http.request(method, path) for method in METHODS}
        served = {method for method, answer in answers.items() if answer.status_code != 405}
        assert "OPTIONS" not in served and served, (path, served)
        for method, answer in answers.items():
            if answer.status_code != 405:
                continue
            allowed = {m.strip() for m in answer.headers["allow"].split(",")}
            assert allowed == served, f"{method} {path}: Allow {sorted(allowed)}, serves {sorted(served)}"
            if method != "HEAD":  # a HEAD answer has no body
                error = api_error(answer, 405)
                assert error["code"] == "method_not_allowed", (method, path)
                assert error["details"] == {"method": method, "allowed": sorted(served)}, (method, path)
            checked += 1
    assert checked > 3 * len(paths)


@pytest.mark.parametrize("method, path, allowed", [
    ("PUT", "/api/tokens", "GET, HEAD, POST"),
    ("DELETE", "/admin/users", "GET, HEAD, POST"),
    ("OPTIONS", "/api/tokens", "GET, HEAD, POST"),
    ("DELETE", "/sim/_sim/knobs", "GET, HEAD, PUT"),
    # GET of this path is the {cid} route's, POST the batch route's
    ("PUT", "/sim/tms/v1/appstatus/batch", "GET, HEAD, POST"),
    ("POST", "/api/dashboard/jobs/running", "GET, HEAD, PATCH"),
    ("POST", "/web/index.html", "GET, HEAD"),
])
def test_paths_served_by_several_routes(server, method, path, allowed):
    answer = server.client().http.request(method, path)
    assert answer.status_code == 405 and answer.headers["allow"] == allowed

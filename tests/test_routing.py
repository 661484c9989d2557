"""PrefixRouter (server/routing.py) picks the route Starlette's own loop would, for every path of
the app, and the app still answers 404/405/redirects as before."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Match

from server.app import create_app
from server.config import load_settings
from server.routing import PrefixRouter, literal_segments


@pytest.fixture(scope="module")
def router(tmp_path_factory) -> PrefixRouter:
    settings = load_settings({"JOBMON_DATA_DIR": str(tmp_path_factory.mktemp("routing")),
                              "JOBMON_SECRET_KEY": "routing-test-secret-0123456789abcdef"})
    app = create_app(settings)
    router = app.other_asgi_app.router
    assert isinstance(router, PrefixRouter)
    return router


def sample_paths(router: PrefixRouter) -> list[str]:
    """Each route's path with its parameters filled in several ways, and paths that match none."""
    paths = {"/", "/nope", "/api", "/api/", "/api/nope", "/api/dashboard", "/api/dashboard/nope/x", "/sim",
             "/sim/", "/sim/tms/v1/health", "/web", "/web/", "/web/js/app.js", "/admin", "/admin/jobs/",
             "//", "/api//jobs", "/healthz/", "/%7Bx%7D"}
    for route in router.routes:
        path = getattr(route, "path", "")
        for fill in ("x", "0b1f3c9e-0000-4000-8000-000000000001", "running", "a/b", "{x}", ""):
            paths.add(re.sub(r"{[^}]*}", fill, path))
            paths.add(re.sub(r"{[^}]*}", fill, path) + "/")
    return sorted(paths)


def first_match(routes, scope):
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"])
def test_the_route_found_is_the_one_starlette_would_find(router, method):
    paths = sample_paths(router)
    assert len(paths) > 200
    found = 0
    for path in paths:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        expected = first_match(router.routes, scope)
        assert first_match(router.candidates(path), scope) is expected, (method, path)
        found += expected is not None
    assert found >= {"GET": 40, "HEAD": 40, "POST": 20}.get(method, 1)  # the sample does reach the routes


def test_literal_segments():
    assert literal_segments("/api/dashboard/jobs/{job_id}/complete") == ("api", "dashboard")
    assert literal_segments("/api/tokens/{token_id}") == ("api", "tokens")
    assert literal_segments("/healthz") == ("healthz",)
    assert literal_segments("/") == ("",)
    assert literal_segments("/a{x}") == ()
    assert literal_segments("") == ()  # a Mount at the root: tried for every path


def test_answers_without_a_full_match_are_starlettes(server):
    api = server.client()
    assert api.get("/api/dashboard/nope").status_code == 404
    wrong = api.put("/api/dashboard/jobs")
    assert wrong.status_code == 405 and set(wrong.headers["allow"].split(", ")) >= {"GET", "POST"}
    redirect = api.get("/web", follow_redirects=False)  # the Mount wants its trailing slash
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/web/")
    assert api.get("/healthz").json() == {"status": "ok"}

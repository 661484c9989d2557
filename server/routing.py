"""Finding a request's route by its first path segments, not by trying every route in turn.

Starlette's router tries each route's regular expression in order until one matches: 55 routes,
so a CI agent's `PATCH /api/dashboard/jobs/{id}/complete` was tried against 21 of them, a call of
the built-in cluster (`/sim/...`) against all 55, each try about 0.6 µs. `PrefixRouter` files
each route under the literal segments its path starts with (`/api/dashboard/jobs/{job_id}`:
`api`, `dashboard`) and tries only the routes filed under the request path's first two segments
(and those with no literal first segment), still in their order: the first full match is the
one Starlette's loop would find. Anything else (no full match: a 405, a redirect of a trailing
slash, a 404; lifespan and WebSocket scopes) goes through Starlette's own code, unchanged.

Where this reaches into Starlette: it sets `scope["router"]`, `scope["route"]` and the match's
child scope as `Router.app` does, then calls the route's `handle`. Checked against the version
pyproject pins; tests/test_compat.py fails when `Router.app`'s source changes.
"""

from __future__ import annotations

from starlette.routing import Match, Router, get_route_path
from starlette.types import Receive, Scope, Send

# sha256 of inspect.getsource(...) of each method relied on, in the version checked (starlette 1.10.0)
CHECKED_SOURCES = {
    "starlette.routing.Router.app": "1b1fa16c99a8ce6b78f9dd6be325c474595dc1d0f7a4cd295fcf772897c1444c",
}

DEPTH = 2  # literal leading segments a route is filed under


def literal_segments(path: str) -> tuple[str, ...]:
    """The leading segments every path a route (or Mount) of `path` matches starts with, at most
    DEPTH of them: the whole ones before the first `{` (`/api/jobs/{job_id}` → api, jobs;
    `/healthz` → healthz; `/a{x}` → none)."""
    if "{" in path:
        segments = path.split("{", 1)[0].split("/")[1:-1]  # the last piece is not a whole segment
    else:
        segments = path.split("/")[1:]
    return tuple(segments[:DEPTH])


class PrefixRouter(Router):
    """Starlette's router, trying only the routes a path's first segments can match (see module)."""

    # prefix -> the routes a path with that prefix may match, in order; made at the first request
    # (the routes are fixed by then)
    _by_prefix: dict[tuple[str, ...], list] | None = None

    def _build_by_prefix(self) -> dict[tuple[str, ...], list]:
        filed: dict[tuple[str, ...], list[int]] = {(): []}
        for position, route in enumerate(self.routes):
            path = getattr(route, "path", None)
            filed.setdefault(literal_segments(path) if isinstance(path, str) else (), []).append(position)
        # a prefix's routes: those filed under it and under each shorter prefix of it
        return {key: [self.routes[position]
                      for position in sorted(p for depth in range(len(key) + 1) for p in filed.get(key[:depth], ()))]
                for key in filed}

    def candidates(self, path: str) -> list:
        """The routes that could match `path`, in the router's order: those of its longest prefix
        that has routes filed under it."""
        if self._by_prefix is None:
            self._by_prefix = self._build_by_prefix()
        segments = tuple(path.split("/", DEPTH + 1)[1:DEPTH + 1])
        for depth in range(len(segments), -1, -1):
            found = self._by_prefix.get(segments[:depth])
            if found is not None:
                return found
        return []  # not reached: the empty prefix is always there

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.candidates(get_route_path(scope)):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)

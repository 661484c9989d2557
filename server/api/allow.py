"""The `Allow` header of a 405 answer: every method the request's path serves.

Starlette answers a wrong method with the methods of the first route whose path matched, so a
path served by two routes (GET and POST of `/api/tokens`, or `/sim/tms/v1/appstatus/batch`, whose
GET is the `{cid}` route's) named only one. Here the route table is walked as the router walks it,
through mounted apps too, and every route whose path matches adds its methods.
"""

from __future__ import annotations

from typing import Iterable

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_METHODS = frozenset({"GET", "HEAD"})  # all that StaticFiles serves


def path_methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str]:
    """The methods served at the path of this HTTP request's scope, by any of `routes`."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route):
            match, _ = route.matches(scope)
            # a route without methods (a class endpoint) says nothing about what it serves
            if match is not Match.NONE and route.methods:
                methods |= route.methods
        elif isinstance(route, Mount):
            match, child_scope = route.matches(scope)
            if match is Match.NONE:
                continue
            if isinstance(route.app, StaticFiles):
                methods |= STATIC_METHODS
            else:
                methods |= path_methods(route.routes, {**scope, **child_scope})
    return methods


def allow_header(routes: Iterable[BaseRoute], scope: Scope) -> str | None:
    """The value of `Allow` for a 405 at this scope's path, or None if no route serves it."""
    methods = path_methods(routes, scope)
    return ", ".join(sorted(methods)) if methods else None

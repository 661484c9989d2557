"""`create_app(settings)`: the Starlette app with its routes, Socket.IO and lifespan."""

from __future__ import annotations

import contextlib
import logging

import socketio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from server import web
from server.api import admin as admin_routes
from server.api import auth as auth_routes
from server.api import dashboard as dashboard_routes
from server.api import jobs as jobs_routes
from server.api import openapi as openapi_routes
from server.api import ops
from server.api import scope as scope_routes
from server.api import system as system_routes
from server.api.allow import allow_header
from server.api.common import OrjsonResponse
from server.config import ConfigError, Settings
from server.errors import AppError, error_body
from server.metrics import HttpMetricsMiddleware
from server.ratelimit import RateLimitMiddleware
from server.realtime.namespace import create_socketio_server
from server.routing import PrefixRouter
from server.services import running_services
from server.sim.cluster import create_simulator_app, knobs_from_env
from server.upstream.clusters import Cluster, ClusterRegistry, load_clusters_file
from server.uvicorn_compat import LeanWebSocketProtocol, OneWriteHttpProtocol

logger = logging.getLogger(__name__)

DEMO_USERS = (("demo", "demo-password", "user"), ("admin", "admin-password", "admin"))


async def _app_error(request: Request, exc: AppError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    return OrjsonResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    codes = {404: "not_found", 405: "method_not_allowed"}
    headers = dict(getattr(exc, "headers", None) or {})
    details = None
    if exc.status_code == 405:
        # Starlette names the methods of one route only; a path may be served by several
        allowed = allow_header(request.app.router.routes, request.scope) or headers.get("Allow")
        if allowed:
            headers["Allow"] = allowed
        details = {"method": request.method, "allowed": allowed.split(", ") if allowed else []}
    body = error_body(codes.get(exc.status_code, "http_error"), str(exc.detail), details)
    return OrjsonResponse(body, status_code=exc.status_code, headers=headers or None)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return OrjsonResponse(error_body("internal_error", "Internal server error"), status_code=500)


class SecurityHeaders:
    """Headers that keep the dashboard from being framed or fed foreign scripts."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy",
                     b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                     b"style-src 'self'; object-src 'none'; frame-ancestors 'none'"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _sim_control_guard(settings: Settings):
    """Who may use the embedded simulator's `/sim/_sim` controls: anyone in demo mode, else only
    an admin acting as admin (a session, with its CSRF token on writes, or an admin-scoped token)."""
    if settings.demo:
        return None

    async def admins_only(request: Request) -> None:
        await request.state.services.auth.require_admin(request)

    return admins_only


class SocketIOApp(socketio.ASGIApp):
    """python-socketio's ASGI app around the Starlette app (`other_asgi_app`), with the same
    Socket.IO server at `/socket.io` and at `/admin/socket.io`, the path clients of the design's admin
    protocol connect to: the same connections, authentication and events on both."""

    ADMIN_PATH = "/admin/socket.io"

    def __init__(self, sio: socketio.AsyncServer, app):
        super().__init__(sio, other_asgi_app=app, socketio_path="socket.io")
        self.admin_path = socketio.ASGIApp(sio, socketio_path=self.ADMIN_PATH)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        admin = path == self.ADMIN_PATH or path.startswith(self.ADMIN_PATH + "/")
        if admin and scope["type"] in ("http", "websocket"):
            await self.admin_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _clusters(settings: Settings, self_url: str) -> list[Cluster]:
    if settings.clusters_file:
        return load_clusters_file(settings.clusters_file)
    return [Cluster("sim", "Simulated cluster", self_url.rstrip("/") + "/sim")]


# How uvicorn serves the app (`serve` and the tests' servers alike). Socket.IO compresses
# nothing (a broadcast is encoded once, not deflated per socket) and Engine.IO's own heartbeat
# finds dead connections, so uvicorn's WebSocket pings would only add a timer per connection.
# Each HTTP response goes out in one write, and a WebSocket holds less while it lives
# (server/uvicorn_compat.py).
UVICORN_OPTIONS = {"lifespan": "on", "ws_per_message_deflate": False, "ws_ping_interval": None,
                   "http": OneWriteHttpProtocol, "ws": LeanWebSocketProtocol}


def create_app(settings: Settings, *, self_url: str = "http://127.0.0.1:8000", extra_routes=None):
    """Build the ASGI app: Starlette routes wrapped by the Socket.IO server."""
    sio = create_socketio_server(settings)
    route_modules = [auth_routes, jobs_routes, dashboard_routes, scope_routes, admin_routes, system_routes, ops,
                     openapi_routes]
    # read now, so a wrong clusters file stops start-up with a message naming the variable
    cluster_list = _clusters(settings, self_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        demo_users = DEMO_USERS if settings.demo else ()
        async with running_services(settings, sio, ClusterRegistry(cluster_list), demo_users=demo_users) as services:
            yield {"services": services}

    routes = [route for module in route_modules for route in module.routes()]
    routes += web.routes()  # /, /wallboard and /web/...
    routes += list(extra_routes or [])
    if settings.embedded_simulator:
        try:
            knobs = knobs_from_env(settings.sim_env)
        except ValueError as exc:  # the message names the JOBMON_SIM_ variable
            raise ConfigError(str(exc)) from None
        simulator = create_simulator_app(knobs, control_guard=_sim_control_guard(settings))
        # its refusals and its 404/405 answers in the app's error envelope, like every other path
        simulator.add_exception_handler(AppError, _app_error)
        simulator.add_exception_handler(HTTPException, _http_error)
        routes.append(Mount("/sim", app=simulator))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={AppError: _app_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.router = PrefixRouter(routes, lifespan=lifespan)  # as Starlette makes its Router (server/routing.py)
    app.add_middleware(RateLimitMiddleware)  # innermost of the three: its 429 gets the headers and is counted
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HttpMetricsMiddleware, routes=app.routes)
    return SocketIOApp(sio, app)

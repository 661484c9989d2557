"""`create_app(settings)`: the Starlette app with its routes, Socket.IO and lifespan."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import socketio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.accounts.store import Accounts
from server.api import admin as admin_routes, auth as auth_routes, jobs as jobs_routes, ops, scope as scope_routes
from server.api.common import OrjsonResponse
from server.accounts.audit import AuditLog
from server.accounts.auth import Authenticator
from server.appstatus.cache import AppStatusCache
from server.upstream.clusters import Cluster, ClusterRegistry, load_clusters_file
from server.config import ConfigError, Settings
from server.db import Db, migrate
from server.errors import AppError
from server.jobs.store import JobStore
from server.realtime.namespace import Realtime
from server.jobs.retention import RetentionTask
from server.jobs.runner import JobRunner
from server.appstatus.scope import JobScope
from server.services import Services
from server.sim.cluster import create_simulator_app, knobs_from_env
from server.upstream.client import TmsClient

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
DEMO_USERS = (("demo", "demo-password", "user"), ("admin", "admin-password", "admin"))


async def _app_error(request: Request, exc: AppError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    return OrjsonResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail),
                      "details": None}}
    return OrjsonResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return OrjsonResponse({"error": {"code": "internal_error", "message": "Internal server error",
                                   "details": None}}, status_code=500)


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


def _page(name: str):
    async def page(request: Request) -> Response:
        path = WEB_DIR / name
        if not path.is_file():
            return OrjsonResponse({"error": {"code": "not_found", "message": f"{name} is not built",
                                           "details": None}}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    page.__doc__ = f"The browser page {name}."
    return page


def _clusters(settings: Settings, self_url: str) -> list[Cluster]:
    if settings.clusters_file:
        return load_clusters_file(settings.clusters_file)
    return [Cluster("sim", "Simulated cluster", self_url.rstrip("/") + "/sim")]


async def _ensure_demo_users(accounts: Accounts) -> None:
    for username, password, role in DEMO_USERS:
        if not await accounts.verify_password(username, password):
            try:
                await accounts.create_user(username, password, role)
            except AppError:
                await accounts.set_password(username, password)


# How uvicorn serves the app (`serve` and the tests' servers alike). Socket.IO compresses
# nothing (a broadcast is encoded once, not deflated per socket) and Engine.IO's own heartbeat
# finds dead connections, so uvicorn's WebSocket pings would only add a timer per connection.
UVICORN_OPTIONS = {"lifespan": "on", "ws_per_message_deflate": False, "ws_ping_interval": None}


def create_app(settings: Settings, *, self_url: str = "http://127.0.0.1:8000", extra_routes=None):
    """Build the ASGI app: Starlette routes wrapped by the Socket.IO server."""
    realtime = Realtime(settings)
    route_modules = [auth_routes, jobs_routes, scope_routes, admin_routes, ops]
    # read now, so a wrong clusters file stops start-up with a message naming the variable
    cluster_list = _clusters(settings, self_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        db = Db(settings.database_url)
        await db.connect()
        await migrate(db)
        accounts = Accounts(db)
        if settings.demo:
            await _ensure_demo_users(accounts)
        clusters = ClusterRegistry(cluster_list)
        client = TmsClient(settings.upstream_timeout, settings.upstream_connections)
        jobs = JobStore(db)
        runner = JobRunner(jobs, clusters, client, job_concurrency=settings.job_concurrency,
                           batch_concurrency=settings.batch_concurrency, lease_seconds=settings.lease_seconds)
        services = Services(settings=settings, db=db, accounts=accounts,
                            auth=Authenticator(accounts, settings.secret_key, settings.session_days),
                            audit=AuditLog(db), jobs=jobs, clusters=clusters, client=client, runner=runner)
        services.cache = AppStatusCache(
            db, client, batch_size=settings.appstatus_batch_size, concurrency=settings.appstatus_concurrency,
            cleanup_interval=settings.appstatus_cleanup_interval,
            claim_seconds=2 * settings.upstream_timeout + 10)
        services.scope = JobScope(services)
        realtime.attach(services)
        await realtime.start()
        await runner.start()
        await services.cache.start()
        await services.scope.start()
        retention = services.extras["retention"] = RetentionTask(db, settings)
        await retention.start()
        try:
            yield {"services": services}
        finally:
            await retention.stop()
            await runner.stop()
            await services.scope.stop()
            await services.cache.stop()
            await realtime.stop()
            await client.aclose()
            await db.disconnect()

    routes = [route for module in route_modules for route in module.routes()]
    routes += [Route("/", _page("index.html")), Route("/wallboard", _page("wallboard.html"))]
    routes += list(extra_routes or [])
    if WEB_DIR.is_dir():
        routes.append(Mount("/web", app=StaticFiles(directory=WEB_DIR), name="web"))
    if settings.embedded_simulator:
        try:
            knobs = knobs_from_env(settings.sim_env)
        except ValueError as exc:  # the message names the JOBMON_SIM_ variable
            raise ConfigError(str(exc)) from None
        routes.append(Mount("/sim", app=create_simulator_app(knobs)))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={AppError: _app_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.add_middleware(SecurityHeaders)
    return socketio.ASGIApp(realtime.sio, other_asgi_app=app, socketio_path="socket.io")

"""Health, readiness, Prometheus metrics and the OpenAPI description."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from server.api.common import OrjsonResponse, services
from server.stats.counts import status_counts


async def healthz(request: Request) -> OrjsonResponse:
    """The process is up (no dependency checked)."""
    return OrjsonResponse({"status": "ok"})


async def readyz(request: Request) -> OrjsonResponse:
    """The database answers: ready to take traffic."""
    s = services(request)
    try:
        await s.db.ping()
    except Exception as exc:
        return OrjsonResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return OrjsonResponse({"status": "ready", "node": s.runner.node_id})


async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: jobs by status, this node's running jobs and sockets."""
    s = services(request)
    lines = ["# HELP jobmon_jobs Jobs by status (all users).", "# TYPE jobmon_jobs gauge"]
    for status, n in (await status_counts(s.db)).items():
        lines.append(f'jobmon_jobs{{status="{status}"}} {n}')
    lines += ["# HELP jobmon_node_running_jobs Jobs this node is executing.",
              "# TYPE jobmon_node_running_jobs gauge",
              f"jobmon_node_running_jobs {len(s.runner.running_jobs)}"]
    lines += ["# HELP jobmon_node_sockets Socket.IO clients connected to this node.",
              "# TYPE jobmon_node_sockets gauge",
              f"jobmon_node_sockets {s.realtime.connected_count}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> OrjsonResponse:
    """A description of every HTTP route, generated from the routes and their docstrings."""
    paths: dict[str, dict] = {}
    for route in request.app.routes:
        methods = getattr(route, "methods", None)
        endpoint = getattr(route, "endpoint", None)
        if not methods or endpoint is None:
            continue
        summary = (endpoint.__doc__ or "").strip().splitlines()[0] if endpoint.__doc__ else ""
        for method in sorted(methods - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = {
                "summary": summary, "responses": {"200": {"description": "OK"}}}
    return OrjsonResponse({"openapi": "3.0.3", "info": {"title": "Job Monitor", "version": "1.0"},
                         "paths": paths})


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

"""Health, readiness, Prometheus metrics and the OpenAPI description."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema
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
    lines += ["# HELP jobmon_node_caught_up_users_total Users whose events the Redis bus lost, caught up "
              "from the event log by this node.",
              "# TYPE jobmon_node_caught_up_users_total counter",
              f"jobmon_node_caught_up_users_total {s.realtime.catchup.caught_up}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> OrjsonResponse:
    """A description of every HTTP route, generated from the routes, their docstrings and, where a
    route is `described`, its request and answer models."""
    routes = [route for route in request.app.routes
              if getattr(route, "methods", None) and getattr(route, "endpoint", None) is not None]
    models = {model for route in routes for model in (getattr(route.endpoint, "body_model", None),
                                                      getattr(route.endpoint, "answer_model", None)) if model}
    refs, schemas = models_json_schema([(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
                                       ref_template="#/components/schemas/{model}")

    def content(model) -> dict:
        return {"application/json": {"schema": refs[(model, "validation")]}}

    paths: dict[str, dict] = {}
    for route in routes:
        endpoint = route.endpoint
        summary = (endpoint.__doc__ or "").strip().splitlines()[0] if endpoint.__doc__ else ""
        answer = {"description": "OK"}
        if getattr(endpoint, "answer_model", None):
            answer["content"] = content(endpoint.answer_model)
        for method in sorted(route.methods - {"HEAD"}):
            operation = {"summary": summary, "responses": {str(getattr(endpoint, "answer_status", 200)): answer}}
            if getattr(endpoint, "body_model", None):
                operation["requestBody"] = {"required": True, "content": content(endpoint.body_model)}
            paths.setdefault(route.path, {})[method.lower()] = operation
    return OrjsonResponse({"openapi": "3.1.0", "info": {"title": "Job Monitor", "version": "1.0"},
                           "paths": paths, "components": {"schemas": schemas.get("$defs", {})}})


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

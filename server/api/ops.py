"""Health, readiness, Prometheus metrics and the OpenAPI description."""

from __future__ import annotations

import hmac

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.common import OrjsonResponse, services
from server.errors import NotFound, Unauthorized
from server.metrics import CONTENT_TYPE
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


async def metrics(request: Request) -> Response:
    """Prometheus text format: this node's metrics (see server/metrics.py) and jobs by status."""
    s = services(request)
    if not s.settings.metrics:
        raise NotFound("Metrics are turned off on this server (JOBMON_METRICS=off)")
    expected = s.settings.metrics_token
    if expected:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected.encode()):
            raise Unauthorized("Metrics need the scrape token: 'Authorization: Bearer <JOBMON_METRICS_TOKEN>'",
                               code="invalid_token")
    text = s.metrics.exposition(await status_counts(s.db))
    return Response(text, media_type=CONTENT_TYPE)


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

"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.common import OrjsonResponse, services
from server.api.models import Health, NotReady, Ready
from server.api.spec import operation
from server.errors import DatabaseOutage, NotFound, Unauthorized
from server.metrics import CONTENT_TYPE
from server.stats.counts import status_counts


@operation(auth=None, responses={200: Health}, tags=("ops",))
async def healthz(request: Request) -> OrjsonResponse:
    """The process is up (no dependency checked)."""
    return OrjsonResponse({"status": "ok"})


@operation(auth=None, responses={200: Ready, 503: NotReady}, tags=("ops",))
async def readyz(request: Request) -> OrjsonResponse:
    """The database answers: ready to take traffic (else 503 with Retry-After, and why)."""
    s = services(request)
    try:
        await s.db.ping()
    except DatabaseOutage as outage:
        return OrjsonResponse({"status": "unavailable", "database": outage.code, "message": outage.message},
                              status_code=503, headers={"Retry-After": str(outage.retry_after)})
    except Exception as exc:
        return OrjsonResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return OrjsonResponse({"status": "ready", "node": s.runner.node_id})


@operation(auth=None, responses={200: "text/plain"}, errors=(401, 404), tags=("ops",))
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


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

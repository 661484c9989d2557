"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from server.api.common import OrjsonResponse, services
from server.api.models import Health, NotReady, Ready
from server.api.spec import operation
from server.stats.counts import status_counts


@operation(auth=None, responses={200: Health}, tags=("ops",))
async def healthz(request: Request) -> OrjsonResponse:
    """The process is up (no dependency checked)."""
    return OrjsonResponse({"status": "ok"})


@operation(auth=None, responses={200: Ready, 503: NotReady}, tags=("ops",))
async def readyz(request: Request) -> OrjsonResponse:
    """The database answers: ready to take traffic."""
    s = services(request)
    try:
        await s.db.ping()
    except Exception as exc:
        return OrjsonResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return OrjsonResponse({"status": "ready", "node": s.runner.node_id})


@operation(auth=None, responses={200: "text/plain"}, tags=("ops",))
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


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

"""`GET /admin/system`: every node's system metrics (admins only), as the nodes reported them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from server.api.common import OrjsonResponse, services
from server.errors import BadRequest


async def system(request: Request) -> OrjsonResponse:
    """Every node's CPU, memory, event-loop lag, sockets, running jobs, fan-out queue, upstream calls
    in flight and database pool use, from each node's latest report; a silent node is `gone`."""
    s = services(request)
    await s.auth.require_admin(request)
    for name in request.query_params:
        raise BadRequest(f"Unknown parameter {name[:40]!r}: GET /admin/system takes none",
                         code="validation_error", details={"field": name[:40]})
    return OrjsonResponse(await s.system.nodes())


def routes() -> list[Route]:
    return [Route("/admin/system", system, methods=["GET"])]

"""`GET /admin/system`: every node's system metrics (admins only), as the nodes reported them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from server.api import models
from server.api.common import OrjsonResponse, services
from server.api.spec import ADMIN, operation


@operation(auth=ADMIN, query=models.NoQuery, responses={200: models.SystemAnswer})
async def system(request: Request) -> OrjsonResponse:
    """Every node's CPU, memory, event-loop lag, sockets, running jobs, fan-out queue, upstream calls
    in flight and database pool use, from each node's latest report; a silent node is `gone`."""
    return OrjsonResponse(await services(request).system.nodes())


def routes() -> list[Route]:
    return [Route("/admin/system", system, methods=["GET"])]

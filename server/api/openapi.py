"""GET /openapi.json: the API description, made from the routes' `operation`s (server/api/spec.py).

The browsable page is /docs (web/docs.html, Swagger UI vendored in web/vendor/), which reads it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from server.api.common import OrjsonResponse
from server.api.spec import openapi_document, operation

TITLE = "Job Monitor"
API_VERSION = "1.0"


@operation(auth=None, responses={200: "application/json"}, tags=("ops",))
async def openapi(request: Request) -> OrjsonResponse:
    """This description of every HTTP route (OpenAPI 3.1): parameters, bodies, answers, credentials."""
    state = request.app.state
    document = getattr(state, "openapi_document", None)
    if document is None:  # the routes do not change while the app runs: made once
        document = openapi_document(request.app.routes, title=TITLE, version=API_VERSION)
        state.openapi_document = document
    return OrjsonResponse(document)


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi, methods=["GET"])]

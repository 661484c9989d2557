"""Each route's typed description: `operation(...)` checks its requests and /openapi.json is made from it.

A route function is decorated with what it takes and answers:

    @operation(auth=Scope.READ, query=MyJobsQuery, responses={200: JobPage}, errors=(409,))
    async def my_jobs(request): ...

The decorated endpoint authenticates the caller (the credential's scope, or an admin), then checks the
query string against the query model (`request.state.query` is the parsed model; a 400 names the first
wrong parameter, and, where the model forbids extra fields, an unknown one), then runs the function.
Request bodies are checked by the function with `parse_body(model, ...)` (it reads them within a size
limit first), so a body is read only once. The same models, through pydantic's JSON Schema, make the
OpenAPI 3.1 description (`openapi_document`): parameters, request bodies, every answer with its
status (the error envelope for the 4xx and 5xx ones), and the credentials each route accepts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request

from server.accounts.store import Scope
from server.api.common import read_body
from server.errors import BadRequest
from server.pipelines.models import parse_body

ADMIN = "admin"  # `auth=ADMIN`: an admin acting as admin (a session, or an admin-scoped token)
PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")
UUID_PARAMETER = {"type": "string", "format": "uuid"}
ERROR_TEXT = {400: "The request is malformed: `details.field` names the parameter or field",
              401: "No credential, or one that is expired or revoked",
              403: "The credential may not do this (its scope, CSRF token, or another user's record)",
              404: "No such record (or not yours)", 409: "The record's state does not allow this",
              413: "The request body is too large", 429: "Too many attempts: see Retry-After",
              502: "The cluster failed to answer", 503: "Not ready"}


class ErrorDetail(BaseModel):
    """What went wrong: a code a program can test, a message for a person, details (`field`, ...)."""

    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    """The one error envelope of every error answer."""

    error: ErrorDetail


def _whole_number(value: object) -> object:
    # plain ASCII digits only: pydantic would also take " 5", "5.0" and "1_000"; and a short number
    # (int() of thousands of digits is slow)
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,15}", value):
        raise ValueError("must be a whole number")
    return value


def Whole(minimum: int, maximum: int, **field):  # noqa: N802 - a type, used like one
    """A whole-number query parameter from `minimum` to `maximum`."""
    return Annotated[int, Field(ge=minimum, le=maximum, **field), BeforeValidator(_whole_number)]


class Query(BaseModel):
    """Query parameters: text trimmed and converted to the field's type (`Whole` for numbers);
    an unknown parameter is a 400."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class OpenQuery(Query):
    """Query parameters of a route that has always ignored the parameters it does not know."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers (see `operation`)."""

    auth: Scope | str | None
    query: type[Query] | None
    body: type[BaseModel] | None
    body_required: bool
    form: type[BaseModel] | None
    responses: dict[int, Any]
    errors: tuple[int, ...]
    path: dict[str, dict]
    headers: dict[str, dict]
    tags: tuple[str, ...] = field(default=())
    links: dict[int, dict[str, tuple[str, dict[str, str]]]] = field(default_factory=dict)


def operation(*, auth: Scope | str | None = Scope.READ, query: type[Query] | None = None,
              body: type[BaseModel] | None = None, body_required: bool = True, form: type[BaseModel] | None = None,
              responses: dict[int, Any] | None = None, errors: tuple[int, ...] = (),
              path: dict[str, dict] | None = None, headers: dict[str, dict] | None = None,
              tags: tuple[str, ...] = (), links: dict[int, dict[str, tuple[str, dict[str, str]]]] | None = None
              ) -> Callable:
    """Describe a route function, and check its caller and query string before it runs.

    `auth`: the scope a credential needs (`Scope.READ`...), `ADMIN`, or None for a public route.
    `responses`: status → answer model (or a media type string such as "text/csv", or None for no
    body). `errors`: the error statuses the route can answer besides those that follow from the
    rest (401/403 with `auth`, 400 with a query, body or path parameter, 404 with a path parameter,
    413 with a body). `path`: JSON Schemas of path parameters (default: a string; `*_id` a UUID).
    `headers`: request headers it reads, as name → JSON Schema. `links`: status → {name:
    (operationId, {parameter: runtime expression})}, what an answer leads to (OpenAPI links: client
    generators and schemathesis' stateful tests follow them).
    """
    described = Operation(auth, query, body, body_required, form, dict(responses or {200: None}),
                          tuple(errors), dict(path or {}), dict(headers or {}), tuple(tags), dict(links or {}))

    def mark(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def endpoint(request: Request):
            if described.auth is not None:
                authenticator = request.state.services.auth
                if described.auth == ADMIN:
                    await authenticator.require_admin(request)
                else:
                    await authenticator.require(request, described.auth)
            if described.query is not None:
                request.state.query = parse_query(described.query, request)
            return await handler(request)

        endpoint.operation = described
        return endpoint

    return mark


def _field_error(model: type[BaseModel], exc: ValidationError, where: str) -> BadRequest:
    error = exc.errors(include_url=False, include_input=False)[0]
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = sorted(model.model_fields)
        return BadRequest(f"Unknown {where} {name[:40]!r}; this path takes: " + ", ".join(allowed),
                          code="validation_error", details={"field": name[:64], "allowed": allowed})
    message = error["msg"].removeprefix("Value error, ")
    return BadRequest(f"'{name}': {message}", code="validation_error", details={"field": name})


def parse_query(model: type[Query], request: Request) -> Query:
    """The query string as `model` (an empty or blank value is left out: the default)."""
    values = {}
    for name, value in request.query_params.multi_items():
        if value.strip() or (model.model_config.get("extra") == "forbid" and name not in model.model_fields):
            values[name] = value  # (an unknown one is refused even when empty)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _field_error(model, exc, "parameter") from None


async def json_body(request: Request, model: type[BaseModel], limit: int, *, required: bool = True):
    """The request body as `model` (read within `limit` bytes: 413 past it); a 400 names the first
    wrong field. Without a body: a 400 when `required`, else the model of `{}`."""
    raw = await read_body(request, limit)
    if required and not raw.strip():
        raise BadRequest("Expected a JSON object in the request body", code="validation_error",
                         details={"field": None})
    return parse_body(model, raw)


# -- the description --------------------------------------------------------------------------
SECURITY_SCHEMES = {
    "bearerToken": {"type": "http", "scheme": "bearer",
                    "description": "An API token (`jobmon create-token`, or POST /api/tokens) with the scope the "
                                   "route needs: read < agent < write < admin."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "jobmon_session",
                      "description": "The browser session set by POST /api/auth/login; writes also need the "
                                     "`X-CSRF-Token` header (its csrf_token)."},
}


def _scope_text(auth: Scope | str | None) -> str | None:
    if auth is None:
        return None
    if auth == ADMIN:
        return "admin (an admin's session, or an admin-scoped token)"
    return auth.name.lower()


def _summary_and_text(handler: Callable) -> tuple[str, str]:
    doc = (handler.__doc__ or "").strip()
    first, _, rest = doc.partition("\n")
    return first.strip(), " ".join(line.strip() for line in rest.splitlines() if line.strip())


def _query_parameters(model: type[Query], schemas: dict) -> list[dict]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        # `str | None = None` is an optional parameter, not one that may be null
        options = [option for option in prop.pop("anyOf", [prop]) if option.get("type") != "null"]
        if len(options) == 1:
            prop = {**prop, **options[0]}
        else:
            prop["anyOf"] = options
        if prop.get("default", 0) is None:
            del prop["default"]
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _content(schema: Any) -> dict:
    if isinstance(schema, tuple):  # several media types
        return {media: value for part in schema for media, value in _content(part).items()}
    if isinstance(schema, str):  # a media type other than JSON
        return {schema: {"schema": {"type": "string"}}}
    return {"application/json": {"schema": schema}}


def _response(status: int, schema: Any) -> dict:
    answer = {"description": ERROR_TEXT.get(status, "OK" if status < 300 else "Error")}
    if status == 202:
        answer["description"] = "Accepted: the work goes on in the background"
    elif status == 201:
        answer["description"] = "Created"
    if schema is not None:
        answer["content"] = _content(schema)
    return answer


def operation_id_of(handler: Callable) -> str:
    """A route function's operationId: its module's name and its own (`jobs_get_job`)."""
    return f"{handler.__module__.rsplit('.', 1)[-1]}_{handler.__name__}"


def openapi_document(routes: list, *, title: str, version: str) -> dict:
    """The OpenAPI 3.1 description of `routes` (Starlette routes; those of a function decorated with
    `operation` fully described, any other one with its path parameters and a summary)."""
    described = [route for route in routes
                 if getattr(route, "methods", None) and getattr(route, "endpoint", None) is not None
                 and getattr(route, "include_in_schema", True)]
    models: set[tuple[type, str]] = set()
    for route in described:
        op = getattr(route.endpoint, "operation", None)
        if op is None:
            continue
        for model in (op.body, op.form):
            if model is not None:
                models.add((model, "validation"))
        for answer in op.responses.values():
            for part in answer if isinstance(answer, tuple) else (answer,):
                if isinstance(part, type) and issubclass(part, BaseModel):
                    models.add((part, "serialization"))
    models.add((Error, "serialization"))
    refs, top = models_json_schema(sorted(models, key=lambda pair: (pair[0].__name__, pair[1])),
                                   ref_template="#/components/schemas/{model}")
    schemas: dict = dict(top.get("$defs", {}))

    def schema_of(answer: Any, mode: str = "serialization") -> Any:
        if isinstance(answer, tuple):
            return tuple(schema_of(part, mode) for part in answer)
        if isinstance(answer, type) and issubclass(answer, BaseModel):
            return refs[(answer, mode)]
        return answer

    paths: dict[str, dict] = {}
    operation_ids: set[str] = set()
    for route in described:
        handler = route.endpoint
        op: Operation | None = getattr(handler, "operation", None)
        summary, text = _summary_and_text(handler)
        for method in sorted(route.methods - {"HEAD"}):
            path_names = PATH_PARAMETER.findall(route.path)
            parameters = [{"name": name, "in": "path", "required": True,
                           "schema": (op.path.get(name) if op else None)
                           or (UUID_PARAMETER if name.endswith("_id") and name != "agent_id" else
                               {"type": "string"})}
                          for name in path_names]
            operation_id = operation_id_of(handler)
            while operation_id in operation_ids:
                operation_id += "_"
            operation_ids.add(operation_id)
            entry: dict[str, Any] = {"operationId": operation_id, "summary": summary}
            if text:
                entry["description"] = text
            tag = route.path.strip("/").split("/")[1 if route.path.startswith("/api/") else 0] or "pages"
            entry["tags"] = list(op.tags) if op and op.tags else [tag.split(".")[0]]
            statuses: dict[int, Any] = {}
            if op is None:
                statuses[200] = None
                if path_names:
                    statuses[400] = statuses[404] = Error
            else:
                if op.query is not None:
                    parameters += _query_parameters(op.query, schemas)
                for name, schema in op.headers.items():
                    parameters.append({"name": name, "in": "header", "required": False, "schema": schema})
                if op.body is not None or op.form is not None:
                    content = {}
                    if op.body is not None:
                        content["application/json"] = {"schema": schema_of(op.body, "validation")}
                    if op.form is not None:
                        form_schema = schema_of(op.form, "validation")
                        content["multipart/form-data"] = {"schema": form_schema}
                        content["application/x-www-form-urlencoded"] = {"schema": form_schema}
                    entry["requestBody"] = {"required": op.body_required, "content": content}
                statuses.update({status: schema_of(answer) for status, answer in op.responses.items()})
                implied = list(op.errors)
                if op.auth is not None:
                    implied += [401, 403]
                if op.query is not None or op.body is not None or op.form is not None or path_names or op.headers:
                    implied.append(400)
                if path_names:
                    implied.append(404)
                if op.body is not None or op.form is not None:
                    implied.append(413)
                for status in implied:
                    statuses.setdefault(status, refs[(Error, "serialization")])
                scope = _scope_text(op.auth)
                if scope is None:
                    entry["security"] = []
                else:
                    entry["security"] = [{"bearerToken": []}, {"sessionCookie": []}]
                    entry["x-scope"] = scope.split(" ")[0]
                    entry["description"] = (entry.get("description", "") + f" Needs: {scope}.").strip()
            if parameters:
                entry["parameters"] = parameters
            entry["responses"] = {str(status): _response(status, schema)
                                  for status, schema in sorted(statuses.items())}
            for status, links in (op.links.items() if op else ()):
                entry["responses"][str(status)]["links"] = {
                    name: {"operationId": target, "parameters": parameters}
                    for name, (target, parameters) in links.items()}
            paths.setdefault(route.path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Job Monitor's HTTP API. Errors are always "
                                "`{\"error\": {\"code\", \"message\", \"details\"}}`. Times are ISO 8601 UTC with a Z."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


"""What every route module needs: the services, JSON in and out, parameter parsing."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server.accounts.store import Principal, Scope
from server.errors import BadRequest, PayloadTooLarge
from server.parsing import parse_bool
from server.services import Services

MAX_JSON_BYTES = 64 * 1024
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
# the header as the API description shows it (`operation(headers=...)`)
IDEMPOTENCY_HEADER = {"Idempotency-Key": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern}}


class OrjsonResponse(Response):
    """JSON through orjson: fast, and it refuses NaN instead of writing invalid JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def services(request: Request) -> Services:
    return request.state.services


async def job_in_path(request: Request, scope: Scope) -> tuple[Principal, dict]:
    """The caller and the job named by the path's {job_id}: 404 if missing, 403 if someone else's."""
    s = services(request)
    principal = await s.auth.require(request, scope)
    job = await s.jobs.get_for(request.path_params["job_id"], principal.user_id, principal.is_admin)
    return principal, job


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body too large: {declared} bytes, at most {limit}",
                              details={"max_bytes": limit})
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large: more than {limit} bytes",
                                  details={"max_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, limit: int = MAX_JSON_BYTES) -> dict:
    """The body as a JSON object; 400 for anything else."""
    body = await read_body(request, limit)
    if not body:
        raise BadRequest("Expected a JSON object in the request body", code="validation_error")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON", code="validation_error") from None
    if not isinstance(value, dict):
        raise BadRequest("Expected a JSON object in the request body", code="validation_error")
    return value


def idempotency_key(request: Request) -> str | None:
    """The optional `Idempotency-Key` header: 1-200 printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1-200 printable ASCII characters", code="validation_error",
                         details={"field": "Idempotency-Key"})
    return key


def only_params(request: Request, allowed: set[str]) -> None:
    """400 naming the first query parameter this path does not take."""
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise BadRequest(f"Unknown parameter {unknown[0][:40]!r}; this path takes: " + ", ".join(sorted(allowed)),
                         code="validation_error", details={"field": unknown[0], "allowed": sorted(allowed)})


def query_int(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        if not raw.isascii():  # int() also reads other scripts' digits, such as "７"
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer", code="validation_error",
                         details={"field": name}) from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"'{name}' must be between {minimum} and {maximum}", code="validation_error",
                         details={"field": name})
    return value


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_bool(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be true or false", code="validation_error", details={"field": name}) from None


def query_text(request: Request, name: str, max_length: int = 200) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise BadRequest(f"'{name}' is longer than {max_length} characters", code="validation_error",
                         details={"field": name})
    return raw.strip()


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None

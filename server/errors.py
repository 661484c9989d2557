"""The errors a request can meet, translated to HTTP and Socket.IO answers in one place.

    AppError                 (500 unless a subclass says otherwise)
    ├── BadRequest           400  bad_request / validation_error / unknown_action / unknown_cluster
    ├── Unauthorized         401  unauthorized
    ├── Forbidden            403  forbidden / csrf_failed
    ├── NotFound             404  not_found
    ├── Conflict             409  conflict
    ├── PayloadTooLarge      413  payload_too_large
    ├── TooManyRequests      429  rate_limited
    ├── BadGateway           502  upstream_error (a cluster call failed and nothing partial is useful)
    └── DatabaseOutage       503  database_unavailable (Retry-After): the database does not answer
        ├── DatabaseReadOnly 503  database_read_only: it answers reads but refuses writes
        └── DatabaseFull     507  storage_full: its disk is full

A DatabaseOutage is what `server.db` raises (server/db/outage.py classifies the driver's errors);
background work that meets one pauses until the database answers again.

Every error body is `{"error": {"code", "message", "details"}}`, written by `error_body` (HTTP
answers) and `error_ack` (Socket.IO acks, which also carry the HTTP-like `status`).
"""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str, details: Any = None) -> dict:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_ack(code: str, message: str, status: int = 400, details: Any = None) -> dict:
    """The ack of a Socket.IO event that failed: the error body plus the HTTP-like status."""
    body = error_body(code, message, details)
    body["error"]["status"] = status
    return body


class AppError(Exception):
    """Base of every error that reaches a client with a status and a code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict:
        """The JSON body of this error."""
        return error_body(self.code, self.message, self.details)

    def to_ack(self) -> dict:
        """This error as a Socket.IO ack."""
        return error_ack(self.code, self.message, self.status, self.details)


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class BadGateway(AppError):
    status = 502
    code = "upstream_error"


class DatabaseOutage(AppError):
    """The database cannot serve this request now; the client should try again later."""

    status = 503
    code = "database_unavailable"
    retry_after = 5  # seconds: a restarting database is usually back within a few


class DatabaseReadOnly(DatabaseOutage):
    code = "database_read_only"


class DatabaseFull(DatabaseOutage):
    status = 507
    code = "storage_full"

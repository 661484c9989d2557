"""Authentication of HTTP requests and Socket.IO connections.

A browser sends its signed session cookie (and on writes the `X-CSRF-Token` it got at login);
wallboards, listeners and scripts send `Authorization: Bearer <token>`, which needs no CSRF token
since a browser never attaches it on its own.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection

from server.accounts.store import Accounts, Principal, Scope
from server.errors import Forbidden, Unauthorized

SESSION_COOKIE = "jobmon_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PRINCIPAL_KEY = "jobmon.principal"  # the request scope's entry holding its principal once known


class Authenticator:
    """Turns a cookie or a bearer token into a Principal."""

    def __init__(self, accounts: Accounts, secret_key: str, session_days: int):
        self.accounts = accounts
        self.session_days = session_days
        self._signer = URLSafeTimedSerializer(secret_key, salt="jobmon-session")

    def sign_session(self, session_id: str) -> str:
        return self._signer.dumps(session_id)

    def unsign_session(self, cookie: str) -> str | None:
        try:
            value = self._signer.loads(cookie, max_age=self.session_days * 86_400)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    async def from_cookie(self, cookie: str | None) -> Principal | None:
        session_id = self.unsign_session(cookie) if cookie else None
        return await self.accounts.session_principal(session_id) if session_id else None

    async def from_token(self, token: str | None) -> Principal | None:
        return await self.accounts.token_principal(token) if token else None

    async def from_cookie_header(self, header: str | None) -> Principal | None:
        """For Socket.IO: the principal of a raw Cookie header."""
        if not header:
            return None
        jar = SimpleCookie()
        try:
            jar.load(header)
        except Exception:
            return None
        morsel = jar.get(SESSION_COOKIE)
        return await self.from_cookie(morsel.value if morsel else None)

    async def authenticate(self, conn: HTTPConnection) -> Principal:
        """The principal of a request, or 401 with the reason (looked up once per request: a route
        described with `operation` authenticates before its function does)."""
        found = conn.scope.get(PRINCIPAL_KEY)
        if found is not None:
            return found
        principal = await self._authenticate(conn)
        conn.scope[PRINCIPAL_KEY] = principal
        return principal

    async def _authenticate(self, conn: HTTPConnection) -> Principal:
        header = conn.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Malformed Authorization header: expected 'Bearer <token>'")
            principal = await self.from_token(token.strip())
            if principal is None:
                raise Unauthorized("Invalid or revoked API token", code="invalid_token")
            return principal
        cookie = conn.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = await self.from_cookie(cookie)
            if principal is None:
                raise Unauthorized("Your session has expired; log in again", code="session_expired")
            return principal
        raise Unauthorized("Log in, or send an API token as 'Authorization: Bearer <token>'")

    async def require(self, conn: HTTPConnection, scope: Scope = Scope.READ) -> Principal:
        """Authenticate, check the scope, and check the CSRF token of cookie-authenticated writes."""
        principal = await self.authenticate(conn)
        if principal.scope < scope:
            raise Forbidden(f"This needs a credential with '{scope.name.lower()}' scope; "
                            f"yours has '{principal.scope.name.lower()}'", code="insufficient_scope")
        method = conn.scope.get("method", "GET")
        if principal.via == "cookie" and method not in SAFE_METHODS:
            sent = conn.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent, principal.csrf_token or ""):
                raise Forbidden("Missing or wrong X-CSRF-Token header (it is returned by login "
                                "and by GET /api/auth/me)", code="csrf_failed")
        return principal

    async def require_admin(self, conn: HTTPConnection) -> Principal:
        """An admin with admin rights: an admin's read or write token is refused too."""
        principal = await self.authenticate(conn)
        if principal.role != "admin" or principal.scope < Scope.ADMIN:
            raise Forbidden("Admins only (with a session or an admin-scoped token)")
        return await self.require(conn, Scope.ADMIN)

"""Login, logout, who am I, and API tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from server.accounts.auth import SESSION_COOKIE
from server.accounts.store import Scope
from server.api.common import OrjsonResponse, client_ip, services
from server.api.models import (
    CreatedTokenAnswer,
    Login,
    LoginAnswer,
    MeAnswer,
    NewToken,
    Ok,
    RevokedAnswer,
    TokenList,
    TokensQuery,
)
from server.api.spec import json_body, operation
from server.errors import BadRequest, TooManyRequests, error_body
from server.timeutil import now_ms

MAX_AUTH_BODY = 8 * 1024


@operation(auth=None, body=Login, responses={200: LoginAnswer}, errors=(401, 429))
async def login(request: Request) -> OrjsonResponse:
    """Check a username and password; set the session cookie and return the CSRF token."""
    s = services(request)
    body = await json_body(request, Login, MAX_AUTH_BODY)
    username, password = body.username, body.password
    window_ms = int(s.settings.login_window * 1000)
    recent_failures = await s.audit.count_since("login_failed", username, now_ms() - window_ms)
    if recent_failures >= s.settings.login_attempts:
        raise TooManyRequests(f"Too many failed logins for {username!r}; try again in a few minutes",
                              retry_after=int(s.settings.login_window))
    user = await s.accounts.verify_password(username, password)
    if user is None:
        await s.audit.record("login_failed", username=username, subject=username, ip=client_ip(request))
        return OrjsonResponse(error_body("invalid_credentials", "Wrong username or password"), status_code=401)
    session = await s.accounts.create_session(user["id"], s.settings.session_days)
    await s.audit.record("login", user_id=user["id"], username=username, subject=username, ip=client_ip(request))
    response = OrjsonResponse({"user": {"id": user["id"], "username": user["username"], "role": user["role"]},
                             "csrf_token": session["csrf_token"]})
    response.set_cookie(SESSION_COOKIE, s.auth.sign_session(session["id"]), httponly=True, samesite="lax",
                        secure=s.settings.secure_cookies, max_age=s.settings.session_days * 86_400, path="/")
    return response


@operation(auth=Scope.READ, responses={200: Ok})
async def logout(request: Request) -> OrjsonResponse:
    """End the session: the cookie stops working here and its live sockets are disconnected."""
    s = services(request)
    principal = await s.auth.require(request, Scope.READ)
    if principal.session_id:
        await s.accounts.revoke_session(principal.session_id)
        if s.realtime is not None:
            await s.realtime.disconnect_credential(session_id=principal.session_id)
    await s.audit.record("logout", user_id=principal.user_id, username=principal.username,
                         subject=principal.username, ip=client_ip(request))
    response = OrjsonResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@operation(auth=Scope.READ, responses={200: MeAnswer})
async def me(request: Request) -> OrjsonResponse:
    """The current user, and the CSRF token of a cookie session (so a reloaded page can write)."""
    principal = await services(request).auth.require(request, Scope.READ)
    return OrjsonResponse({"user": principal.public(), "csrf_token": principal.csrf_token})


@operation(auth=Scope.WRITE, body=NewToken, responses={201: CreatedTokenAnswer},
           links={201: {"RevokeToken": ("auth_revoke_token", {"token_id": "$response.body#/token/id"})}})
async def create_token(request: Request) -> OrjsonResponse:
    """Create an API token; its secret is in this answer only."""
    s = services(request)
    principal = await s.auth.require(request, Scope.WRITE)
    body = await json_body(request, NewToken, MAX_AUTH_BODY)
    scope = Scope.parse(body.scope)
    if scope > principal.scope:
        raise BadRequest(f"A '{principal.scope.name.lower()}' credential cannot create a "
                         f"'{scope.name.lower()}' token", code="validation_error", details={"field": "scope"})
    token = await s.accounts.create_token(principal.user_id, principal.role, scope, body.name)
    await s.audit.record("token_created", user_id=principal.user_id, username=principal.username,
                         subject=str(token["id"]), detail={"name": token["name"], "scope": token["scope"]},
                         ip=client_ip(request))
    return OrjsonResponse({"token": token}, status_code=201)


@operation(auth=Scope.READ, query=TokensQuery, responses={200: TokenList})
async def list_tokens(request: Request) -> OrjsonResponse:
    """The caller's tokens (never their secrets); admins may pass all=true for everyone's."""
    s = services(request)
    principal = await s.auth.require(request, Scope.READ)
    everyone = request.state.query.all and principal.is_admin
    return OrjsonResponse({"tokens": await s.accounts.list_tokens(None if everyone else principal.user_id)})


@operation(auth=Scope.WRITE, responses={200: RevokedAnswer},
           path={"token_id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}})
async def revoke_token(request: Request) -> OrjsonResponse:
    """Revoke a token at once, disconnecting the sockets that use it."""
    s = services(request)
    principal = await s.auth.require(request, Scope.WRITE)
    raw = request.path_params["token_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("Malformed token id: expected an integer", code="validation_error",
                         details={"field": "token_id"})
    revoked = await s.accounts.revoke_token(int(raw), None if principal.is_admin else principal.user_id)
    if s.realtime is not None:
        await s.realtime.disconnect_credential(token_id=revoked["id"])
    await s.audit.record("token_revoked", user_id=principal.user_id, username=principal.username,
                         subject=str(revoked["id"]), detail={"name": revoked["name"]}, ip=client_ip(request))
    return OrjsonResponse({"revoked": revoked})


def routes() -> list[Route]:
    return [
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/auth/logout", logout, methods=["POST"]),
        Route("/api/auth/me", me, methods=["GET"]),
        Route("/api/tokens", create_token, methods=["POST"]),
        Route("/api/tokens", list_tokens, methods=["GET"]),
        Route("/api/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    ]

"""Users, login sessions and API tokens, all kept in the database.

Passwords are hashed with argon2; API tokens are random 256-bit strings, stored as SHA-256
(they are not guessable, so a slow hash would only slow every request) and shown once.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.db import INTEGRITY_ERRORS, Db
from server.db import schema as tables
from server.errors import BadRequest, Conflict, NotFound
from server.timeutil import iso, now_ms

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_PREFIX = "jm_"


class Scope(enum.IntEnum):
    """What a credential may do; each level includes the ones below. Stored by name."""

    READ = 10  # wallboards and alert listeners
    AGENT = 15  # CI/CD agents: report pipeline jobs and deployments (and read); no Set Actions
    WRITE = 20  # start, cancel and retry Set Actions
    ADMIN = 30  # everything, every user's jobs (admins only)

    @classmethod
    def parse(cls, raw: object) -> "Scope":
        if isinstance(raw, str) and raw.upper() in cls.__members__:
            return cls[raw.upper()]
        raise BadRequest("'scope' must be one of read, agent, write, admin", code="validation_error",
                         details={"field": "scope"})


@dataclass(frozen=True)
class Principal:
    """Who is making a request, and through which credential."""

    user_id: int
    username: str
    role: str
    scope: Scope
    via: str  # "cookie" or "token"
    session_id: str | None = None
    token_id: int | None = None
    csrf_token: str | None = None

    @property
    def is_admin(self) -> bool:
        """An admin acting with admin rights (an admin's read token is not)."""
        return self.role == "admin" and self.scope >= Scope.ADMIN

    def public(self) -> dict:
        return {"id": self.user_id, "username": self.username, "role": self.role,
                "scope": self.scope.name.lower(), "via": self.via}


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """The account store: create and check users, sessions and tokens."""

    def __init__(self, db: Db):
        self.db = db
        self._hasher = PasswordHasher()

    async def create_user(self, username: str, password: str, role: str = "user") -> dict:
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            raise BadRequest("A username is 1-64 letters, digits, '.', '_' or '-'", code="validation_error",
                             details={"field": "username"})
        if not isinstance(password, str) or len(password) < 8 or len(password) > 1024:
            raise BadRequest("A password has 8 to 1024 characters", code="validation_error",
                             details={"field": "password"})
        if role not in ("user", "admin"):
            raise BadRequest("role must be user or admin", code="validation_error", details={"field": "role"})
        existing = await self.db.fetch_one(sa.select(tables.users.c.id).where(tables.users.c.username == username))
        if existing:
            raise Conflict(f"User {username!r} already exists")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            user_id = await self.db.fetch_val(
                tables.users.insert().values(username=username, password_hash=password_hash, role=role,
                                             created_at=now_ms(), disabled=False).returning(tables.users.c.id)
            )
        except INTEGRITY_ERRORS:  # created concurrently since the check above
            raise Conflict(f"User {username!r} already exists") from None
        return {"id": user_id, "username": username, "role": role}

    async def ensure_user(self, username: str, password: str, role: str) -> None:
        """Make sure the user exists and has this password (the demo logins)."""
        if not await self.verify_password(username, password):
            try:
                await self.create_user(username, password, role)
            except Conflict:
                await self.set_password(username, password)

    async def set_password(self, username: str, password: str) -> None:
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        await self.db.execute(tables.users.update().where(tables.users.c.username == username)
                              .values(password_hash=password_hash))

    async def user_by_name(self, username: str) -> dict | None:
        """A user (id, username, role, disabled) by username, or None."""
        u = tables.users
        row = await self.db.fetch_one(sa.select(u.c.id, u.c.username, u.c.role, u.c.disabled)
                                      .where(u.c.username == username))
        return {"id": row.id, "username": row.username, "role": row.role, "disabled": bool(row.disabled)} if row else None

    async def user(self, user_id: int) -> dict | None:
        """A user by id: {id, username, role}, or None."""
        return await self._summary(tables.users.c.id == user_id)

    async def find_user(self, raw: str) -> dict | None:
        """A user named by id (digits) or username: {id, username, role}, or None."""
        if raw.isdigit() and len(raw) <= 12:
            return await self.user(int(raw))
        return await self._summary(tables.users.c.username == raw)

    async def _summary(self, condition) -> dict | None:
        u = tables.users
        row = await self.db.fetch_one(sa.select(u.c.id, u.c.username, u.c.role).where(condition))
        return {"id": row.id, "username": row.username, "role": row.role} if row else None

    async def usernames(self, user_ids: set[int]) -> dict[int, str]:
        """The username of each of these user ids."""
        u = tables.users
        names: dict[int, str] = {}
        ids = sorted(user_ids)
        for start in range(0, len(ids), 500):
            rows = await self.db.fetch_all(sa.select(u.c.id, u.c.username).where(u.c.id.in_(ids[start:start + 500])))
            names.update((r.id, r.username) for r in rows)
        return names

    async def list_users(self) -> list[dict]:
        """Every user (id, username, role, created_at, disabled), by username."""
        u = tables.users
        rows = await self.db.fetch_all(sa.select(u.c.id, u.c.username, u.c.role, u.c.created_at, u.c.disabled)
                                       .order_by(u.c.username))
        return [{"id": r.id, "username": r.username, "role": r.role, "created_at": iso(r.created_at),
                 "disabled": bool(r.disabled)} for r in rows]

    async def verify_password(self, username: str, password: str) -> dict | None:
        """The user if the password is right, else None (in constant-ish time either way)."""
        row = await self.db.fetch_one(sa.select(tables.users).where(tables.users.c.username == username))
        if row is None:
            # spend the same time as a real check, so a timing cannot tell which names exist
            await asyncio.to_thread(self._hasher.hash, password)
            return None
        try:
            ok = await asyncio.to_thread(self._hasher.verify, row.password_hash, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or row.disabled:
            return None
        return dict(row._mapping)

    # -- sessions --------------------------------------------------------------------------
    async def create_session(self, user_id: int, days: int) -> dict:
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = now_ms()
        await self.db.execute(tables.sessions.insert().values(
            id=session_id, user_id=user_id, csrf_token=csrf, created_at=now,
            expires_at=now + days * 86_400_000, revoked_at=None))
        return {"id": session_id, "csrf_token": csrf}

    async def session_principal(self, session_id: str) -> Principal | None:
        # plain SQL on the driver: this runs on every request
        rows = await self.db.raw_fetch(
            "SELECT s.csrf_token, s.expires_at, s.revoked_at, u.id, u.username, u.role, u.disabled "
            "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = :id", {"id": session_id})
        if not rows:
            return None
        csrf_token, expires_at, revoked_at, user_id, username, role, disabled = rows[0]
        if revoked_at is not None or expires_at < now_ms() or disabled:
            return None
        scope = Scope.ADMIN if role == "admin" else Scope.WRITE
        return Principal(user_id, username, role, scope, "cookie", session_id=session_id, csrf_token=csrf_token)

    async def revoke_session(self, session_id: str) -> None:
        await self.db.execute(tables.sessions.update().where(tables.sessions.c.id == session_id)
                              .values(revoked_at=now_ms()))

    async def live_session_ids(self, ids: set[str]) -> set[str]:
        """Which of these sessions are still live (not revoked or expired, user not disabled)."""
        return await self._live(tables.sessions, ids, with_expiry=True)

    async def live_token_ids(self, ids: set[int]) -> set[int]:
        """Which of these API tokens are still live (not revoked, user not disabled)."""
        return await self._live(tables.api_tokens, ids, with_expiry=False)

    async def _live(self, table: sa.Table, ids: set, *, with_expiry: bool) -> set:
        users = tables.users
        live: set = set()
        ids_list = sorted(ids)
        for start in range(0, len(ids_list), 500):
            query = (sa.select(table.c.id).select_from(table.join(users, users.c.id == table.c.user_id))
                     .where(table.c.id.in_(ids_list[start:start + 500]), table.c.revoked_at.is_(None),
                            sa.not_(users.c.disabled)))
            if with_expiry:
                query = query.where(table.c.expires_at > now_ms())
            live.update(r.id for r in await self.db.fetch_all(query))
        return live

    # -- API tokens ------------------------------------------------------------------------
    async def create_token(self, user_id: int, role: str, scope: Scope, name: str) -> dict:
        """Create a token; the returned dict holds the only copy of its secret."""
        if scope is Scope.ADMIN and role != "admin":
            raise BadRequest("Only admins can create admin tokens", code="validation_error",
                             details={"field": "scope"})
        if not isinstance(name, str) or not (1 <= len(name.strip()) <= 100):
            raise BadRequest("A token name has 1 to 100 characters", code="validation_error",
                             details={"field": "name"})
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = now_ms()
        token_id = await self.db.fetch_val(tables.api_tokens.insert().values(
            user_id=user_id, name=name.strip(), scope=scope.name.lower(), token_hash=_hash_token(secret),
            prefix=secret[:8], created_at=now, last_used_at=None, revoked_at=None,
        ).returning(tables.api_tokens.c.id))
        return {"id": token_id, "name": name.strip(), "scope": scope.name.lower(), "token": secret,
                "prefix": secret[:8], "created_at": iso(now)}

    async def token_principal(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        rows = await self.db.point_read(
            "SELECT t.id, t.scope, t.revoked_at, u.id, u.username, u.role, u.disabled "
            "FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = :hash",
            {"hash": _hash_token(token)})
        if not rows:
            return None
        token_id, scope_name, revoked_at, user_id, username, role, disabled = rows[0]
        if revoked_at is not None or disabled:
            return None
        scope = Scope[scope_name.upper()]
        if scope is Scope.ADMIN and role != "admin":
            scope = Scope.WRITE
        return Principal(user_id, username, role, scope, "token", token_id=token_id)

    async def list_tokens(self, user_id: int | None) -> list[dict]:
        t = tables.api_tokens
        query = sa.select(t).order_by(t.c.id.desc())
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        rows = await self.db.fetch_all(query)
        return [{"id": r.id, "user_id": r.user_id, "name": r.name, "scope": r.scope, "prefix": r.prefix,
                 "created_at": iso(r.created_at), "revoked_at": iso(r.revoked_at)} for r in rows]

    async def revoke_token(self, token_id: int, user_id: int | None) -> dict:
        """Revoke a token of `user_id` (any user's when None); 404 when it is not theirs."""
        t = tables.api_tokens
        query = t.update().where(t.c.id == token_id, t.c.revoked_at.is_(None))
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        row = await self.db.fetch_one(query.values(revoked_at=now_ms()).returning(t.c.id, t.c.user_id, t.c.name))
        if row is None:
            raise NotFound(f"No active token {token_id} of yours")
        return {"id": row.id, "user_id": row.user_id, "name": row.name}

"""The audit log: who did what and when, kept in the database."""

from __future__ import annotations

import json

import orjson
import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.errors import BadRequest
from server.jobs.cursors import CursorCodec
from server.parsing import is_int as _is_int
from server.timeutil import iso, now_ms


class AuditLog:
    """Appends audit entries, counts recent ones (the login rate limit reads it), lists them for admins."""

    def __init__(self, db: Db, cursors: CursorCodec):
        self.db = db
        self.cursors = cursors

    async def record(self, kind: str, *, user_id: int | None = None, username: str | None = None,
                     subject: str | None = None, detail: dict | None = None, ip: str | None = None) -> None:
        await self.db.execute(tables.audit_log.insert().values(
            at=now_ms(), user_id=user_id, username=username, kind=kind,
            subject=subject[:200] if subject else None,
            detail=json.dumps(detail) if detail else None, ip=ip))

    async def count_since(self, kind: str, subject: str, since_ms: int) -> int:
        a = tables.audit_log
        return await self.db.fetch_val(
            sa.select(sa.func.count()).select_from(a)
            .where(a.c.kind == kind, a.c.subject == subject[:200], a.c.at >= since_ms))

    async def entries(self, *, username: str | None, kinds: tuple[str, ...], at_from: int | None,
                    at_to: int | None, cursor: str | None, limit: int) -> dict:
        """Audit entries newest first (keyset on id), filtered by user, kinds and time."""
        a = tables.audit_log
        before = None
        if cursor:
            parts = self.cursors.decode(cursor, "audit")
            if len(parts) != 1 or not _is_int(parts[0]):
                raise BadRequest("Malformed 'cursor'", code="validation_error", details={"field": "cursor"})
            before = parts[0]
        conditions = []
        if username is not None:
            conditions.append(a.c.username == username)
        if at_from is not None:
            conditions.append(a.c.at >= at_from)
        if at_to is not None:
            conditions.append(a.c.at <= at_to)
        if before is not None:
            conditions.append(a.c.id < before)
        # one ordered walk per kind (index kind, id), merged: never a sort of every matching entry
        arms = [sa.select(a).where(*conditions, a.c.kind == kind).order_by(a.c.id.desc()).limit(limit + 1)
                for kind in dict.fromkeys(kinds)] or [sa.select(a).where(*conditions).order_by(a.c.id.desc())
                                                      .limit(limit + 1)]
        if len(arms) == 1:
            rows = await self.db.fetch_all(arms[0])
        else:
            union = sa.union_all(*[sa.select(arm.subquery()) for arm in arms]).subquery()
            rows = await self.db.fetch_all(sa.select(union).order_by(union.c.id.desc()).limit(limit + 1))
        page = rows[:limit]
        return {
            "entries": [{"id": r.id, "at": iso(r.at), "user_id": r.user_id, "username": r.username, "kind": r.kind,
                         "subject": r.subject, "detail": _json_or_text(r.detail), "ip": r.ip} for r in page],
            "next_cursor": self.cursors.encode("audit", page[-1].id) if len(rows) > limit else None,
        }


def _json_or_text(raw: str | None):
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw

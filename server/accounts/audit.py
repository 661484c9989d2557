"""The audit log: who did what and when, kept in the database."""

from __future__ import annotations

import json

import sqlalchemy as sa

from server.db import schema as tables
from server.db import Db
from server.timeutil import now_ms


class AuditLog:
    """Appends audit entries and counts recent ones (the login rate limit reads it)."""

    def __init__(self, db: Db):
        self.db = db

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

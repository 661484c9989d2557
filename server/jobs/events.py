"""Reading the job event log: what `resume` replays and what a node's fan-out fills gaps from.

`JobStore` appends the events (in the same transaction as the change they describe, with ids
that increase per user in commit order); this reads them back.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.timeutil import iso


class JobEventLog:
    """The read side of `job_events` and `event_counters`."""

    def __init__(self, db: Db):
        self.db = db

    def __repr__(self) -> str:
        return f"JobEventLog({self.db!r})"

    async def read(self, user_id: int, after: int, limit: int) -> list[dict]:
        """The user's events with ids above `after`, oldest first, as job-update payloads."""
        e = tables.job_events
        rows = await self.db.fetch_all(
            sa.select(e.c.event_id, e.c.kind, e.c.payload, e.c.created_at)
            .where(e.c.user_id == user_id, e.c.event_id > after).order_by(e.c.event_id).limit(limit))
        return [{"event_id": r.event_id, "kind": r.kind, "job": orjson.loads(r.payload), "at": iso(r.created_at)}
                for r in rows]

    async def last_id(self, user_id: int) -> int:
        """The id of the user's newest committed event (0 before the first)."""
        c = tables.event_counters
        return await self.db.fetch_val(sa.select(c.c.last_event_id).where(c.c.user_id == user_id)) or 0

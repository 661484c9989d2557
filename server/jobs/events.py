"""The event log: what `resume` replays and what a node's fan-out fills gaps from.

The stores append events (in the same transaction as the change they describe, with ids that
increase per user in commit order, over every topic); this reads them back. A topic names the
Socket.IO event a client gets and the key its record travels under.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Collection, Sequence

import orjson
import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.timeutil import iso, now_ms

logger = logging.getLogger(__name__)

COUNTERS_IN_LIMIT = 1000  # past this many users, reading every counter row is as cheap as an IN list


# topic -> (Socket.IO event, key of the record in its payload)
TOPICS = {
    "job": ("job-update", "job"),  # a Set Action job
    "pipeline": ("pipeline-update", "job"),  # a pipeline job reported by a CI/CD agent
    "deployment": ("deployment-update", "deployment"),
}


def client_event(topic: str, event_id: int, kind: str, record: dict, at: str | None) -> tuple[str, dict]:
    """(Socket.IO event name, payload) of one logged event, as clients get it live or replayed."""
    name, key = TOPICS[topic]
    return name, {"event_id": event_id, "kind": kind, key: record, "at": at}


def append_events_unit(user_id: int, topic: str, record_id: str, record: dict, kinds: list[str], now: int,
                       *, one_statement: bool = False):
    """Write events about one record (a write unit, server/db/units.py, run inside the change's
    transaction); ids come from the user's counter row. Returns them as they go on the fan-out bus.

    The counter's row lock is held until commit, so on PostgreSQL a concurrent writer for the
    same user waits, and a larger id can never commit before a smaller one.

    `one_statement` (PostgreSQL only): the counter and the events in one statement, stamped by the
    database's clock once it holds the lock. Each round trip to PostgreSQL between the stamp and the
    commit (and while the lock is held) costs two wake-ups of processes that, on a busy machine,
    wait for a core: one fewer measurably cuts the commit-to-browser delay.
    """
    if one_statement:
        rows = yield (
            "WITH counter AS ("
            " INSERT INTO event_counters (user_id, last_event_id) VALUES (:u, :n)"
            " ON CONFLICT (user_id) DO UPDATE SET last_event_id = event_counters.last_event_id + :n"
            " RETURNING last_event_id) "
            "INSERT INTO job_events (user_id, event_id, topic, job_id, kind, payload, created_at) "
            "SELECT :u, counter.last_event_id - :n + k.ord, :t, :j, k.kind, :p,"
            " GREATEST(:now, CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS bigint)) "
            "FROM counter, unnest(CAST(:kinds AS text[])) WITH ORDINALITY AS k(kind, ord) "
            "RETURNING event_id, kind, created_at",
            {"u": user_id, "n": len(kinds), "t": topic, "j": record_id, "p": orjson.dumps(record).decode(),
             "now": now, "kinds": list(kinds)},
        )
        return [{"event_id": event_id, "topic": topic, "kind": kind, "job": record, "user_id": user_id, "at": at}
                for event_id, kind, at in sorted(rows)]
    (last,), = yield (
        "INSERT INTO event_counters (user_id, last_event_id) VALUES (:u, :n) "
        "ON CONFLICT (user_id) DO UPDATE SET last_event_id = event_counters.last_event_id + :n "
        "RETURNING last_event_id",
        {"u": user_id, "n": len(kinds)},
    )
    first = last - len(kinds) + 1
    # stamped after the counter lock is held, just before commit: clients measure delivery from it
    at = max(now, now_ms())
    events = [{"event_id": first + i, "topic": topic, "kind": kind, "job": record, "user_id": user_id, "at": at}
              for i, kind in enumerate(kinds)]
    params = {"u": user_id, "t": topic, "j": record_id, "p": orjson.dumps(record).decode(), "at": at}
    values = []
    for i, event in enumerate(events):
        values.append(f"(:u, :e{i}, :t, :j, :k{i}, :p, :at)")
        params[f"e{i}"], params[f"k{i}"] = event["event_id"], event["kind"]
    yield ("INSERT INTO job_events (user_id, event_id, topic, job_id, kind, payload, created_at) VALUES "
           + ", ".join(values), params)
    return events


async def append_events(db: Db, user_id: int, topic: str, record_id: str, record: dict, kinds: list[str],
                        now: int) -> list[dict]:
    """`append_events_unit` inside the transaction the caller holds."""
    return await db.run_inline(append_events_unit(user_id, topic, record_id, record, kinds, now,
                                                  one_statement=not db.is_sqlite))


async def publish_events(subscribers: Sequence[Callable[[list[dict]], Awaitable[None]]], events: list[dict]) -> None:
    """Hand committed events to each subscriber; a broken subscriber must not fail the change."""
    if not events:
        return
    for subscriber in subscribers:
        try:
            await subscriber(events)
        except Exception:
            logger.exception("event subscriber %r failed", subscriber)


class JobEventLog:
    """The read side of `job_events` and `event_counters`."""

    def __init__(self, db: Db):
        self.db = db

    def __repr__(self) -> str:
        return f"JobEventLog({self.db!r})"

    async def read(self, user_id: int, after: int, limit: int) -> list[tuple[str, dict]]:
        """The user's events with ids above `after`, oldest first, as (event name, payload)."""
        e = tables.job_events
        rows = await self.db.fetch_all(
            sa.select(e.c.event_id, e.c.topic, e.c.kind, e.c.payload, e.c.created_at)
            .where(e.c.user_id == user_id, e.c.event_id > after).order_by(e.c.event_id).limit(limit))
        return [client_event(r.topic, r.event_id, r.kind, orjson.loads(r.payload), iso(r.created_at)) for r in rows]

    async def last_id(self, user_id: int) -> int:
        """The id of the user's newest committed event (0 before the first)."""
        c = tables.event_counters
        return await self.db.fetch_val(sa.select(c.c.last_event_id).where(c.c.user_id == user_id)) or 0

    async def counters(self, user_ids: Collection[int] | None) -> dict[int, int]:
        """Each user's newest committed event id, in one query on the counters' primary key: of
        `user_ids`, or of every user with None (one small row per user who ever had an event)."""
        sql, params = "SELECT user_id, last_event_id FROM event_counters", {}
        if user_ids is not None and len(user_ids) <= COUNTERS_IN_LIMIT:
            if not user_ids:
                return {}
            params = {f"u{i}": user_id for i, user_id in enumerate(user_ids)}
            sql += " WHERE user_id IN (" + ", ".join(f":{name}" for name in params) + ")"
        # SQL text straight on the driver: SQLAlchemy's compile and `databases` Records cost more
        # than the query itself on a few thousand rows, every few seconds on every node
        rows = await self.db.raw_fetch(sql, params)
        if user_ids is None or len(user_ids) <= COUNTERS_IN_LIMIT:
            return dict(rows)
        wanted = set(user_ids)
        return {user_id: last for user_id, last in rows if user_id in wanted}

"""The event log (server/jobs/events.py): ids per user in commit order, whatever the backend and
however the counter and the events are written (on PostgreSQL in one statement)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from server.db import Db
from server.db.migrations import migrate
from server.jobs.events import JobEventLog, append_events
from server.timeutil import iso, now_ms
from support import BACKENDS, fresh_db


@pytest_asyncio.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with fresh_db(request.param, tmp_path) as database:
        await migrate(database)
        yield database


async def change(db: Db, user_id: int, job_id: str, kinds: list[str], now: int) -> list[dict]:
    """A change of one job that appends its events, and stays in its transaction a moment after
    (so on PostgreSQL the other writers of the same user queue behind the counter's row lock)."""
    async with db.transaction():
        events = await append_events(db, user_id, "job", job_id, {"job_id": job_id, "user_id": user_id},
                                     kinds, now)
        await asyncio.sleep(0.001)
    return events


@pytest.mark.asyncio
async def test_concurrent_changes_of_one_user_get_consecutive_ids_readable_in_order(db):
    now = now_ms()
    calls = [(f"job-{i:02d}", ["status", "progress"] if i % 3 == 0 else ["progress"]) for i in range(30)]
    results = await asyncio.gather(*(change(db, 7, job_id, kinds, now) for job_id, kinds in calls))
    results.append(await change(db, 8, "other-user", ["created"], now))  # another user counts apart

    for (job_id, kinds), events in zip(calls, results):
        assert [e["kind"] for e in events] == kinds
        assert [e["event_id"] for e in events] == list(range(events[0]["event_id"], events[0]["event_id"] + len(kinds)))
        assert all(e["job"]["job_id"] == job_id and e["user_id"] == 7 and e["topic"] == "job" for e in events)
    published = sorted((e for events in results[:-1] for e in events), key=lambda e: e["event_id"])
    assert [e["event_id"] for e in published] == list(range(1, 1 + sum(len(k) for _, k in calls)))
    assert results[-1][0]["event_id"] == 1
    # stamped once the counter is held, so never before the change began, and never earlier for a larger id
    stamps = [e["at"] for e in published]
    assert stamps == sorted(stamps) and stamps[0] >= now

    # what replay reads back is what went out live, in the same order
    log = JobEventLog(db)
    replayed = await log.read(7, 0, 1000)
    assert [(name, p["event_id"], p["kind"], p["at"]) for name, p in replayed] == \
        [("job-update", e["event_id"], e["kind"], iso(e["at"])) for e in published]
    assert await log.last_id(7) == published[-1]["event_id"]


@pytest.mark.asyncio
async def test_the_stamp_is_never_before_the_changes_own_time(db):
    later = now_ms() + 60_000  # a change whose clock reads ahead of the database's
    [event] = await change(db, 3, "job-ahead", ["progress"], later)
    assert event["at"] == later
    [(_, payload)] = await JobEventLog(db).read(3, 0, 10)
    assert payload["at"] == iso(later)

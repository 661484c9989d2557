"""Job statistics read from the aggregates that the job store keeps (never from `jobs`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.stats.counts import status_counts, success_rate
from server.timeutil import iso, now_ms


async def job_stats(db: Db, user_id: int | None) -> dict:
    """The `job-stats` payload of one user, or of all users when user_id is None.

    Plain SQL on the driver: it runs after every change of a user's jobs (coalesced), and
    compiling three SQLAlchemy statements cost more than running them.
    """
    now = now_ms()
    today_date = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date()
    # the average covers the last 7 days: a bounded range of the (day, ...) primary key, however
    # many years of history the table holds
    params: dict = {"today": today_date.isoformat(), "week_start": (today_date - timedelta(days=6)).isoformat()}
    of_user = ""
    if user_id is not None:
        of_user, params["u"] = " AND user_id = :u", user_id
    counts = await status_counts(db, user_id)
    (duration_sum, duration_count, total, success, failed), = await db.raw_fetch(
        "SELECT COALESCE(SUM(duration_sum_ms), 0), COALESCE(SUM(duration_count), 0), "
        "COALESCE(SUM(CASE WHEN day = :today THEN created END), 0), "
        "COALESCE(SUM(CASE WHEN day = :today THEN success END), 0), "
        "COALESCE(SUM(CASE WHEN day = :today THEN failed + partial END), 0) "
        "FROM daily_stats WHERE day >= :week_start" + of_user, params)
    duration_count = int(duration_count)
    return {
        "user_id": user_id,
        "counts": counts,
        "today": {"total": int(total), "success": int(success), "failed": int(failed)},
        "running": counts["IN_PROGRESS"] + counts["QUEUED"],
        "success_rate": success_rate(counts["SUCCESS"], counts["FAILED"], counts["PARTIAL"]),
        "avg_duration_ms": round(int(duration_sum) / duration_count) if duration_count else None,  # last 7 days
        "as_of": iso(now),
    }


async def daily_figures(db: Db, user_id: int | None, days: int = 7) -> list[dict]:
    """Per-day created / success / failed / partial / cancelled for the last `days` days, zeros filled."""
    ds = tables.daily_stats
    end = datetime.now(timezone.utc).date()
    start = end - timedelta(days=days - 1)
    query = sa.select(
        ds.c.day, sa.func.sum(ds.c.created).label("created"), sa.func.sum(ds.c.success).label("success"),
        sa.func.sum(ds.c.failed).label("failed"), sa.func.sum(ds.c.partial).label("partial"),
        sa.func.sum(ds.c.cancelled).label("cancelled"),
        sa.func.sum(ds.c.duration_sum_ms).label("duration_sum"),
        sa.func.sum(ds.c.duration_count).label("duration_count"),
    ).where(ds.c.day >= start.isoformat()).group_by(ds.c.day)
    if user_id is not None:
        query = query.where(ds.c.user_id == user_id)
    found = {row.day: row for row in await db.fetch_all(query)}
    figures = []
    for offset in range(days):
        day = (start + timedelta(days=offset)).isoformat()
        row = found.get(day)
        count = int(row.duration_count) if row else 0
        figures.append({
            "day": day,
            "created": int(row.created) if row else 0,
            "success": int(row.success) if row else 0,
            "failed": int(row.failed) if row else 0,
            "partial": int(row.partial) if row else 0,
            "cancelled": int(row.cancelled) if row else 0,
            "avg_duration_ms": round(int(row.duration_sum) / count) if count else None,
        })
    return figures

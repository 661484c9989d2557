"""Jobs per status, from the `job_counts` aggregate the job store keeps: the one place it is summed."""

from __future__ import annotations

from server.db import Db
from server.jobs.store import JobStatus


async def status_counts(db: Db, user_id: int | None = None) -> dict[str, int]:
    """Jobs per status (every status present, zeros included), of one user or of all users."""
    counts = {status.value: 0 for status in JobStatus}
    sql = "SELECT status, SUM(n) FROM job_counts"
    params: dict = {}
    if user_id is not None:
        sql, params = sql + " WHERE user_id = :u", {"u": user_id}
    for status, n in await db.raw_fetch(sql + " GROUP BY status", params):
        counts[status] = int(n)
    return counts


async def status_counts_by_user(db: Db) -> dict[int, dict[str, int]]:
    """Jobs per status of every user who has any (statuses with none left out)."""
    counts: dict[int, dict[str, int]] = {}
    for user_id, status, n in await db.raw_fetch("SELECT user_id, status, n FROM job_counts WHERE n != 0"):
        counts.setdefault(user_id, {})[status] = int(n)
    return counts


def success_rate(success: int, failed: int, partial: int) -> float | None:
    """Percent of finished (not cancelled) jobs that fully succeeded; None before any finished."""
    finished = success + failed + partial
    return round(100.0 * success / finished, 1) if finished else None

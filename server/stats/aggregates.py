"""The admin figures, read from the aggregates the job store keeps, and the check that recounts
those aggregates from the `jobs` table.

`job_counts` (jobs per user and status), `daily_stats` (per UTC day, user, action and cluster:
created by creation day, outcomes and processing time by finishing day) and
`duration_histogram` (finished jobs per day, action, cluster and duration bucket) change in the
same transaction as the job. A stats request reads a few hundred of their rows, never `jobs`.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.stats.counts import status_counts, success_rate
from server.stats.histogram import bucket_sql, percentile, row_extremes, widen
from server.timeutil import iso, now_ms

DAY_MS = 86_400_000
OUTCOMES = ("success", "failed", "partial", "cancelled")
MAX_DIFFERENCES = 50
MAX_WINDOW_DAYS = 90  # the most days `GET /admin/jobs/stats?days=N` covers (daily rows included)
LIVE_DAYS = 2  # today and yesterday: their aggregates may still change
# literal, not a bound parameter: PostgreSQL matches a GROUP BY expression to the SELECT's text
_DAY_LITERAL = sa.literal_column(str(DAY_MS), sa.BigInteger)


def _day(offset_days: int, today) -> str:
    return (today - timedelta(days=offset_days)).isoformat()


class AdminStats:
    """All users' figures for the admin pages.

    A job counts on the day it is created and on the day it finishes, so the aggregates of days
    before yesterday never change: their sums are read once per process and kept (yesterday stays
    live for a node whose clock lags). A request then reads only today's and yesterday's rows.
    """

    def __init__(self, db: Db):
        self.db = db
        # day -> (daily_stats sums per action and cluster, histogram counts per action, cluster, bucket)
        self._closed: dict[str, tuple[list[dict], list[dict]]] = {}
        # (first, last closed day, window start) -> those days added up
        self._closed_sums: dict[tuple[str, str, str], _Sums] = {}

    async def figures(self, window_days: int = 7, now: int | None = None) -> dict:
        """Counts now, today, and over the last `window_days` days (today included): a row per day,
        processing times, and per-action and per-cluster breakdowns."""
        now = now_ms() if now is None else now
        today = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date()
        window_start = _day(window_days - 1, today)
        live_start = _day(LIVE_DAYS - 1, today)

        counts = await status_counts(self.db)

        closed_days = [_day(offset, today) for offset in range(LIVE_DAYS, window_days)]
        key = (closed_days[-1] if closed_days else "", closed_days[0] if closed_days else "", window_start)
        closed = self._closed_sums.get(key)
        if closed is None:
            missing = [day for day in closed_days if day not in self._closed]
            if missing:
                found = await self._read(min(missing), live_start)
                for day in missing:
                    self._closed[day] = found.get(day, ([], []))
            for day in [day for day in self._closed if day < _day(MAX_WINDOW_DAYS + LIVE_DAYS, today)]:
                del self._closed[day]
            closed = _Sums()
            for day in closed_days:
                closed.add_day(day, *self._closed[day], in_window=day >= window_start)
            if len(self._closed_sums) >= 16:
                self._closed_sums.clear()
            self._closed_sums[key] = closed
        sums = closed.copy()
        for day, (daily_rows, hist_rows) in (await self._read(live_start, None)).items():
            sums.add_day(day, daily_rows, hist_rows, in_window=day >= window_start)
        by_day, by_action, by_cluster, window = sums.by_day, sums.by_action, sums.by_cluster, sums.window
        hist_all, hist_action, hist_cluster = sums.hist_all, sums.hist_action, sums.hist_cluster
        seen_all, seen_action, seen_cluster = sums.seen_all, sums.seen_action, sums.seen_cluster

        today_key = today.isoformat()
        return {
            "as_of": iso(now),
            "counts": counts,
            "total": sum(counts.values()),
            "running": counts["IN_PROGRESS"],
            "queued": counts["QUEUED"],
            # percent of finished (not cancelled) jobs that fully succeeded, all time (as in job-stats)
            "success_rate": success_rate(counts["SUCCESS"], counts["FAILED"], counts["PARTIAL"]),
            "today": {"day": today_key, **_public(by_day.get(today_key, _zero()))},
            "window_days": window_days,
            "processing": {"finished": window["duration_count"], "avg_ms": _avg(window),
                           "p50_ms": percentile(hist_all, 0.5, seen_all),
                           "p95_ms": percentile(hist_all, 0.95, seen_all)},
            "avg_duration_ms": _avg(window),
            "p95_duration_ms": percentile(hist_all, 0.95, seen_all),
            "daily": [{"day": day, **_public(by_day.get(day, _zero()))}
                      for day in (_day(offset, today) for offset in range(window_days - 1, -1, -1))],
            "by_action": [{"action_name": name, **_public(values),
                           "p95_duration_ms": percentile(hist_action[name], 0.95, seen_action.get(name))}
                          for name, values in sorted(by_action.items())],
            "by_cluster": [{"cluster": name, **_public(values),
                            "p95_duration_ms": percentile(hist_cluster[name], 0.95, seen_cluster.get(name))}
                           for name, values in sorted(by_cluster.items())],
        }

    async def _read(self, start: str, end: str | None) -> dict[str, tuple[list[dict], list[dict]]]:
        """Per day from `start` (up to `end`, excluded): sums by action and cluster, histogram counts."""
        ds, dh = tables.daily_stats, tables.duration_histogram
        names = tuple(_zero())
        daily = sa.select(ds.c.day, ds.c.action_name, ds.c.cluster, *[sa.func.sum(ds.c[n]).label(n) for n in names]) \
            .where(ds.c.day >= start).group_by(ds.c.day, ds.c.action_name, ds.c.cluster)
        hist = sa.select(dh.c.day, dh.c.action_name, dh.c.cluster, dh.c.bucket, sa.func.sum(dh.c.n).label("n"),
                         sa.func.min(dh.c.min_ms).label("min_ms"), sa.func.max(dh.c.max_ms).label("max_ms")) \
            .where(dh.c.day >= start).group_by(dh.c.day, dh.c.action_name, dh.c.cluster, dh.c.bucket)
        if end is not None:
            daily, hist = daily.where(ds.c.day < end), hist.where(dh.c.day < end)
        found: dict[str, tuple[list[dict], list[dict]]] = defaultdict(lambda: ([], []))
        for row in await self.db.fetch_dicts(daily):
            found[row["day"]][0].append({"action_name": row["action_name"], "cluster": row["cluster"],
                                         "values": {n: int(row[n] or 0) for n in names}})
        for row in await self.db.fetch_dicts(hist):
            found[row["day"]][1].append({"action_name": row["action_name"], "cluster": row["cluster"],
                                         "bucket": row["bucket"], "n": int(row["n"]),
                                         "seen": row_extremes(row["bucket"], row["min_ms"], row["max_ms"])})
        return dict(found)


class _Sums:
    """Figures added up over days: per day, per action, per cluster, the window, the histograms."""

    def __init__(self):
        self.by_day: dict[str, dict] = defaultdict(_zero)
        self.by_action: dict[str, dict] = defaultdict(_zero)
        self.by_cluster: dict[str, dict] = defaultdict(_zero)
        self.window = _zero()
        self.hist_all: dict[int, int] = defaultdict(int)
        self.hist_action: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.hist_cluster: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        # (shortest, longest) duration counted, overall and per action and cluster: percentiles stay inside
        self.seen_all: tuple[int, int] | None = None
        self.seen_action: dict[str, tuple[int, int]] = {}
        self.seen_cluster: dict[str, tuple[int, int]] = {}

    def add_day(self, day: str, daily_rows: list[dict], hist_rows: list[dict], in_window: bool) -> None:
        for row in daily_rows:
            _add(self.by_day[day], row["values"])
            if in_window:
                _add(self.by_action[row["action_name"]], row["values"])
                _add(self.by_cluster[row["cluster"]], row["values"])
                _add(self.window, row["values"])
        if in_window:
            for row in hist_rows:
                n, bucket = row["n"], row["bucket"]
                self.hist_all[bucket] += n
                self.hist_action[row["action_name"]][bucket] += n
                self.hist_cluster[row["cluster"]][bucket] += n
                if n > 0:
                    action, cluster, seen = row["action_name"], row["cluster"], row["seen"]
                    self.seen_all = widen(self.seen_all, seen)
                    self.seen_action[action] = widen(self.seen_action.get(action), seen)
                    self.seen_cluster[cluster] = widen(self.seen_cluster.get(cluster), seen)

    def copy(self) -> "_Sums":
        other = _Sums()
        for name in ("by_day", "by_action", "by_cluster"):
            target = getattr(other, name)
            for key, values in getattr(self, name).items():
                target[key] = dict(values)
        other.window = dict(self.window)
        other.hist_all.update(self.hist_all)
        other.seen_all = self.seen_all
        other.seen_action = dict(self.seen_action)
        other.seen_cluster = dict(self.seen_cluster)
        for name in ("hist_action", "hist_cluster"):
            target = getattr(other, name)
            for key, counts in getattr(self, name).items():
                target[key].update(counts)
        return other


def _zero() -> dict:
    return {"created": 0, "success": 0, "failed": 0, "partial": 0, "cancelled": 0,
            "duration_sum_ms": 0, "duration_count": 0}


def _add(into: dict, values: dict) -> None:
    for key, value in values.items():
        into[key] += value


def _avg(values: dict) -> int | None:
    return round(values["duration_sum_ms"] / values["duration_count"]) if values["duration_count"] else None


def _public(values: dict) -> dict:
    """A day's or a group's figures as clients see them."""
    finished = values["success"] + values["failed"] + values["partial"]
    return {
        "created": values["created"],
        "success": values["success"],
        "failed": values["failed"],
        "partial": values["partial"],
        "cancelled": values["cancelled"],
        "finished": finished + values["cancelled"],
        "success_rate": success_rate(values["success"], values["failed"], values["partial"]),
        "avg_duration_ms": _avg(values),
    }


@contextlib.asynccontextmanager
async def read_snapshot(db: Db):
    """Run the enclosed reads on one consistent snapshot, without blocking writers."""
    if db.is_sqlite:
        # a deferred read transaction on a WAL database sees one snapshot and takes no write lock
        # (the pool's connections turn a plain BEGIN into BEGIN IMMEDIATE, so say DEFERRED)
        async with db.database.connection() as connection:
            raw = connection.raw_connection
            await raw.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                await raw.execute("COMMIT")
    else:
        # through Db: a transaction the database cut off gives its connection back
        async with db.transaction(isolation="repeatable_read", readonly=True):
            yield


async def verify_aggregates(db: Db) -> dict:
    """Recount job_counts, daily_stats and duration_histogram from `jobs`; list every difference."""
    started = time.perf_counter()
    j = tables.jobs
    days: dict[int, str] = {}

    def day(number) -> str:
        if number not in days:
            days[number] = _day_name(number)
        return days[number]

    async with read_snapshot(db):
        expected_counts = {(r[0], r[1]): int(r[2]) for r in await _tuples(db, sa.select(
            j.c.user_id, j.c.status, sa.func.count()).group_by(j.c.user_id, j.c.status))}
        stored_counts = {(r[0], r[1]): int(r[2]) for r in await _tuples(db, sa.select(
            tables.job_counts.c.user_id, tables.job_counts.c.status, tables.job_counts.c.n))}

        expected_daily: dict[tuple, dict] = defaultdict(_zero)
        created_day = (j.c.created_at // _DAY_LITERAL).label("d")
        for r in await _tuples(db, sa.select(created_day, j.c.user_id, j.c.action_name, j.c.cluster, sa.func.count())
                               .group_by(created_day, j.c.user_id, j.c.action_name, j.c.cluster)):
            expected_daily[(day(r[0]), r[1], r[2], r[3])]["created"] += int(r[4])
        finished_day = (j.c.finished_at // _DAY_LITERAL).label("d")
        outcome_sums = [sa.func.sum(sa.case((j.c.status == name.upper(), 1), else_=0)) for name in OUTCOMES]
        for r in await _tuples(db, sa.select(finished_day, j.c.user_id, j.c.action_name, j.c.cluster, *outcome_sums,
                                             sa.func.sum(j.c.duration_ms), sa.func.count())
                               .where(j.c.finished_at.isnot(None))
                               .group_by(finished_day, j.c.user_id, j.c.action_name, j.c.cluster)):
            entry = expected_daily[(day(r[0]), r[1], r[2], r[3])]
            for index, name in enumerate(OUTCOMES):
                entry[name] += int(r[4 + index] or 0)
            entry["duration_sum_ms"] += int(r[8] or 0)
            entry["duration_count"] += int(r[9])
        ds = tables.daily_stats
        names = tuple(_zero())
        stored_daily = {(r[0], r[1], r[2], r[3]): dict(zip(names, map(int, r[4:]))) for r in await _tuples(
            db, sa.select(ds.c.day, ds.c.user_id, ds.c.action_name, ds.c.cluster, *[ds.c[n] for n in names]))}

        bucket = bucket_sql(j.c.duration_ms).label("bucket")
        expected_hist, expected_seen = {}, {}
        for r in await _tuples(db, sa.select(finished_day, j.c.action_name, j.c.cluster, bucket, sa.func.count(),
                                             sa.func.min(j.c.duration_ms), sa.func.max(j.c.duration_ms))
                               .where(j.c.finished_at.isnot(None))
                               .group_by(finished_day, j.c.action_name, j.c.cluster, bucket)):
            key = (day(r[0]), r[1], r[2], r[3])
            expected_hist[key] = int(r[4])
            expected_seen[key] = {"min_ms": int(r[5]), "max_ms": int(r[6])}
        dh = tables.duration_histogram
        stored_hist, stored_seen = {}, {}
        for r in await _tuples(db, sa.select(dh.c.day, dh.c.action_name, dh.c.cluster, dh.c.bucket, dh.c.n,
                                             dh.c.min_ms, dh.c.max_ms)):
            key = (r[0], r[1], r[2], r[3])
            stored_hist[key] = int(r[4])
            if r[5] is not None and r[6] is not None:  # rows counted before schema v5 have none
                stored_seen[key] = {"min_ms": int(r[5]), "max_ms": int(r[6])}

    differences = []
    differences += _compare("job_counts", ("user_id", "status"), expected_counts, stored_counts)
    differences += _compare("daily_stats", ("day", "user_id", "action_name", "cluster"),
                            expected_daily, stored_daily)
    differences += _compare("duration_histogram", ("day", "action_name", "cluster", "bucket"),
                            expected_hist, stored_hist)
    differences += _compare("duration_histogram extremes", ("day", "action_name", "cluster", "bucket"),
                            {key: expected_seen.get(key) for key in stored_seen}, stored_seen)
    return {
        "ok": not differences,
        "difference_count": len(differences),
        "differences": differences[:MAX_DIFFERENCES],
        "checked": {"jobs": sum(expected_counts.values()), "job_counts": len(stored_counts),
                    "daily_stats": len(stored_daily), "duration_histogram": len(stored_hist)},
        "elapsed_ms": round((time.perf_counter() - started) * 1000),
    }


async def _tuples(db: Db, query) -> list:
    """Rows as the driver's own tuples (the recount reads hundreds of thousands of them)."""
    if db.is_sqlite:
        from sqlalchemy.dialects import sqlite as dialect
    else:
        from sqlalchemy.dialects import postgresql as dialect
    sql = str(query.compile(dialect=dialect.dialect(), compile_kwargs={"literal_binds": True}))
    async with db.database.connection() as connection:
        raw = connection.raw_connection
        if db.is_sqlite:
            return list(await raw.execute_fetchall(sql))
        return list(await raw.fetch(sql))


def _day_name(day_number) -> str:
    return datetime.fromtimestamp(int(day_number) * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


def _is_zero(value) -> bool:
    return not any(value.values()) if isinstance(value, dict) else value == 0


def _compare(table: str, key_names: tuple[str, ...], expected: dict, stored: dict) -> list[dict]:
    """Rows whose stored value differs from the recount (absent and all-zero count as equal)."""
    differences = []
    for key in sorted(set(expected) | set(stored), key=repr):
        want, have = expected.get(key), stored.get(key)
        if (want is None or _is_zero(want)) and (have is None or _is_zero(have)):
            continue
        if want != have:
            differences.append({"table": table, "key": dict(zip(key_names, key)),
                                "recounted": want, "stored": have})
    return differences

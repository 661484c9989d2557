"""`GET /admin/jobs/stats?days=N`: `daily` has a row for each of the N days asked for (1-90), and
the processing-time percentiles never leave the durations really seen (the histogram's buckets
keep their shortest and longest job)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from server.stats import histogram
from support import BACKENDS
from support import api_error as error
from support import with_db

pytestmark = pytest.mark.own_server  # everyone's figures: a server and a database of its own


def _utc_day(offset: int) -> str:
    return (datetime.now(timezone.utc).date() - timedelta(days=offset)).isoformat()


@pytest.mark.parametrize("backend", BACKENDS)
def test_daily_has_a_row_for_each_day_asked_for(server, sim):
    admin = server.client(server.create_user("stats-admin", role="admin"))
    api = server.client(server.create_user("stats-user"))
    api.wait_for(api.start(["D1", "D2"])["job_id"])

    async def older_days(db):
        # what the job store counted on earlier days: 29 days ago is in a 30-day window, 30 days ago is not
        for offset, created in ((29, 3), (30, 5), (89, 7)):
            await db.execute(
                "INSERT INTO daily_stats (day, user_id, action_name, cluster, created, success, failed, partial, "
                "cancelled, duration_sum_ms, duration_count) VALUES (:d, 1, 'PE-Enable', 'sim', :n, :n, 0, 0, 0, "
                ":sum, :n)", {"d": _utc_day(offset), "n": created, "sum": created * 100})

    with_db(server, older_days)

    for days in (1, 7, 30, 89, 90):
        stats = admin.get("/admin/jobs/stats", params={"days": days}).json()
        assert stats["window_days"] == days
        assert [d["day"] for d in stats["daily"]] == [_utc_day(offset) for offset in range(days - 1, -1, -1)]
        # the daily rows add up to the window's breakdowns
        assert sum(d["created"] for d in stats["daily"]) == sum(a["created"] for a in stats["by_action"])
    default = admin.get("/admin/jobs/stats").json()
    assert default["window_days"] == 7 and len(default["daily"]) == 7
    month = admin.get("/admin/jobs/stats", params={"days": 30}).json()
    assert month["daily"][0] == {"day": _utc_day(29), "created": 3, "success": 3, "failed": 0, "partial": 0,
                                 "cancelled": 0, "finished": 3, "success_rate": 100.0, "avg_duration_ms": 100}
    assert month["daily"][-1]["created"] == 1
    quarter = admin.get("/admin/jobs/stats", params={"days": 90}).json()
    assert sum(d["created"] for d in quarter["daily"]) == 1 + 3 + 5 + 7
    # asked again, from the days kept in memory: the same figures
    again = admin.get("/admin/jobs/stats", params={"days": 30}).json()
    assert again["daily"] == month["daily"] and again["by_action"] == month["by_action"]

    # out of range or not a number: a 400 naming `days`, and what it accepts
    for bad in ("0", "91", "-1", "7.5", "1e2", "seven", "9" * 5000, "<script>", "７"):
        answer = error(admin.get("/admin/jobs/stats", params={"days": bad}), 400)
        assert answer["details"]["field"] == "days", bad
    too_many = error(admin.get("/admin/jobs/stats", params={"days": "91"}), 400)["message"]
    assert too_many.startswith("'days'") and "90" in too_many, too_many
    # not an admin: refused before the parameter is looked at
    assert error(api.get("/admin/jobs/stats", params={"days": "30"}), 403)


@pytest.mark.parametrize("backend", BACKENDS)
def test_percentiles_stay_within_the_durations_seen(server, sim):
    admin = server.client(server.create_user("p95-admin", role="admin"))
    api = server.client(server.create_user("p95-user"))
    sim.knobs(latency_ms=120)
    one = api.wait_for(api.start(["P1"], action="T-Enable")["job_id"])
    stats = admin.get("/admin/jobs/stats").json()
    # one job: every percentile is its duration, not the upper edge of its histogram bucket
    duration = one["duration_ms"]
    assert duration >= 120
    assert histogram.bucket_range(histogram.bucket_of(duration))[1] > duration  # the edge would be above it
    assert stats["p95_duration_ms"] == duration and stats["processing"]["p95_ms"] == duration
    assert stats["processing"]["p50_ms"] == duration
    assert [a["p95_duration_ms"] for a in stats["by_action"]] == [duration]
    assert [c["p95_duration_ms"] for c in stats["by_cluster"]] == [duration]

    sim.knobs(latency_ms=0)
    quick = [api.wait_for(api.start([f"Q{i}"], action="PE-Enable")["job_id"]) for i in range(3)]
    durations = sorted([duration] + [job["duration_ms"] for job in quick])
    stats = admin.get("/admin/jobs/stats").json()
    assert durations[0] <= stats["processing"]["p50_ms"] <= durations[-1]
    assert stats["p95_duration_ms"] <= durations[-1]
    by_action = {a["action_name"]: a["p95_duration_ms"] for a in stats["by_action"]}
    assert by_action["T-Enable"] == duration
    assert by_action["PE-Enable"] <= max(job["duration_ms"] for job in quick)

    # the recount checks the kept extremes too, and names a wrong one
    assert admin.get("/admin/jobs/stats/verify").json()["ok"]

    async def corrupt(db):
        await db.execute("UPDATE duration_histogram SET max_ms = max_ms + 5 WHERE action_name = 'T-Enable'")

    with_db(server, corrupt)
    check = admin.get("/admin/jobs/stats/verify").json()
    assert not check["ok"]
    [wrong] = [d for d in check["differences"] if d["table"] == "duration_histogram extremes"]
    assert wrong["key"]["action_name"] == "T-Enable"
    assert wrong["stored"]["max_ms"] == wrong["recounted"]["max_ms"] + 5 == duration + 5


def test_rows_counted_before_the_extremes_were_kept_are_bounded_by_their_bucket():
    # a row from before schema v4 has no min_ms / max_ms: its bucket's edges bound it
    bucket = histogram.bucket_of(1000)
    low, high = histogram.bucket_range(bucket)
    assert histogram.row_extremes(bucket, None, None) == (low, high - 1)
    assert histogram.row_extremes(bucket, 1000, 1010) == (1000, 1010)
    counts = {bucket: 1}
    assert histogram.percentile(counts, 0.95) == high  # the interpolation alone reaches the upper edge
    assert histogram.percentile(counts, 0.95, (1000, 1010)) == 1010
    assert histogram.percentile(counts, 0.95, histogram.row_extremes(bucket, None, None)) == high - 1
    assert histogram.percentile({}, 0.95, (1, 2)) is None
    # a low percentile is not below the shortest job either (19 jobs at the top of their bucket)
    low, high = histogram.bucket_range(histogram.bucket_of(5000))
    counts = {histogram.bucket_of(5000): 19}
    assert histogram.percentile(counts, 0.05) < high - 2
    assert histogram.percentile(counts, 0.05, (high - 2, high - 1)) == high - 2
    assert histogram.widen(None, (5, 9)) == (5, 9) and histogram.widen((5, 9), (3, 7)) == (3, 9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_upgraded_database_keeps_its_old_histogram_rows_bounded_by_their_buckets(backend, tmp_path):
    from server.db import migrate
    from server.stats.aggregates import AdminStats
    from server.timeutil import now_ms
    from support import database_url, db_rows, on_database
    from test_migrations import _build_v1

    today = _utc_day(0)
    bucket = histogram.bucket_of(1000)
    low, high = histogram.bucket_range(bucket)
    url, handle = database_url(backend, tmp_path)

    async def old_row(db):
        await _build_v1(db)
        await db.execute("INSERT INTO duration_histogram (day, action_name, cluster, bucket, n) "
                         f"VALUES ('{today}', 'PE-Enable', 'sim', {bucket}, 1)")

    async def finish_one_more(db):
        # a job of the same bucket finishing after the upgrade: the row's extremes stay unknown
        await histogram.add_finished(db, today, "PE-Enable", "sim", 1001)
        return await AdminStats(db).figures(7, now=now_ms())

    try:
        on_database(url, old_row, migrated=True)
        on_database(url, migrate, migrated=True)
        assert db_rows(url, "SELECT n, min_ms, max_ms FROM duration_histogram") == [(1, None, None)]
        figures = on_database(url, finish_one_more, migrated=True)
        assert db_rows(url, "SELECT n, min_ms, max_ms FROM duration_histogram") == [(2, None, None)]
        assert low <= figures["p95_duration_ms"] <= high - 1
    finally:
        if handle is not None:
            handle.drop()

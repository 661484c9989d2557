"""The admin list's index choice, as a pure function: which walk is cheapest for a filter."""

from __future__ import annotations

import pytest

from server.admin.planner import SORTS, Counts, JobFilter, fraction, plan_arm

DAY = 86_400_000
NOW = 1_000 * DAY


def counts(by_status: dict[str, int], by_user: dict[str, int] | None = None, oldest_days: int = 365) -> Counts:
    full = {s: 0 for s in ("QUEUED", "IN_PROGRESS", "SUCCESS", "FAILED", "PARTIAL", "CANCELLED")}
    return Counts({**full, **by_status}, {**full, **by_user} if by_user is not None else None,
                  oldest={"created_at": NOW - oldest_days * DAY, "finished_at": NOW - oldest_days * DAY}, now=NOW)


BIG = counts({"SUCCESS": 900_000, "FAILED": 90_000, "IN_PROGRESS": 10})


def test_free_text_is_fetched_by_key_then_sorted():
    plan = plan_arm(JobFilter(text="abcd"), SORTS["created_at"], True, None, 51, BIG)
    assert plan.name == "text-then-sort"
    assert {"status", "user_id", "created_at"} <= plan.hide


def test_without_counts_the_sort_key_is_walked():
    assert plan_arm(JobFilter(), SORTS["updated_at"], True, None, 51, None).name == "walk"


def test_a_common_status_walks_its_slice_in_order():
    plan = plan_arm(JobFilter(statuses=("SUCCESS",)), SORTS["created_at"], True, "SUCCESS", 51, BIG)
    assert plan.name == "walk" and "status" not in plan.hide


def test_a_user_with_few_jobs_walks_that_users_slice():
    few = counts(BIG.by_status, {"SUCCESS": 20, "FAILED": 3})
    plan = plan_arm(JobFilter(user_id=7), SORTS["created_at"], True, None, 51, few)
    assert plan.name == "walk-user" and "user_id" not in plan.hide


def test_a_rare_status_of_one_user_is_read_through_both():
    few = counts(BIG.by_status, {"SUCCESS": 50_000, "FAILED": 2})
    plan = plan_arm(JobFilter(statuses=("FAILED",), user_id=7), SORTS["created_at"], True, "FAILED", 51, few)
    assert plan.name == "walk-user-status"
    plan = plan_arm(JobFilter(statuses=("FAILED",), user_id=7), SORTS["duration"], True, "FAILED", 51, few)
    assert plan.name == "user-status-then-sort"


def test_a_narrow_date_range_is_read_by_its_own_index():
    old_hour = JobFilter(created_from=NOW - 300 * DAY, created_to=NOW - 300 * DAY + 3_600_000)
    plan = plan_arm(old_hour, SORTS["duration"], True, None, 51, BIG)
    assert plan.name == "created_at-range-then-sort" and "created_at" not in plan.hide
    # sorted by the range's own column, the walk itself is bounded by the range
    assert plan_arm(old_hour, SORTS["created_at"], True, None, 51, BIG).name == "walk"


def test_a_wide_range_sorted_otherwise_walks_the_sort_key():
    # about 2% of the jobs: 51 of them are met early in a walk by duration
    old_week = JobFilter(created_from=NOW - 300 * DAY, created_to=NOW - 293 * DAY)
    assert plan_arm(old_week, SORTS["duration"], True, None, 51, BIG).name == "walk"


@pytest.mark.parametrize("low, high, expected", [
    (None, None, 1.0),
    (NOW - 50 * DAY, None, 0.5),
    (None, NOW - 50 * DAY, 0.5),
    (NOW + DAY, None, 0.0),  # after now: nothing
    (NOW - 500 * DAY, NOW - 200 * DAY, 0.0),  # before the oldest job
])
def test_fraction_of_a_date_range(low, high, expected):
    assert fraction(low, high, NOW - 100 * DAY, NOW) == pytest.approx(expected)

"""Choosing the index an admin list page reads: a pure function of the filter, the order and
exact counts, so it is unit-tested without a database (tests/test_admin_planner.py).

Every sort key is indexed alone, after `status` and after `user_id` (db/schema.py). When several
indexes could serve a page, `plan_arm` estimates the rows each would touch, from exact counts
(`job_counts`) and a uniform-in-time estimate for date ranges, and returns the columns to hide
from the index matcher (queries wraps them, `col + 0`) so the cheapest one is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SortKey:
    """An order of the admin list: jobs columns compared left to right, job_id last (a stable order)."""

    name: str
    columns: tuple[str, ...]
    # the first column is NULL for jobs not finished yet: those come after all others, by job_id
    nullable: bool = False


SORTS = {
    "created_at": SortKey("created_at", ("created_at", "job_id")),
    "updated_at": SortKey("updated_at", ("updated_at", "job_id")),
    "finished_at": SortKey("finished_at", ("finished_at", "job_id"), nullable=True),
    "duration": SortKey("duration", ("duration_ms", "job_id"), nullable=True),
    "status": SortKey("status", ("status", "created_at", "job_id")),
}
TIME_COLUMNS = ("created_at", "updated_at", "finished_at")


@dataclass(frozen=True)
class JobFilter:
    """What the admin list is narrowed to; every field optional. Date bounds are inclusive (ms)."""

    statuses: tuple[str, ...] = ()
    user_id: int | None = None
    action: str | None = None
    cluster: str | None = None
    text: str | None = None
    created_from: int | None = None
    created_to: int | None = None
    finished_from: int | None = None
    finished_to: int | None = None

    def date_ranges(self) -> dict[str, tuple[int | None, int | None]]:
        ranges = {}
        if self.created_from is not None or self.created_to is not None:
            ranges["created_at"] = (self.created_from, self.created_to)
        if self.finished_from is not None or self.finished_to is not None:
            ranges["finished_at"] = (self.finished_from, self.finished_to)
        return ranges


@dataclass
class Counts:
    """Exact job counts (from job_counts) and the time span, for choosing a plan."""

    by_status: dict[str, int]
    by_user_status: dict[str, int] | None
    oldest: dict[str, int] = field(default_factory=dict)
    now: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class Plan:
    """Which columns to hide from the index matcher for one arm, so the chosen index is used."""

    hide: frozenset[str]
    name: str


def plan_arm(f: JobFilter, sort: SortKey, descending: bool, status: str | None, want: int,
             counts: Counts | None) -> Plan:
    """Choose the index one arm of the list reads, by the estimated rows it must touch."""
    sort_column = sort.columns[0]
    order_only = frozenset(c for c in sort.columns if c != "job_id")
    if f.text is not None:
        # the text's matches are few and come by primary key: fetch them all, then sort
        return Plan(order_only | {"status", "user_id", "created_at", "finished_at"}, "text-then-sort")
    if counts is None:
        return Plan(frozenset(), "walk")
    total = max(counts.total, 1)
    lead = counts.by_status.get(status, 0) if status else total
    user = sum(counts.by_user_status.values()) if counts.by_user_status is not None else None
    both = (counts.by_user_status.get(status, 0) if status else user) if user is not None else None
    ranges = f.date_ranges()
    fractions = {column: fraction(low, high, counts.oldest.get(column, counts.now), counts.now)
                 for column, (low, high) in ranges.items()}
    matches = max((both if both is not None else lead) * math.prod(fractions.values()), 1.0)

    def walk(slice_rows: float) -> float:
        rows = slice_rows * fractions.get(sort_column, 1.0)
        skipped = 0.0
        if sort_column in TIME_COLUMNS:
            # times move together: a walk in time order reaches another column's range only
            # after passing every job on the near side of it
            for column, (low, high) in ranges.items():
                if column == sort_column:
                    continue
                oldest = counts.oldest.get(column, counts.now)
                bound = high if descending else low
                gap = 0 if bound is None else ((counts.now - bound) if descending else (bound - oldest))
                skipped = max(skipped, rows * min(max(gap / max(counts.now - oldest, 1), 0.0), 1.0))
        return min(rows, skipped + want * rows / matches)

    other_ranges = frozenset(c for c in ranges if c != sort_column)
    options = [(walk(lead), Plan(other_ranges | ({"user_id"} if user is not None else set()), "walk"))]
    if user is not None:
        options.append((walk(user), Plan(other_ranges | ({"status"} if status else set()), "walk-user")))
        if status and sort_column in ("created_at", "status"):
            options.append((walk(both), Plan(other_ranges, "walk-user-status")))
        elif status:
            options.append((both * 1.5 + 1, Plan(order_only | other_ranges, "user-status-then-sort")))
    for column, share in fractions.items():
        if column == sort_column:
            continue
        if column == "created_at" and both is not None:
            base = both  # (user_id, status, created_at) narrows by all three
        else:
            base = min(lead, user if user is not None else lead)
        hide = (order_only - {column}) | (frozenset(ranges) - {column})
        options.append((base * share * 1.5 + 1, Plan(hide, f"{column}-range-then-sort")))
    return min(options, key=lambda option: option[0])[1]


def fraction(low: int | None, high: int | None, oldest: int, now: int) -> float:
    """The share of jobs in [low, high], assuming they are spread evenly from the oldest to now."""
    span = max(now - oldest, 1)
    start = max(low if low is not None else oldest, oldest)
    end = min(high if high is not None else now, now)
    return min(max((end - start) / span, 0.0), 1.0)



"""Processing-time histogram: finished jobs counted per log-spaced duration bucket.

The p95 of millions of jobs comes from a few hundred counters per day instead of a scan. A
bucket is a quarter of a doubling wide (its upper edge is 2**(1/4), about 1.19 times its lower
one; 1 ms for durations under 8 ms): the true percentile lies in the bucket the estimate is
interpolated in, so the estimate is at most 19% off, and usually much less. Each bucket also keeps
the shortest and longest duration it counted, and an estimate is clamped to the shortest and
longest job of the figures, so a p95 never exceeds the slowest job (nor a p50 of one job differs
from it). Bucket edges are integers, computed once, so the job store (which counts), the stats
(which read) and the check that recounts from `jobs` (in SQL) agree on every duration.
"""

from __future__ import annotations

import bisect
import math

import sqlalchemy as sa

from server.db import Db

STEPS_PER_DOUBLING = 4
MAX_DOUBLINGS = 48  # 2**48 ms is ~8,900 years: every real duration has a bucket

# EDGES[b - 1] is the smallest duration (ms) of bucket b; bucket 0 holds durations <= 0
EDGES: tuple[int, ...] = tuple(sorted({math.ceil(2 ** (k / STEPS_PER_DOUBLING))
                                       for k in range(MAX_DOUBLINGS * STEPS_PER_DOUBLING + 1)}))


def bucket_of(duration_ms: int) -> int:
    """The bucket of a duration: 0 for <= 0 ms, else b with EDGES[b-1] <= d < EDGES[b]."""
    if duration_ms <= 0:
        return 0
    return bisect.bisect_right(EDGES, duration_ms)


def bucket_range(bucket: int) -> tuple[int, int]:
    """[low, high) in milliseconds of a bucket."""
    if bucket <= 0:
        return 0, 1
    high = EDGES[bucket] if bucket < len(EDGES) else EDGES[-1] * 2
    return EDGES[bucket - 1], high


def bucket_sql(column: sa.ColumnElement) -> sa.ColumnElement:
    """The same bucket as bucket_of, computed by the database (for the recount)."""
    # literals, not bound parameters: PostgreSQL matches a GROUP BY expression to the SELECT's text
    def number(value: int):
        return sa.literal_column(str(int(value)), sa.BigInteger)

    whens = [(column <= number(0), number(0))]
    whens += [(column < number(edge), number(index)) for index, edge in enumerate(EDGES) if index > 0]
    return sa.case(*whens, else_=number(len(EDGES)))


def percentile(counts: dict[int, int], fraction: float,
               observed: tuple[int, int] | None = None) -> int | None:
    """The duration below which `fraction` of the counted jobs fall, interpolated in its bucket,
    and clamped to `observed` (the shortest and longest duration counted) when given."""
    estimate = _interpolated(counts, fraction)
    if estimate is None or observed is None:
        return estimate
    shortest, longest = observed
    return min(max(estimate, shortest), longest)


def row_extremes(bucket: int, min_ms: int | None, max_ms: int | None) -> tuple[int, int]:
    """(shortest, longest) duration of a histogram row; a row counted before schema v5 has none
    recorded, and then the bucket's own edges bound them."""
    low, high = bucket_range(bucket)
    return (low if min_ms is None else int(min_ms)), (high - 1 if max_ms is None else int(max_ms))


def widen(extremes: tuple[int, int] | None, other: tuple[int, int]) -> tuple[int, int]:
    """The (shortest, longest) of two groups of durations together."""
    if extremes is None:
        return other
    return min(extremes[0], other[0]), max(extremes[1], other[1])


def _interpolated(counts: dict[int, int], fraction: float) -> int | None:
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(counts):
        n = counts[bucket]
        if n <= 0:
            continue
        if seen + n >= rank:
            low, high = bucket_range(bucket)
            if bucket == 0 or high - low <= 1:
                return low
            # geometric interpolation: durations spread evenly on a log scale inside a bucket
            return round(low * (high / low) ** ((rank - seen) / n))
        seen += n
    return bucket_range(max(counts))[0]


async def add_finished(db: Db, day: str, action_name: str, cluster: str, duration_ms: int) -> None:
    """Count one finished job (inside the caller's transaction)."""
    # CASE rather than LEAST/GREATEST (PostgreSQL) or MIN/MAX (SQLite): both dialects accept it. A row
    # counted before schema v5 keeps its nulls: its earlier jobs' durations are not known
    await db.execute(
        "INSERT INTO duration_histogram (day, action_name, cluster, bucket, n, min_ms, max_ms) "
        "VALUES (:d, :a, :c, :b, 1, :ms, :ms) "
        "ON CONFLICT (day, action_name, cluster, bucket) DO UPDATE SET n = duration_histogram.n + 1, "
        "min_ms = CASE WHEN duration_histogram.min_ms IS NULL OR duration_histogram.min_ms <= :ms "
        "THEN duration_histogram.min_ms ELSE :ms END, "
        "max_ms = CASE WHEN duration_histogram.max_ms IS NULL OR duration_histogram.max_ms >= :ms "
        "THEN duration_histogram.max_ms ELSE :ms END",
        {"d": day, "a": action_name, "c": cluster, "b": bucket_of(duration_ms), "ms": duration_ms},
    )

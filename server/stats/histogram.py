"""Processing-time histogram: finished jobs counted per log-spaced duration bucket.

The p95 of millions of jobs comes from a few hundred counters per day instead of a scan. A
bucket is a quarter of a doubling wide (about 19%), so an estimate is within ~10% of the true
value. Bucket edges are integers, computed once, so the job store (which counts), the stats
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


def percentile(counts: dict[int, int], fraction: float) -> int | None:
    """The duration below which `fraction` of the counted jobs fall, interpolated in its bucket."""
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
    await db.execute(
        "INSERT INTO duration_histogram (day, action_name, cluster, bucket, n) VALUES (:d, :a, :c, :b, 1) "
        "ON CONFLICT (day, action_name, cluster, bucket) DO UPDATE SET n = duration_histogram.n + 1",
        {"d": day, "a": action_name, "c": cluster, "b": bucket_of(duration_ms)},
    )

"""Time as integer milliseconds since the epoch inside, ISO 8601 UTC with a `Z` outside."""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone


def now_ms() -> int:
    """The current time in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    """Format epoch milliseconds as `2026-11-22T10:00:00.123Z` (None stays None)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    """`2026-11-22T10:00:00` of a second: most times formatted are of the last few seconds (the
    records just changed), and a cached one costs a fifth of time.gmtime + strftime."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_iso(text: str) -> int:
    """Parse an ISO 8601 date or date-time (naive means UTC) into epoch milliseconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def day_of(ms: int) -> str:
    """The UTC calendar day of a moment, as YYYY-MM-DD."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")

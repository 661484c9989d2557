"""Ids of new pipeline jobs and deployments: time-ordered UUIDs (version 7, RFC 9562).

A record's id is the primary key of its table and a key of the event log's index by record.
Random (version 4) ids put each new row on a random leaf page of those indexes, so a batch of
agent reports dirtied about two pages per report, each written to SQLite's WAL at commit; ids
that start with the time land next to each other, on the same few pages. The last 74 bits stay
random (ownership is checked on every read anyway), and the browser shows ids of this version by
their last characters (web/js/format.js `shortId`), the first ones being the same for a minute.
Set Action jobs keep random ids: users search them by their first characters.
"""

from __future__ import annotations

import os
import time
import uuid


def time_ordered_id() -> str:
    """A version-7 UUID: 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & (2**62 - 1)  # rand_b: 62 bits
    return str(uuid.UUID(int=value))

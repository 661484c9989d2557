"""The app-status cache: one entry per (cluster, CID, app) in the database, filled from upstream.

An entry holds what the cluster said and when; it is a hit for a request while it is younger
than the request's `ttl_seconds` and before its own `expires_at` (set from the TTL of the request
that fetched it). Expired entries are deleted by a background task.

Misses are fetched once however many requests ask at the same time:
- within a process, a request joins the fetch ("flight") already running for a key;
- across nodes sharing the database, a flight first claims its keys in `appstatus_claims`; a
  node that finds a key claimed waits for the entry to appear instead of calling the cluster,
  and takes the key over if the claim ends without an entry (that fetch failed, or its node died).
Upstream calls go in chunks of `batch_size` CIDs, at most `concurrency` calls at a time per
cluster, falling back to one call per CID when the batch endpoint is missing or fails. A CID the
cluster could not answer is reported as failed; it never fails the whole lookup.

The database is the cache. To answer a big job's repeated lookups fast, a node also keeps, per
job, the serialized answer of its last all-hit lookup, tagged with the (cluster, app)
`generation` read before that lookup; every write to those entries (on any node) bumps the
generation after it commits, so the copy is used only while the database still holds exactly
what it was made from, and only while each of its entries is still fresh for the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from operator import itemgetter

import orjson
import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.metrics import Metrics
from server.periodic import every
from server.timeutil import iso, now_ms
from server.upstream.client import TmsClient, UpstreamError
from server.upstream.clusters import Cluster

logger = logging.getLogger(__name__)

STATUSES = {"healthy", "warning", "error", "unknown"}
BATCH_MISSING_STATUSES = {404, 405, 501}
# A cluster without the batch endpoint is asked per CID for this long before trying it again.
BATCH_MISSING_SECONDS = 300.0
ROWS_PER_STATEMENT = 500  # CIDs per IN list in the rarely used paths (invalidation)
CLEANUP_ROWS = 5000  # expired entries deleted per statement, so no delete holds a lock for long
CLAIM_POLL_SECONDS = 0.05
# Hit and miss counts are added up in memory and written this often (and before stats are read),
# so a lookup costs no write; a node that dies loses at most this much of its counts.
COUNTER_FLUSH_SECONDS = 1.0
MAX_SNAPSHOT_ENTRIES = 200_000  # entries held in all per-job snapshots of a node (~130 bytes each)
NEVER = 2**63 - 1  # a time in ms after every other

# The queries that touch thousands of rows take and give them as one JSON text each way: built and
# read by the database in C, it avoids both per-row Python objects on the way out (costlier than
# the query itself for 10,000 rows) and compiling multi-row VALUES lists on the way in.
# On PostgreSQL each entry is looked up through a LATERAL ... LIMIT 1 subquery: one primary-key
# probe per CID whatever the planner's statistics say (a freshly filled table, not yet analyzed,
# otherwise gets a nested loop over the whole table per CID: seconds for 10,000 CIDs).
_SQL = {
    "sqlite": {
        "job_entries": """
SELECT json_group_array(json_array(jc.seq, jc.cid, ac.status, ac.detail, ac.cached_at, ac.expires_at))
FROM job_customers AS jc
LEFT JOIN appstatus_cache AS ac ON ac.cluster = :cluster AND ac.cid = jc.cid AND ac.app = :app
WHERE jc.job_id = :job_id""",
        "fresh": """
SELECT json_group_array(json_array(cid, status, detail, cached_at, expires_at)) FROM appstatus_cache
WHERE cluster = :cluster AND app = :app AND cid IN (SELECT value FROM json_each(:items))
  AND expires_at > :now AND cached_at >= :min_cached_at""",
        "live_claims": """
SELECT json_group_array(cid) FROM appstatus_claims
WHERE cluster = :cluster AND app = :app AND cid IN (SELECT value FROM json_each(:items)) AND expires_at >= :now""",
        "claim": """
INSERT INTO appstatus_claims (cluster, app, cid, owner, expires_at)
SELECT :cluster, :app, value, :owner, :expires_at FROM json_each(:items) WHERE true
ON CONFLICT (cluster, app, cid) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE appstatus_claims.expires_at < :now
RETURNING cid""",
        "store": """
INSERT INTO appstatus_cache (cluster, cid, app, status, detail, cached_at, expires_at)
SELECT :cluster, value ->> 0, :app, value ->> 1, value ->> 2, value ->> 3, value ->> 4
FROM json_each(:items) WHERE true
ON CONFLICT (cluster, cid, app) DO UPDATE SET status = excluded.status, detail = excluded.detail,
    cached_at = excluded.cached_at, expires_at = excluded.expires_at""",
    },
    "postgresql": {
        "job_entries": """
SELECT json_agg(json_build_array(jc.seq, jc.cid, ac.status, ac.detail, ac.cached_at, ac.expires_at)
                ORDER BY jc.seq)::text
FROM job_customers AS jc
LEFT JOIN LATERAL (
    SELECT a.status, a.detail, a.cached_at, a.expires_at FROM appstatus_cache AS a
    WHERE a.cluster = :cluster AND a.cid = jc.cid AND a.app = :app LIMIT 1) AS ac ON true
WHERE jc.job_id = :job_id""",
        "fresh": """
SELECT json_agg(json_build_array(a.cid, a.status, a.detail, a.cached_at, a.expires_at))::text
FROM json_array_elements_text(CAST(:items AS json)) AS v(item)
CROSS JOIN LATERAL (
    SELECT * FROM appstatus_cache AS c
    WHERE c.cluster = :cluster AND c.cid = v.item AND c.app = :app LIMIT 1) AS a
WHERE a.expires_at > CAST(:now AS BIGINT) AND a.cached_at >= CAST(:min_cached_at AS BIGINT)""",
        "live_claims": """
SELECT json_agg(c.cid)::text
FROM json_array_elements_text(CAST(:items AS json)) AS v(item)
CROSS JOIN LATERAL (
    SELECT cid, expires_at FROM appstatus_claims AS l
    WHERE l.cluster = :cluster AND l.app = :app AND l.cid = v.item LIMIT 1) AS c
WHERE c.expires_at >= CAST(:now AS BIGINT)""",
        "claim": """
INSERT INTO appstatus_claims (cluster, app, cid, owner, expires_at)
SELECT :cluster, :app, v.item, :owner, CAST(:expires_at AS BIGINT)
FROM json_array_elements_text(CAST(:items AS json)) AS v(item) WHERE true
ON CONFLICT (cluster, app, cid) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE appstatus_claims.expires_at < CAST(:now AS BIGINT)
RETURNING cid""",
        "store": """
INSERT INTO appstatus_cache (cluster, cid, app, status, detail, cached_at, expires_at)
SELECT :cluster, r ->> 0, :app, r ->> 1, r ->> 2, CAST(r ->> 3 AS BIGINT), CAST(r ->> 4 AS BIGINT)
FROM json_array_elements(CAST(:items AS json)) AS r WHERE true
ON CONFLICT (cluster, cid, app) DO UPDATE SET status = excluded.status, detail = excluded.detail,
    cached_at = excluded.cached_at, expires_at = excluded.expires_at""",
    },
}


@dataclass(frozen=True, slots=True)
class Fetched:
    """One CID's answer from upstream (or from an entry another fetch just stored), or its error."""

    status: str | None
    detail: str | None = None
    cached_at: int | None = None
    expires_at: int | None = None
    error: str | None = None

    @classmethod
    def failure(cls, message: str) -> "Fetched":
        return cls(None, error=message)


@dataclass(frozen=True)
class _Snapshot:
    """A job's serialized all-hit answer, valid while its (cluster, app) generation holds."""

    generation: int
    statuses: orjson.Fragment
    count: int
    oldest_cached_at: int
    first_expiry: int


@dataclass
class Lookup:
    """A job's app status: one public entry per CID in job order, and what it cost.

    `statuses` is a dict, or when answered from a snapshot the same JSON already serialized.
    """

    statuses: dict[str, dict] | orjson.Fragment
    count: int
    hits: int
    misses: int
    expired: int
    failed: list[str]
    next_expiry: int | None  # when the first entry goes stale for this request's TTL (ms)

    def __repr__(self) -> str:
        return f"Lookup(hits={self.hits}, misses={self.misses}, failed={len(self.failed)})"


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _parse(value: object, received_at: int, ttl_ms: int, absent: str) -> Fetched:
    """Check one upstream status object: anything but a known status is a failure for that CID."""
    if not isinstance(value, dict):
        return Fetched.failure(absent)
    status = value.get("status")
    if status not in STATUSES:
        shown = status[:40] if isinstance(status, str) else type(status).__name__
        return Fetched.failure(f"the cluster answered an invalid status {shown!r}")
    detail = value.get("detail")
    return Fetched(status, str(detail)[:500] if detail is not None else None,
                   received_at, received_at + ttl_ms)


class AppStatusCache:
    """Reads, fills, counts, invalidates and cleans the app-status entries."""

    def __init__(self, db: Db, client: TmsClient, *, batch_size: int, concurrency: int,
                 cleanup_interval: float, claim_seconds: float, metrics: Metrics):
        self.db = db
        self.client = client
        self.metrics = metrics
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.cleanup_interval = cleanup_interval
        self.claim_ms = int(claim_seconds * 1000)
        self._flights: dict[tuple[str, str, str], asyncio.Task] = {}
        self._flight_keys: dict[asyncio.Task, list[tuple[str, str, str]]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._batch_missing_until: dict[str, float] = {}
        self._cleanup_task: asyncio.Task | None = None
        self._flush_task: asyncio.Task | None = None
        self._pending_counts: dict[tuple[str, int], list[int]] = {}  # hits, misses, expired, cleaned
        self._snapshots: OrderedDict[tuple[str, str, str], _Snapshot] = OrderedDict()
        self._snapshot_entries = 0
        self._sql = _SQL["sqlite" if db.is_sqlite else "postgresql"]

    def __repr__(self) -> str:
        return f"<AppStatusCache flights={len(self._flight_keys)} batch_size={self.batch_size}>"

    async def start(self) -> None:
        """Start the background cleanup of expired entries and the counter writes."""
        self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="jobmon-appstatus-cleanup")
        self._flush_task = asyncio.create_task(self._flush_loop(), name="jobmon-appstatus-counters")

    async def stop(self) -> None:
        """Stop the background work and any fetch still running (their claims expire on their
        own), then write the counts not written yet."""
        tasks = list(self._flight_keys) + [t for t in (self._cleanup_task, self._flush_task) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.flush_counts()
        except Exception:
            logger.exception("could not write the last app-status cache counts")

    # -- reading ----------------------------------------------------------------------------
    async def lookup_job(self, cluster: Cluster, job_id: str, app: str, *, ttl_seconds: int,
                         skip_cache: bool, user_id: int) -> Lookup:
        """The app status of every customer of a job: entries still fresh, the rest fetched."""
        started = now_ms()
        ttl_ms = ttl_seconds * 1000
        # a hit is younger than the request's TTL and not past its own expiry
        min_cached_at = started if skip_cache else started - ttl_ms + 1
        key = (cluster.id, app, job_id)
        generation = None
        if not skip_cache:
            generation = await self._generation(cluster.id, app)
            snapshot = self._snapshots.get(key)
            if (snapshot is not None and snapshot.generation == generation and started < snapshot.first_expiry
                    and snapshot.oldest_cached_at >= min_cached_at):
                self._snapshots.move_to_end(key)
                self._count(cluster.id, user_id, hits=snapshot.count)
                return Lookup(snapshot.statuses, snapshot.count, snapshot.count, 0, 0, [],
                              min(snapshot.first_expiry, snapshot.oldest_cached_at + ttl_ms))
        rows = await self._job_entries(cluster.id, job_id, app)
        isos: dict[int, str] = {}
        statuses: dict[str, dict | None] = {}
        missing: list[str] = []
        expired = 0
        # over the hits: the oldest fetch and the first expiry (plain comparisons: this loop runs
        # once per customer, and min() calls alone would double its cost)
        oldest = first_expiry = NEVER
        for _seq, cid, status, detail, cached_at, expires_at in rows:
            if status is not None and expires_at > started and cached_at >= min_cached_at:
                statuses[cid] = {"app": app, "status": status, "detail": detail, "from_cache": True,
                                 "cached_at": isos.get(cached_at) or isos.setdefault(cached_at, iso(cached_at))}
                if cached_at < oldest:
                    oldest = cached_at
                if expires_at < first_expiry:
                    first_expiry = expires_at
            else:
                if status is not None and not skip_cache:
                    expired += 1
                statuses[cid] = None  # keeps the job's order; filled below
                missing.append(cid)
        failed: list[str] = []
        if missing:
            fetched = await self._fetch(cluster, app, missing, ttl_ms, min_cached_at)
            for cid in missing:
                entry = fetched.get(cid) or Fetched.failure("no answer for this customer")
                if entry.error is not None:
                    failed.append(cid)
                    statuses[cid] = {"app": app, "status": None, "detail": None, "from_cache": False,
                                     "cached_at": None, "error": entry.error}
                    continue
                statuses[cid] = {"app": app, "status": entry.status, "detail": entry.detail,
                                 "from_cache": False, "cached_at": isos.get(entry.cached_at)
                                 or isos.setdefault(entry.cached_at, iso(entry.cached_at))}
                oldest = min(oldest, entry.cached_at)
                first_expiry = min(first_expiry, entry.expires_at)
        hits = len(rows) - len(missing)
        self._count(cluster.id, user_id, hits=hits, misses=len(missing), expired=expired)
        # an entry goes stale for this TTL at cached_at + ttl, for everyone at its expires_at
        next_expiry = min(first_expiry, oldest + ttl_ms) if oldest != NEVER else None
        if generation is not None and rows and not missing:
            snapshot = self._keep_snapshot(key, _Snapshot(generation, orjson.Fragment(orjson.dumps(statuses)),
                                                          len(rows), oldest, first_expiry))
            return Lookup(snapshot.statuses, len(rows), hits, 0, 0, [], next_expiry)
        return Lookup(statuses, len(rows), hits, len(missing), expired, failed, next_expiry)  # type: ignore[arg-type]

    def _keep_snapshot(self, key: tuple[str, str, str], snapshot: _Snapshot) -> _Snapshot:
        old = self._snapshots.pop(key, None)
        if old is not None:
            self._snapshot_entries -= old.count
        if snapshot.count <= MAX_SNAPSHOT_ENTRIES // 2:
            self._snapshots[key] = snapshot
            self._snapshot_entries += snapshot.count
            while self._snapshot_entries > MAX_SNAPSHOT_ENTRIES:
                _, dropped = self._snapshots.popitem(last=False)
                self._snapshot_entries -= dropped.count
        return snapshot

    async def _generation(self, cluster_id: str, app: str) -> int:
        g = tables.appstatus_generations
        value = await self.db.fetch_val(sa.select(g.c.generation).where(g.c.cluster == cluster_id, g.c.app == app))
        return value or 0

    async def _bump(self, cluster_id: str | None = None, app: str | None = None) -> None:
        """After a write commits: copies read before it are no longer the database's content."""
        if cluster_id is not None and app is not None:
            await self.db.execute(
                "INSERT INTO appstatus_generations (cluster, app, generation) VALUES (:c, :a, 1) "
                "ON CONFLICT (cluster, app) DO UPDATE SET generation = appstatus_generations.generation + 1",
                {"c": cluster_id, "a": app})
            return
        g = tables.appstatus_generations
        query = g.update().values(generation=g.c.generation + 1)
        if cluster_id is not None:
            query = query.where(g.c.cluster == cluster_id)
        if app is not None:
            query = query.where(g.c.app == app)
        await self.db.execute(query)

    async def _job_entries(self, cluster_id: str, job_id: str, app: str) -> list[list]:
        rows = await self._json_rows(self._sql["job_entries"], cluster=cluster_id, app=app, job_id=job_id)
        rows.sort(key=itemgetter(0))  # SQLite's aggregate keeps no promised order
        return rows

    async def _json_rows(self, sql: str, **params) -> list:
        text = await self.db.fetch_val(sa.text(sql).bindparams(**params))
        return orjson.loads(text) if text else []

    async def _read_fresh(self, cluster_id: str, app: str, cids: list[str], min_cached_at: int) -> dict[str, Fetched]:
        """Entries of these CIDs that are fresh for a request (stored meanwhile by another fetch)."""
        rows = await self._json_rows(self._sql["fresh"], cluster=cluster_id, app=app, items=orjson.dumps(cids).decode(),
                                     now=now_ms(), min_cached_at=min_cached_at)
        return {cid: Fetched(status, detail, cached_at, expires_at)
                for cid, status, detail, cached_at, expires_at in rows}

    # -- fetching (single-flight) -------------------------------------------------------------
    async def _fetch(self, cluster: Cluster, app: str, cids: list[str], ttl_ms: int,
                     min_cached_at: int) -> dict[str, Fetched]:
        """Fetch these CIDs, joining the flights already running for any of them."""
        mine: list[str] = []
        joined: dict[asyncio.Task, None] = {}
        for cid in cids:
            flight = self._flights.get((cluster.id, app, cid))
            if flight is None:
                mine.append(cid)
            else:
                joined[flight] = None
        if mine:
            flight = asyncio.create_task(self._fly(cluster, app, mine, ttl_ms, min_cached_at),
                                         name=f"jobmon-appstatus-{cluster.id}")
            keys = [(cluster.id, app, cid) for cid in mine]
            for key in keys:
                self._flights[key] = flight
            self._flight_keys[flight] = keys
            flight.add_done_callback(self._landed)
            joined[flight] = None
        results: dict[str, Fetched] = {}
        for flight in joined:
            # shielded: a request that goes away must not cancel the fetch others wait for
            results.update(await asyncio.shield(flight))
        return results

    def _landed(self, flight: asyncio.Task) -> None:
        for key in self._flight_keys.pop(flight, []):
            if self._flights.get(key) is flight:
                del self._flights[key]
        if not flight.cancelled() and flight.exception() is not None:
            logger.error("app-status fetch failed", exc_info=flight.exception())

    async def _fly(self, cluster: Cluster, app: str, cids: list[str], ttl_ms: int,
                   min_cached_at: int) -> dict[str, Fetched]:
        """One flight: claim the keys, fetch what no other node is fetching, wait for the rest."""
        owner = str(uuid.uuid4())
        results: dict[str, Fetched] = {}
        todo = sorted(cids)  # one lock order for every node's claims and writes
        deadline = time.monotonic() + 2 * self.claim_ms / 1000
        while todo:
            claimed = await self._claim(cluster.id, app, todo, owner)
            try:
                if claimed:
                    mine = [cid for cid in todo if cid in claimed]
                    # another flight may have stored some of them between our read and our claim
                    results.update(await self._read_fresh(cluster.id, app, mine, min_cached_at))
                    need = [cid for cid in mine if cid not in results]
                    if need:
                        results.update(await self._from_upstream(cluster, app, need, ttl_ms))
            finally:
                if claimed:
                    await self._release(owner)
            others = [cid for cid in todo if cid not in claimed]
            todo = await self._await_other_nodes(cluster.id, app, others, min_cached_at, results,
                                                 deadline) if others else []
        return results

    async def _await_other_nodes(self, cluster_id: str, app: str, cids: list[str], min_cached_at: int,
                                 results: dict[str, Fetched], deadline: float) -> list[str]:
        """Wait for entries another node is fetching; return the CIDs to claim again."""
        pending = set(cids)
        while True:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            found = await self._read_fresh(cluster_id, app, sorted(pending), min_cached_at)
            results.update(found)
            pending.difference_update(found)
            if not pending:
                return []
            if len(await self._live_claims(cluster_id, app, sorted(pending))) < len(pending):
                return sorted(pending)  # a claim ended without an entry: try those ourselves
            if time.monotonic() > deadline:
                for cid in pending:
                    results[cid] = Fetched.failure("another server's fetch of this customer did not finish")
                return []

    async def _claim(self, cluster_id: str, app: str, cids: list[str], owner: str) -> set[str]:
        """Claim the keys nobody holds (or whose claim expired); return the CIDs claimed."""
        now = now_ms()
        rows = await self.db.fetch_all(sa.text(self._sql["claim"]).bindparams(
            cluster=cluster_id, app=app, items=orjson.dumps(cids).decode(), owner=owner,
            expires_at=now + self.claim_ms, now=now))
        return {row._mapping[0] for row in rows}

    async def _release(self, owner: str) -> None:
        claims = tables.appstatus_claims
        await self.db.execute(claims.delete().where(claims.c.owner == owner))

    async def _live_claims(self, cluster_id: str, app: str, cids: list[str]) -> set[str]:
        rows = await self._json_rows(self._sql["live_claims"], cluster=cluster_id, app=app,
                                     items=orjson.dumps(cids).decode(), now=now_ms())
        return {row[0] for row in rows}

    # -- upstream -----------------------------------------------------------------------------
    def _slot(self, cluster_id: str) -> asyncio.Semaphore:
        if cluster_id not in self._slots:
            self._slots[cluster_id] = asyncio.Semaphore(self.concurrency)
        return self._slots[cluster_id]

    async def _from_upstream(self, cluster: Cluster, app: str, cids: list[str], ttl_ms: int) -> dict[str, Fetched]:
        """Fetch in chunks under the cluster's concurrency bound; store each chunk as it lands."""
        results: dict[str, Fetched] = {}

        async def one_chunk(chunk: list[str]) -> None:
            fetched = await self._fetch_chunk(cluster, app, chunk, ttl_ms)
            await self._store(cluster.id, app, fetched)
            results.update(fetched)

        async with asyncio.TaskGroup() as group:
            for chunk in _chunks(cids, self.batch_size):
                group.create_task(one_chunk(chunk))
        return results

    async def _fetch_chunk(self, cluster: Cluster, app: str, chunk: list[str], ttl_ms: int) -> dict[str, Fetched]:
        slot = self._slot(cluster.id)
        if self._batch_missing_until.get(cluster.id, 0.0) <= time.monotonic():
            try:
                async with slot:
                    statuses = await self.client.appstatus_batch(cluster, chunk, app)
            except UpstreamError as exc:
                if exc.http_status in BATCH_MISSING_STATUSES:
                    self._batch_missing_until[cluster.id] = time.monotonic() + BATCH_MISSING_SECONDS
                    logger.warning("cluster %s has no app-status batch endpoint (%s); asking per CID "
                                   "for the next %s seconds", cluster.id, exc.message, BATCH_MISSING_SECONDS)
                else:
                    logger.warning("app-status batch call to cluster %s failed (%s); asking per CID",
                                   cluster.id, exc.message)
            else:
                received = now_ms()
                return {cid: _parse(statuses.get(cid), received, ttl_ms,
                                    "the cluster's batch answer did not include this customer")
                        for cid in chunk}

        async def one(cid: str) -> tuple[str, Fetched]:
            try:
                async with slot:
                    body = await self.client.appstatus_one(cluster, cid, app)
            except UpstreamError as exc:
                return cid, Fetched.failure(exc.message)
            return cid, _parse(body, now_ms(), ttl_ms, "the cluster answered without a status")

        return dict(await asyncio.gather(*(one(cid) for cid in chunk)))

    async def _store(self, cluster_id: str, app: str, fetched: dict[str, Fetched]) -> None:
        """Upsert the answers that carry a status; a failed CID keeps whatever entry it had."""
        rows = [[cid, f.status, f.detail, f.cached_at, f.expires_at]
                for cid, f in sorted(fetched.items()) if f.error is None]
        if rows:
            await self.db.execute(sa.text(self._sql["store"]).bindparams(
                cluster=cluster_id, app=app, items=orjson.dumps(rows).decode()))
            await self._bump(cluster_id, app)

    # -- counting and stats -------------------------------------------------------------------
    def _count(self, cluster_id: str, user_id: int, *, hits: int = 0, misses: int = 0,
               expired: int = 0, cleaned: int = 0) -> None:
        self.metrics.cache_lookups(cluster_id, hits, misses)
        counts = self._pending_counts.setdefault((cluster_id, user_id), [0, 0, 0, 0])
        for index, value in enumerate((hits, misses, expired, cleaned)):
            counts[index] += value

    async def flush_counts(self) -> None:
        """Add the counts gathered in memory to the database's counters."""
        pending, self._pending_counts = self._pending_counts, {}
        items = sorted(pending.items())  # one lock order on PostgreSQL
        for done, ((cluster_id, user_id), (hits, misses, expired, cleaned)) in enumerate(items):
            try:
                await self.db.execute(
                    "INSERT INTO cache_counters (cluster, user_id, hits, misses, expired, cleaned) "
                    "VALUES (:c, :u, :h, :m, :e, :x) ON CONFLICT (cluster, user_id) DO UPDATE SET "
                    "hits = cache_counters.hits + :h, misses = cache_counters.misses + :m, "
                    "expired = cache_counters.expired + :e, cleaned = cache_counters.cleaned + :x",
                    {"c": cluster_id, "u": user_id, "h": hits, "m": misses, "e": expired, "x": cleaned})
            except BaseException:
                # keep what was not written for the next flush
                for (cluster, user), (h, m, e, x) in items[done:]:
                    self._count(cluster, user, hits=h, misses=m, expired=e, cleaned=x)
                raise

    async def _flush_loop(self) -> None:
        await every(COUNTER_FLUSH_SECONDS, "writing app-status cache counts", self.flush_counts)

    async def stats(self, cluster_ids: list[str], user_id: int | None) -> dict:
        """Counters and entries per cluster: everyone's (user_id None) or one user's scope."""
        await self.flush_counts()
        k, c = tables.cache_counters, tables.appstatus_cache
        now = now_ms()
        counters = sa.select(k.c.cluster, sa.func.sum(k.c.hits), sa.func.sum(k.c.misses),
                             sa.func.sum(k.c.expired), sa.func.sum(k.c.cleaned)).group_by(k.c.cluster)
        stale = sa.func.count().filter(c.c.expires_at <= now)
        if user_id is None:
            entries = sa.select(c.c.cluster, sa.func.count(), stale).group_by(c.c.cluster)
        else:
            counters = counters.where(k.c.user_id == user_id)
            # the entries of the customers of this user's jobs, on each job's cluster
            j, jc = tables.jobs, tables.job_customers
            mine = (sa.select(j.c.cluster, jc.c.cid).select_from(jc.join(j, j.c.job_id == jc.c.job_id))
                    .where(j.c.user_id == user_id).distinct().subquery())
            entries = (sa.select(c.c.cluster, sa.func.count(), stale)
                       .select_from(c.join(mine, sa.and_(c.c.cluster == mine.c.cluster, c.c.cid == mine.c.cid)))
                       .group_by(c.c.cluster))
        clusters = {cid: {"entries": 0, "expired_entries": 0, "hits": 0, "misses": 0, "expired": 0}
                    for cid in cluster_ids}
        for row in await self.db.fetch_all(entries):
            cluster, total, stale_count = tuple(row._mapping)
            item = clusters.setdefault(cluster, {"entries": 0, "expired_entries": 0, "hits": 0,
                                                 "misses": 0, "expired": 0})
            item["entries"] = int(total) - int(stale_count or 0)
            item["expired_entries"] = int(stale_count or 0)
        for row in await self.db.fetch_all(counters):
            cluster, hits, misses, expired, cleaned = tuple(row._mapping)
            item = clusters.setdefault(cluster, {"entries": 0, "expired_entries": 0, "hits": 0,
                                                 "misses": 0, "expired": 0})
            item.update(hits=int(hits or 0), misses=int(misses or 0), expired=int(expired or 0))
            if user_id is None:
                item["cleaned"] = int(cleaned or 0)
        total = {"entries": 0, "expired_entries": 0, "hits": 0, "misses": 0, "expired": 0}
        for item in clusters.values():
            if user_id is None:
                item.setdefault("cleaned", 0)
            for key in total:
                total[key] += item[key]
            item["hit_rate"] = _rate(item["hits"], item["misses"])
        if user_id is None:
            total["cleaned"] = sum(item["cleaned"] for item in clusters.values())
        total["hit_rate"] = _rate(total["hits"], total["misses"])
        return {"clusters": clusters, "total": total, "as_of": iso(now)}

    # -- invalidation and cleanup ---------------------------------------------------------------
    async def invalidate(self, *, cluster_id: str | None = None, app: str | None = None,
                         job_id: str | None = None, cids: list[str] | None = None) -> int:
        """Delete the entries matching every filter given; return how many went."""
        c = tables.appstatus_cache
        where = []
        if cluster_id is not None:
            where.append(c.c.cluster == cluster_id)
        if app is not None:
            where.append(c.c.app == app)
        if job_id is not None:
            jc = tables.job_customers
            where.append(c.c.cid.in_(sa.select(jc.c.cid).where(jc.c.job_id == job_id)))
        deleted = 0
        for chunk in (_chunks(cids, ROWS_PER_STATEMENT) if cids is not None else [None]):
            clauses = where + ([c.c.cid.in_(chunk)] if chunk is not None else [])
            rows = await self.db.fetch_all(c.delete().where(*clauses).returning(c.c.cid))
            deleted += len(rows)
        if deleted:
            await self._bump(cluster_id, app)
        return deleted

    async def cleanup(self) -> dict[str, int]:
        """Delete expired entries (and claims of dead fetches); return the count per cluster."""
        c, claims = tables.appstatus_cache, tables.appstatus_claims
        now = now_ms()
        cleaned: dict[str, int] = {}
        while True:
            expired = (sa.select(c.c.cluster, c.c.cid, c.c.app).where(c.c.expires_at <= now)
                       .limit(CLEANUP_ROWS))
            rows = await self.db.fetch_all(
                c.delete().where(sa.tuple_(c.c.cluster, c.c.cid, c.c.app).in_(expired)).returning(c.c.cluster))
            for row in rows:
                cluster = row._mapping[0]
                cleaned[cluster] = cleaned.get(cluster, 0) + 1
            if len(rows) < CLEANUP_ROWS:
                break
        await self.db.execute(claims.delete().where(claims.c.expires_at < now))
        for cluster, count in cleaned.items():
            await self._bump(cluster)
            self._count(cluster, 0, cleaned=count)
        return cleaned

    async def _cleanup_loop(self) -> None:
        await every(self.cleanup_interval, "app-status cache cleanup", self._cleanup_logged)

    async def _cleanup_logged(self) -> None:
        cleaned = await self.cleanup()
        if cleaned:
            logger.info("app-status cache: removed %s expired entries", sum(cleaned.values()))


def _rate(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None

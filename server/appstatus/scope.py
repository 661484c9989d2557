"""A job's scope on its cluster: the states of exactly its customers, and their app status.

The cluster's customer list is global; `actions` walks its pages and keeps the job's CIDs, with
the job's own result beside each. `appstatus` reads the cache for the job's CIDs and pushes
`appstatus-update` to the job's room whenever it had to fetch. Watches keep a job's app status
fresh: while a watching socket is still in the job's room, the entries are fetched again as they
expire. A watch lives on the node its socket is connected to; the push reaches every node.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from server.appstatus.cache import AppStatusCache, Lookup
from server.errors import BadGateway, BadRequest, TooManyRequests
from server.jobs.store import JobStore, public_job
from server.realtime.emitter import Emitter, job_room
from server.timeutil import iso, now_ms
from server.upstream.client import TmsClient, UpstreamError
from server.upstream.clusters import ClusterRegistry

logger = logging.getLogger(__name__)

APP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TTL_SECONDS = 7 * 86_400
MAX_WATCHES = 1000  # watched (job, app) pairs per process: each costs a refresh per TTL
WATCH_TICK_SECONDS = 0.2
RETRY_FAILED_SECONDS = 30  # a watched job with failed CIDs is fetched again this soon at the latest
MIN_REFRESH_GAP_MS = 500  # never refresh one watch more often, whatever the entries say


def parse_app(raw: object) -> str:
    """An app name: 1-64 letters, digits, '.', '_' or '-'; 'ALL' when not given."""
    if raw is None or raw == "":
        return "ALL"
    if not isinstance(raw, str) or not APP_PATTERN.match(raw):
        raise BadRequest("'app' must be 1-64 letters, digits, '.', '_' or '-' (default ALL)",
                         code="validation_error", details={"field": "app"})
    return raw


def parse_ttl(raw: object, default: int) -> int:
    """A TTL in whole seconds from 1 to 7 days; a string of digits is accepted (query strings)."""
    if raw is None or raw == "":
        return default
    # a short string of digits only: int() of thousands of digits is slow, and refused past 4300
    if isinstance(raw, str) and len(raw) <= 12 and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_TTL_SECONDS:
        raise BadRequest(f"'ttl_seconds' must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}",
                         code="validation_error", details={"field": "ttl_seconds"})
    return raw


def _text(value: object, limit: int = 200) -> str | None:
    """An upstream string field, kept only if it is one."""
    return value[:limit] if isinstance(value, str) else None


@dataclass
class _Watch:
    """A job's app status kept fresh for the sockets watching it on this node."""

    job: dict
    app: str
    ttl_seconds: int
    sids: set[str] = field(default_factory=set)
    due_ms: int = 0  # refresh when the clock passes this (0: at the next tick)
    task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"_Watch({self.job['job_id']!r}, {self.app!r}, sids={len(self.sids)})"


class JobScope:
    """Customer states and app status for one job's customers, and the watches on them."""

    def __init__(self, jobs: JobStore, cache: AppStatusCache, clusters: ClusterRegistry, client: TmsClient,
                 emitter: Emitter, *, appstatus_ttl: int, states_max_pages: int):
        self.jobs = jobs
        self.cache = cache
        self.clusters = clusters
        self.client = client
        self.emitter = emitter
        self.appstatus_ttl = appstatus_ttl
        self.states_max_pages = states_max_pages
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._task: asyncio.Task | None = None
        # references to the running refreshes, so none is collected mid-way or outlives stop()
        self._refreshing: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_loop(), name="jobmon-appstatus-watch")

    async def stop(self) -> None:
        tasks = list(self._refreshing) + ([self._task] if self._task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()

    # -- customer states ----------------------------------------------------------------------
    async def customer_states(self, job: dict) -> dict:
        """The cluster's state of each of the job's customers (all pages), with the job's result."""
        cluster = self.clusters.get(job["cluster"])
        results = await self.jobs.customer_results(job["job_id"])
        wanted = {row[0] for row in results}
        found: dict[str, dict] = {}
        page: int | None = 1
        pages = 0
        while page is not None and len(found) < len(wanted):  # stop once every CID is seen
            if pages >= self.states_max_pages:
                raise BadGateway(f"Cluster '{cluster.id}' lists more than {pages} pages of customers; "
                                 "raise JOBMON_STATES_MAX_PAGES to read them all",
                                 details={"cluster": cluster.id, "pages_read": pages})
            try:
                customers, next_page = await self.client.customer_states_page(cluster, page)
            except UpstreamError as exc:
                raise BadGateway(exc.message, details={"cluster": cluster.id, "page": page,
                                                       "http_status": exc.http_status}) from None
            pages += 1
            for customer in customers:
                if customer["cid"] in wanted:
                    found.setdefault(customer["cid"], customer)
            page = next_page
        customers_out = []
        for cid, status, http_status, error_message, updated_at in results:
            upstream = found.get(cid)
            entry: dict[str, Any] = {"cid": cid, "known": upstream is not None}
            entry["state"] = _text(upstream.get("state")) if upstream else None
            entry["last_action"] = _text(upstream.get("last_action")) if upstream else None
            entry["updated_at"] = _text(upstream.get("updated_at"), 64) if upstream else None
            entry["job_result"] = {"status": status, "http_status": http_status,
                                   "error_message": error_message, "updated_at": iso(updated_at)}
            customers_out.append(entry)
        return {"job_id": job["job_id"], "cluster": cluster.id, "customer_count": len(results),
                "known": len(found), "unknown": len(results) - len(found), "pages_read": pages,
                "as_of": iso(now_ms()), "customers": customers_out}

    # -- app status ---------------------------------------------------------------------------
    async def appstatus(self, job: dict, app: str, ttl_seconds: int, skip_cache: bool) -> dict:
        """The app status of the job's customers; pushes `appstatus-update` when it fetched any."""
        lookup = await self._lookup(job, app, ttl_seconds, skip_cache)
        return {"job_id": job["job_id"], "cluster": job["cluster"], "app": app,
                "customer_count": lookup.count, "cache_hits": lookup.hits,
                "cache_misses": lookup.misses, "failed_cids": lookup.failed, "appstatus": lookup.statuses}

    async def _lookup(self, job: dict, app: str, ttl_seconds: int, skip_cache: bool) -> Lookup:
        # counted for the job's owner: a user's cache stats are those of their own jobs
        lookup = await self.cache.lookup_job(self.clusters.get(job["cluster"]), job["job_id"], app,
                                          ttl_seconds=ttl_seconds, skip_cache=skip_cache,
                                          user_id=job["user_id"])
        if lookup.misses:
            await self._push(job["job_id"], app, lookup)
        return lookup

    async def _push(self, job_id: str, app: str, lookup: Lookup) -> None:
        payload = {"job_id": job_id, "app": app, "statuses": lookup.statuses, "cache_hits": lookup.hits,
                   "cache_misses": lookup.misses, "failed_cids": lookup.failed}
        try:
            await self.emitter.emit("appstatus-update", payload, job_room(job_id))
        except Exception:  # the answer to the request matters more than the push
            logger.exception("could not push appstatus-update for job %s", job_id)

    # -- watches ------------------------------------------------------------------------------
    def watch_params(self, data: Any) -> tuple[str, int]:
        """(app, ttl_seconds) of a watch request; 400 for anything else."""
        data = data if isinstance(data, dict) else {}
        return parse_app(data.get("app")), parse_ttl(data.get("ttl_seconds"), self.appstatus_ttl)

    async def watch(self, sid: str, job_id: str, app: str, ttl_seconds: int) -> dict:
        """Keep this job's app status fresh while the socket stays in the job's room (the caller
        checked ownership and put the socket in the room)."""
        job = public_job(await self.jobs.get_row(job_id))
        key = (job_id, app)
        watch = self._watches.get(key)
        if watch is None:
            if len(self._watches) >= MAX_WATCHES:
                raise TooManyRequests(f"This server already keeps {MAX_WATCHES} jobs fresh; try later",
                                      retry_after=60)
            watch = self._watches[key] = _Watch(job, app, ttl_seconds)
        elif ttl_seconds < watch.ttl_seconds:
            watch.ttl_seconds = ttl_seconds
            watch.due_ms = 0
        watch.sids.add(sid)
        return {"ok": True, "job_id": job["job_id"], "app": app, "ttl_seconds": watch.ttl_seconds}

    def unwatch(self, sid: str, job_id: str, data: dict) -> dict:
        """Stop keeping a job's app status fresh for this socket (one app, or all of them)."""
        app = parse_app(data["app"]) if data.get("app") else None
        for (watched_job, watched_app), watch in list(self._watches.items()):
            if watched_job == job_id and (app is None or watched_app == app):
                watch.sids.discard(sid)
        return {"ok": True}

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_TICK_SECONDS)
            try:
                self._tick()
            except Exception:
                logger.exception("app-status watch tick failed")

    def _tick(self) -> None:
        now = now_ms()
        for key, watch in list(self._watches.items()):
            room = job_room(watch.job["job_id"])
            # a socket that unsubscribed or disconnected is no longer in the room
            watch.sids = {sid for sid in watch.sids if self.emitter.in_room(sid, room)}
            if not watch.sids:
                del self._watches[key]
                continue
            if watch.task is None and now >= watch.due_ms:
                watch.task = asyncio.create_task(self._refresh(watch), name="jobmon-appstatus-refresh")
                self._refreshing.add(watch.task)
                watch.task.add_done_callback(self._refreshing.discard)

    async def _refresh(self, watch: _Watch) -> None:
        try:
            lookup = await self._lookup(watch.job, watch.app, watch.ttl_seconds, skip_cache=False)
            now = now_ms()
            due = lookup.next_expiry if lookup.next_expiry is not None else now + watch.ttl_seconds * 1000
            if lookup.failed:
                due = min(due, now + min(watch.ttl_seconds, RETRY_FAILED_SECONDS) * 1000)
            watch.due_ms = max(due, now + MIN_REFRESH_GAP_MS)
        except Exception:
            watch.due_ms = now_ms() + RETRY_FAILED_SECONDS * 1000
            logger.exception("refreshing the app status of job %s failed; trying again in %s seconds.",
                             watch.job["job_id"], RETRY_FAILED_SECONDS)
        finally:
            watch.task = None

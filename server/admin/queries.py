"""Admin queries over every user's jobs: the filtered, sorted, keyset-paged list, job details,
per-customer results, the audit log and the users.

The list stays fast at millions of jobs because every page is read along an index, in order:
each sort key is indexed alone, after `status` and after `user_id` (db.py). A status filter
becomes one ordered walk per status, merged (UNION ALL, each arm LIMITed). When several indexes
could serve a page, `planner.plan_arm` picks one from exact counts (`job_counts`) and a uniform-in-time
estimate for date ranges, and switches the others off by wrapping their column (`col + 0`),
which both SQLite and PostgreSQL then cannot match to an index.

Free text matches a job id prefix (4+ hex characters), a CID exactly (both through indexes) or
a substring of the error message among the newest ERROR_SEARCH_WINDOW jobs that have one (a
bound: error messages have no index). Cursors are signed, so a changed one is a 400.
"""

from __future__ import annotations

import re

import orjson
import sqlalchemy as sa

from server.accounts.store import Accounts
from server.admin.planner import Counts, JobFilter, Plan, SortKey, plan_arm
from server.db import Db
from server.db import schema as tables
from server.errors import BadRequest, NotFound
from server.jobs.cursors import CursorCodec
from server.jobs.store import FINAL_STATUSES, JobStatus, parse_job_id, public_job
from server.parsing import is_int as _is_int
from server.parsing import like_escape as _like_escape
from server.stats.counts import status_counts, status_counts_by_user
from server.timeutil import iso, now_ms

MAX_LIMIT = 500
ERROR_SEARCH_WINDOW = 5_000
JOB_ID_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
FULL_JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class AdminQueries:
    """Read-only queries of the admin pages."""

    def __init__(self, db: Db, accounts: Accounts, cursors: CursorCodec):
        self.db = db
        self.accounts = accounts
        self.cursors = cursors

    # -- the job list ----------------------------------------------------------------------
    async def list_jobs(self, f: JobFilter, sort: SortKey, descending: bool, cursor: str | None,
                        limit: int) -> dict:
        """One page of jobs in a stable order, with the owner's username, and the next cursor."""
        position = self._decode_position(cursor, sort, descending) if cursor else None
        rows, more = await self._page(f, sort, descending, position, limit)
        jobs = await self._load(rows)
        next_cursor = self._encode_position(rows[-1], sort, descending) if more and rows else None
        page = {"jobs": jobs, "next_cursor": next_cursor, "sort": sort.name,
                "order": "desc" if descending else "asc", "limit": limit}
        if f.text is not None:
            # error messages have no index: say how far back the text was looked for in them
            page["error_search_window"] = ERROR_SEARCH_WINDOW
        return page

    async def iter_jobs(self, f: JobFilter, sort: SortKey, descending: bool, page_size: int = 1000):
        """Every job of the filtered list in order, page by page (for the CSV export)."""
        position = None
        while True:
            rows, more = await self._page(f, sort, descending, position, page_size)
            if rows:
                yield await self._load(rows)
            if not more or not rows:
                return
            position = self._position_of(rows[-1], sort)

    def _position_of(self, row, sort: SortKey) -> tuple[int, list]:
        if sort.nullable and row[sort.columns[0]] is None:
            return 1, [row["job_id"]]
        return 0, [row[c] for c in sort.columns]

    def _encode_position(self, row, sort: SortKey, descending: bool) -> str:
        phase, values = self._position_of(row, sort)
        return self.cursors.encode("jobs", sort.name, "desc" if descending else "asc", phase, values)

    def _decode_position(self, cursor: str, sort: SortKey, descending: bool) -> tuple[int, list]:
        parts = self.cursors.decode(cursor, "jobs")
        if len(parts) != 4 or parts[0] != sort.name or parts[1] != ("desc" if descending else "asc"):
            raise BadRequest("This 'cursor' belongs to another sort or order: start again without it",
                             code="validation_error", details={"field": "cursor"})
        phase, values = parts[2], parts[3]
        expected = 1 if phase == 1 else len(sort.columns)
        if phase not in (0, 1) or not isinstance(values, list) or len(values) != expected:
            raise BadRequest("Malformed 'cursor'", code="validation_error", details={"field": "cursor"})
        return phase, values

    async def _page(self, f: JobFilter, sort: SortKey, descending: bool, position, limit: int):
        """(rows, more): up to `limit` rows after `position`, and whether any follow."""
        want = limit + 1
        # only a filter gives a choice of index; the plain list just walks its sort key
        counts = await self._counts(f) if (f.statuses or f.user_id is not None or f.date_ranges()) else None
        rows: list = []
        phase = position[0] if position else 0
        if phase == 0:
            rows = await self._fetch(f, sort, descending, False, position[1] if position else None, want, counts)
        if sort.nullable and len(rows) < want:
            after = position[1] if position and phase == 1 else None
            rows += await self._fetch(f, sort, descending, True, after, want - len(rows), counts)
        return rows[:limit], len(rows) > limit

    async def _counts(self, f: JobFilter) -> Counts:
        by_status = await status_counts(self.db)
        by_user = await status_counts(self.db, f.user_id) if f.user_id is not None else None
        counts = Counts(by_status, by_user, now=now_ms())
        j = tables.jobs
        for column in f.date_ranges():
            counts.oldest[column] = await self.db.fetch_val(sa.select(sa.func.min(j.c[column]))) or counts.now
        return counts

    async def _fetch(self, f: JobFilter, sort: SortKey, descending: bool, nulls: bool, after, want: int,
                     counts: Counts | None) -> list[dict]:
        """The sort keys (and job_id) of up to `want` matching jobs after `after`, in order."""
        j = tables.jobs
        order_columns = ("job_id",) if nulls else sort.columns
        statuses = list(dict.fromkeys(f.statuses))
        arms: list[str | None] = statuses if statuses and f.text is None else [None]
        selects = []
        for status in arms:
            if status is not None and counts is not None and self._arm_count(status, counts) == 0:
                continue  # exact counts say nothing matches: skip a walk that would find nothing
            # unfinished jobs (the NULL part of a nullable order) are few: any index serves
            plan = plan_arm(f, sort, descending, status, want, counts) if not nulls else Plan(frozenset(), "nulls")
            cols = {name: _hidden(j.c[name]) if name in plan.hide else j.c[name] for name in j.c.keys()}
            conditions = self._conditions(f, cols, status if f.text is None else None)
            if f.text is not None and statuses:
                conditions.append(cols["status"].in_(statuses))
            first = sort.columns[0]
            if sort.nullable:
                conditions.append(j.c[first].is_(None) if nulls else cols[first].isnot(None))
            keyset = _keyset([cols[c] for c in order_columns], order_columns, after, descending, status)
            if keyset is False:
                continue
            if keyset is not None:
                conditions.append(keyset)
            order = [cols[c].desc() if descending else cols[c].asc() for c in order_columns]
            # keys only: narrow rows merge and sort cheaply, and often come from the index alone
            keys = [j.c[c] for c in dict.fromkeys(("job_id", *sort.columns))]
            selects.append(sa.select(*keys).where(*conditions).order_by(*order).limit(want))
        if not selects:
            return []
        if len(selects) == 1:
            return await self.db.fetch_dicts(selects[0])
        union = sa.union_all(*[sa.select(s.subquery()) for s in selects]).subquery()
        order = [union.c[c].desc() if descending else union.c[c].asc() for c in order_columns]
        return await self.db.fetch_dicts(sa.select(union).order_by(*order).limit(want))

    @staticmethod
    def _arm_count(status: str, counts: Counts) -> int:
        source = counts.by_user_status if counts.by_user_status is not None else counts.by_status
        return source.get(status, 0)

    def _conditions(self, f: JobFilter, cols: dict, status: str | None) -> list:
        conditions = []
        if status is not None:
            conditions.append(cols["status"] == status)
        if f.user_id is not None:
            conditions.append(cols["user_id"] == f.user_id)
        if f.action is not None:
            conditions.append(cols["action_name"] == f.action)
        if f.cluster is not None:
            conditions.append(cols["cluster"] == f.cluster)
        for column, (low, high) in f.date_ranges().items():
            if low is not None:
                conditions.append(cols[column] >= low)
            if high is not None:
                conditions.append(cols[column] <= high)
        if f.text is not None:
            conditions.append(tables.jobs.c.job_id.in_(self._text_matches(f)))
        return conditions

    def _text_matches(self, f: JobFilter):
        """The ids of jobs whose id starts with, whose customers include, or whose error contains `text`."""
        j, c = tables.jobs, tables.job_customers
        text = f.text
        arms = [sa.select(c.c.job_id).where(c.c.cid == text)]
        lowered = text.lower()
        if FULL_JOB_ID.match(lowered):
            arms.append(sa.select(j.c.job_id).where(j.c.job_id == lowered))
        elif JOB_ID_PREFIX.match(lowered):
            # every UUID has '-' at the same places, so a trailing '-' adds nothing to a prefix
            prefix = lowered.rstrip("-")
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            # the range uses the primary key; LIKE keeps the match exact under any collation
            arms.append(sa.select(j.c.job_id).where(j.c.job_id >= prefix, j.c.job_id < upper,
                                                    j.c.job_id.like(_like_escape(prefix) + "%", escape="\\")))
        window = sa.select(j.c.job_id, j.c.error_message).where(j.c.error_message.isnot(None))
        if f.created_from is not None:
            window = window.where(j.c.created_at >= f.created_from)
        if f.created_to is not None:
            window = window.where(j.c.created_at <= f.created_to)
        window = window.order_by(j.c.created_at.desc()).limit(ERROR_SEARCH_WINDOW).subquery()
        arms.append(sa.select(window.c.job_id).where(
            sa.func.lower(window.c.error_message).like("%" + _like_escape(text.lower()) + "%", escape="\\")))
        return sa.union(*arms)

    async def _load(self, keys: list[dict]) -> list[dict]:
        """The jobs of a page (in its order), each with its owner's username."""
        j = tables.jobs
        rows = await self.db.fetch_dicts(sa.select(j).where(j.c.job_id.in_([k["job_id"] for k in keys])))
        by_id = {row["job_id"]: row for row in rows}
        names = await self.accounts.usernames({row["user_id"] for row in rows})
        jobs = []
        for key in keys:
            row = by_id[key["job_id"]]
            job = public_job(row)
            job["username"] = names.get(row["user_id"])
            jobs.append(job)
        return jobs

    # -- one job -------------------------------------------------------------------------------
    async def job_detail(self, raw_job_id: str, events_limit: int = 200) -> dict:
        """A job with its owner, processing time, attempts, retries, customer outcomes and events."""
        j, e, c = tables.jobs, tables.job_events, tables.job_customers
        job_id = parse_job_id(raw_job_id)
        row = await self.db.fetch_one(sa.select(j).where(j.c.job_id == job_id))
        if row is None:
            raise NotFound("No such job")
        owner = await self.accounts.user(row.user_id)  # {id, username, role} or None
        now = now_ms()
        final = JobStatus(row.status) in FINAL_STATUSES
        processing = row.duration_ms if final else (now - row.started_at if row.started_at else None)
        outcome_rows = await self.db.fetch_all(
            sa.select(c.c.status, sa.func.count().label("n")).where(c.c.job_id == job_id).group_by(c.c.status))
        outcomes = {r.status: int(r.n) for r in outcome_rows}
        event_count = await self.db.fetch_val(sa.select(sa.func.count()).select_from(e).where(e.c.job_id == job_id))
        newest = (sa.select(e.c.id, e.c.event_id, e.c.kind, e.c.payload, e.c.created_at)
                  .where(e.c.job_id == job_id).order_by(e.c.id.desc()).limit(events_limit))
        events = []
        for ev in reversed(await self.db.fetch_all(newest)):
            snapshot = orjson.loads(ev.payload)
            events.append({"event_id": ev.event_id, "kind": ev.kind, "at": iso(ev.created_at),
                           "status": snapshot.get("status"), "done": snapshot.get("done"),
                           "failed": snapshot.get("failed")})
        retries = await self.db.fetch_all(sa.select(j.c.job_id, j.c.status, j.c.created_at)
                                          .where(j.c.parent_job_id == job_id).order_by(j.c.created_at))
        job = public_job(row)
        job["username"] = owner["username"] if owner else None
        return {
            "job": job,
            "owner": owner,
            "processing_ms": processing,
            "finished": final,
            "queued_ms": (row.started_at - row.created_at) if row.started_at else None,
            "attempts": row.attempts,
            "customers": {"count": row.customer_count, "by_outcome": outcomes,
                          # retention removed the per-customer rows of this old finished job
                          "pruned": bool(row.customer_count) and not outcomes},
            "retries": [{"job_id": r.job_id, "status": r.status, "created_at": iso(r.created_at)} for r in retries],
            "event_count": int(event_count),
            "events": events,
            "events_truncated": int(event_count) > len(events),
        }

    async def job_results(self, raw_job_id: str, outcome: str | None, cursor: str | None, limit: int) -> dict:
        """Per-customer outcomes of a job in customer order, optionally of one outcome only."""
        j, c = tables.jobs, tables.job_customers
        job_id = parse_job_id(raw_job_id)
        job = await self.db.fetch_one(sa.select(j.c.job_id, j.c.customer_count).where(j.c.job_id == job_id))
        if job is None:
            raise NotFound("No such job")
        after = -1
        if cursor:
            parts = self.cursors.decode(cursor, "results")
            if len(parts) != 3 or parts[0] != job_id or parts[1] != outcome or not _is_int(parts[2]):
                raise BadRequest("This 'cursor' belongs to another job or outcome filter", code="validation_error",
                                 details={"field": "cursor"})
            after = parts[2]
        query = sa.select(c.c.seq, c.c.cid, c.c.status, c.c.http_status, c.c.error_message, c.c.updated_at).where(
            c.c.job_id == job_id, c.c.seq > after)
        if outcome is not None:
            query = query.where(c.c.status == outcome)
        rows = await self.db.fetch_all(query.order_by(c.c.seq).limit(limit + 1))
        page = rows[:limit]
        result = {
            "job_id": job_id,
            "customer_count": job.customer_count,
            "results": [{"seq": r.seq, "cid": r.cid, "outcome": r.status, "http_status": r.http_status,
                         "error_message": r.error_message, "updated_at": iso(r.updated_at)} for r in page],
            "next_cursor": (self.cursors.encode("results", job_id, outcome, page[-1].seq)
                            if len(rows) > limit else None),
        }
        if not cursor:
            counts = await self.db.fetch_all(sa.select(c.c.status, sa.func.count().label("n"))
                                             .where(c.c.job_id == job_id).group_by(c.c.status))
            result["by_outcome"] = {r.status: int(r.n) for r in counts}
            result["pruned"] = bool(job.customer_count) and not counts
        return result

    # -- users -------------------------------------------------------------------------------
    async def users(self) -> list[dict]:
        """Every user with their role and job counts by status."""
        counts = await status_counts_by_user(self.db)
        return [{**user, "jobs": {s.value: counts.get(user["id"], {}).get(s.value, 0) for s in JobStatus},
                 "job_total": sum(counts.get(user["id"], {}).values())} for user in await self.accounts.list_users()]

    async def resolve_user(self, raw: str) -> tuple[int, str] | None:
        """(id, username) of a user named by id or username, or None when there is no such user."""
        user = await self.accounts.find_user(raw)
        return (user["id"], user["username"]) if user else None


def _hidden(column):
    """The same value, in a form no index matches (forces the plan chosen by `planner.plan_arm`)."""
    if isinstance(column.type, sa.String):
        return column.concat("")
    return column + 0


def _keyset(columns: list, names: tuple[str, ...], after, descending: bool, arm_status: str | None):
    """The condition for rows after `after` in this order; None for none, False if the arm is past it."""
    if after is None:
        return None
    values = list(after)
    if arm_status is not None and names[0] == "status":
        # inside one status's arm the status is fixed: compare it here, the rest in SQL
        if arm_status == values[0]:
            columns, values = columns[1:], values[1:]
        elif (arm_status < values[0]) == descending:
            return None  # the whole arm comes after the cursor
        else:
            return False  # the whole arm came before it
    left, right = sa.tuple_(*columns), sa.tuple_(*[sa.literal(v) for v in values])
    return left < right if descending else left > right

"""Admin routes: every user's jobs (list, CSV, stats, details, results), the audit log, users
and the retention policy. Every route answers 403 to anyone but an admin acting as admin (a
session, or an admin-scoped token), before it looks at a single parameter.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from server.admin.planner import SORTS, JobFilter
from server.admin.queries import MAX_LIMIT, AdminQueries
from server.api import models
from server.api.common import (
    OrjsonResponse,
    client_ip,
    only_params,
    query_int,
    query_text,
    services,
)
from server.api.spec import ADMIN, json_body, operation
from server.errors import AppError, BadRequest
from server.jobs.catalogue import resolve_action
from server.jobs.store import CustomerStatus, JobStatus
from server.parsing import parse_status_list
from server.stats.aggregates import MAX_WINDOW_DAYS, verify_aggregates
from server.timeutil import parse_iso

LIST_PARAMS = {"status", "user", "action", "cluster", "text", "q", "created_from", "created_to",
               "finished_from", "finished_to", "sort", "order", "cursor", "limit", "format"}
CLUSTER_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KIND_TEXT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CSV_COLUMNS = ("job_id", "username", "user_id", "action_name", "action_code", "cluster", "status",
               "customer_count", "done", "failed", "http_status", "error_message", "created_at", "started_at",
               "updated_at", "finished_at", "duration_ms", "attempts", "batch_id", "parent_job_id")


async def _admin(request: Request) -> AdminQueries:
    s = services(request)
    await s.auth.require_admin(request)
    return s.admin


def _bad(name: str, message: str, **details) -> BadRequest:
    return BadRequest(message, code="validation_error", details={"field": name, **details})


def _date(request: Request, name: str, end_of_day: bool = False) -> int | None:
    """An ISO 8601 date or date-time as epoch ms; a bare date as a `_to` bound means its last ms."""
    raw = query_text(request, name, 40)
    if raw is None:
        return None
    try:
        value = parse_iso(raw)
    except (ValueError, OverflowError, OSError):
        raise _bad(name, f"'{name}' is not an ISO 8601 date or date-time (like 2026-03-01 or "
                   "2026-03-01T12:00:00Z)") from None
    if end_of_day and DATE_ONLY.match(raw):
        value += 86_400_000 - 1
    return value


def _range(request: Request, prefix: str) -> tuple[int | None, int | None]:
    low = _date(request, f"{prefix}_from")
    high = _date(request, f"{prefix}_to", end_of_day=True)
    if low is not None and high is not None and low > high:
        raise _bad(f"{prefix}_to", f"'{prefix}_to' is before '{prefix}_from'")
    return low, high


def _statuses(raw: str | None, valid: list[str], name: str) -> tuple[str, ...]:
    return parse_status_list(raw, valid, name)


async def _user(request: Request, admin: AdminQueries, name: str = "user") -> tuple[int, str] | None:
    raw = query_text(request, name, 64)
    if raw is None:
        return None
    user = await admin.resolve_user(raw)
    if user is None:
        raise _bad(name, f"No user {raw!r} (give a user id or a username)")
    return user


async def _job_filter(request: Request, admin: AdminQueries) -> JobFilter:
    action = query_text(request, "action", 64)
    if action is not None:
        try:
            action = resolve_action(action).name
        except AppError as exc:
            raise _bad("action", exc.message, valid=exc.details.get("valid_actions")) from None
    cluster = query_text(request, "cluster", 64)
    if cluster is not None and not CLUSTER_TEXT.match(cluster):
        raise _bad("cluster", "'cluster' must be a cluster id (letters, digits, '_', '.', '-')")
    text = query_text(request, "text", 200) or query_text(request, "q", 200)
    user = await _user(request, admin)
    created_from, created_to = _range(request, "created")
    finished_from, finished_to = _range(request, "finished")
    return JobFilter(
        statuses=_statuses(query_text(request, "status", 200), [s.value for s in JobStatus], "status"),
        user_id=user[0] if user else None, action=action, cluster=cluster, text=text,
        created_from=created_from, created_to=created_to, finished_from=finished_from, finished_to=finished_to)


def _sort(request: Request):
    name = query_text(request, "sort", 40) or "created_at"
    sort = SORTS.get("duration" if name == "duration_ms" else name)
    if sort is None:
        raise _bad("sort", f"Unknown sort {name!r}; valid: " + ", ".join(SORTS), valid=list(SORTS))
    order = (query_text(request, "order", 10) or "desc").lower()
    if order not in ("asc", "desc"):
        raise _bad("order", "'order' must be asc or desc")
    return sort, order == "desc"


@operation(auth=ADMIN, query=models.AdminJobsQuery, responses={200: (models.AdminJobPage, "text/csv")})
async def list_jobs(request: Request) -> OrjsonResponse | StreamingResponse:
    """Every user's jobs: filtered, sorted, one keyset page at a time (or all of them as CSV)."""
    admin = await _admin(request)
    only_params(request, LIST_PARAMS)
    fmt = (query_text(request, "format", 10) or "json").lower()
    if fmt not in ("json", "csv"):
        raise _bad("format", "'format' must be json or csv")
    if fmt == "csv":
        return await _csv(request, admin)
    f = await _job_filter(request, admin)
    sort, descending = _sort(request)
    limit = query_int(request, "limit", 50, 1, MAX_LIMIT)
    page = await admin.list_jobs(f, sort, descending, query_text(request, "cursor", 2000), limit)
    return OrjsonResponse(page)


@operation(auth=ADMIN, query=models.AdminCsvQuery, responses={200: "text/csv"})
async def export_csv(request: Request) -> StreamingResponse:
    """The same filtered, sorted list as CSV, every page of it, streamed."""
    admin = await _admin(request)
    only_params(request, LIST_PARAMS - {"cursor", "limit"})
    return await _csv(request, admin)


async def _csv(request: Request, admin: AdminQueries) -> StreamingResponse:
    if request.query_params.get("cursor") or request.query_params.get("limit"):
        raise _bad("cursor", "The CSV export has every matching job: drop 'cursor' and 'limit'")
    f = await _job_filter(request, admin)
    sort, descending = _sort(request)

    async def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        async for page in admin.iter_jobs(f, sort, descending):
            buffer.seek(0)
            buffer.truncate()
            for job in page:
                writer.writerow([_cell(job.get(column)) for column in CSV_COLUMNS])
            yield buffer.getvalue()

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="jobs-{stamp}.csv"', "Cache-Control": "no-store"})


def _cell(value) -> object:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @ would make it a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@operation(auth=ADMIN, query=models.StatsQuery, responses={200: models.AdminStats})
async def job_stats(request: Request) -> OrjsonResponse:
    """All users' job figures, from the aggregates (never a scan of the jobs)."""
    await _admin(request)
    only_params(request, {"days"})
    days = query_int(request, "days", 7, 1, MAX_WINDOW_DAYS)
    return OrjsonResponse(await services(request).admin_stats.figures(days))


@operation(auth=ADMIN, query=models.NoQuery, responses={200: models.Verification})
async def verify_stats(request: Request) -> OrjsonResponse:
    """Recount the aggregates from the jobs table and list any difference (slow: a full scan)."""
    admin = await _admin(request)
    only_params(request, set())
    return OrjsonResponse(await verify_aggregates(admin.db))


@operation(auth=ADMIN, query=models.JobDetailQuery, responses={200: models.AdminJobDetail})
async def job_detail(request: Request) -> OrjsonResponse:
    """One job of any user, with its owner, processing time, attempts and event history."""
    admin = await _admin(request)
    only_params(request, {"events_limit"})
    limit = query_int(request, "events_limit", 200, 1, 1000)
    return OrjsonResponse(await admin.job_detail(request.path_params["job_id"], limit))


@operation(auth=ADMIN, query=models.ResultsQuery, responses={200: models.Results})
async def job_results(request: Request) -> OrjsonResponse:
    """A job's per-customer outcomes, in order, a page at a time, optionally of one outcome."""
    admin = await _admin(request)
    only_params(request, {"outcome", "cursor", "limit"})
    outcomes = _statuses(query_text(request, "outcome", 20), [c.value for c in CustomerStatus], "outcome")
    if len(outcomes) > 1:
        raise _bad("outcome", "Give one outcome")
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    return OrjsonResponse(await admin.job_results(request.path_params["job_id"], outcomes[0] if outcomes else None,
                                                query_text(request, "cursor", 2000), limit))


@operation(auth=ADMIN, query=models.AuditQuery, responses={200: models.AuditPage})
async def audit(request: Request) -> OrjsonResponse:
    """Who did what and when, newest first, filtered by user, kind and time."""
    admin = await _admin(request)
    only_params(request, {"user", "kind", "from", "to", "cursor", "limit"})
    raw_user = query_text(request, "user", 64)
    username = None
    if raw_user is not None:
        user = await admin.resolve_user(raw_user)
        if user is None and raw_user.isdigit():
            raise _bad("user", f"No user with id {raw_user}")
        # a name that is no user still has entries: the failed logins that tried it
        username = user[1] if user else raw_user
    kinds = tuple(dict.fromkeys(k.strip() for k in (query_text(request, "kind", 400) or "").split(",") if k.strip()))
    for kind in kinds:
        if not KIND_TEXT.match(kind):
            raise _bad("kind", f"Malformed kind {kind[:40]!r}: lower-case letters, digits and '_'")
    if len(kinds) > 20:
        raise _bad("kind", "At most 20 kinds")
    low = _date(request, "from")
    high = _date(request, "to", end_of_day=True)
    if low is not None and high is not None and low > high:
        raise _bad("to", "'to' is before 'from'")
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    return OrjsonResponse(await services(request).audit.entries(
        username=username, kinds=kinds, at_from=low, at_to=high, cursor=query_text(request, "cursor", 2000),
        limit=limit))


@operation(auth=ADMIN, query=models.NoQuery, responses={200: models.UserList})
async def list_users(request: Request) -> OrjsonResponse:
    """Every user, with role and job counts."""
    admin = await _admin(request)
    only_params(request, set())
    return OrjsonResponse({"users": await admin.users()})


@operation(auth=ADMIN, query=models.NoQuery, body=models.NewUser, responses={201: models.CreatedUser}, errors=(409,))
async def create_user(request: Request) -> OrjsonResponse:
    """Create a user (or another admin)."""
    s = services(request)
    principal = await s.auth.require_admin(request)
    only_params(request, set())
    body = await json_body(request, models.NewUser, 8 * 1024)
    user = await s.accounts.create_user(body.username, body.password, body.role)
    await s.audit.record("user_created", user_id=principal.user_id, username=principal.username,
                         subject=user["username"], detail={"id": user["id"], "role": user["role"]},
                         ip=client_ip(request))
    return OrjsonResponse({"user": user}, status_code=201)


@operation(auth=ADMIN, query=models.NoQuery, responses={200: models.RetentionAnswer})
async def retention(request: Request) -> OrjsonResponse:
    """The retention policy and what this node's last pruning run removed."""
    s = services(request)
    await s.auth.require_admin(request)
    only_params(request, set())
    return OrjsonResponse({"retention": s.retention.status()})


def routes() -> list[Route]:
    return [
        Route("/admin/jobs", list_jobs, methods=["GET"]),
        Route("/admin/jobs.csv", export_csv, methods=["GET"]),
        # before /admin/jobs/{job_id}, which would take "stats" for a job id
        Route("/admin/jobs/stats", job_stats, methods=["GET"]),
        Route("/admin/jobs/stats/verify", verify_stats, methods=["GET"]),
        Route("/admin/jobs/{job_id}", job_detail, methods=["GET"]),
        Route("/admin/jobs/{job_id}/results", job_results, methods=["GET"]),
        Route("/admin/audit", audit, methods=["GET"]),
        Route("/admin/users", list_users, methods=["GET"]),
        Route("/admin/users", create_user, methods=["POST"]),
        Route("/admin/retention", retention, methods=["GET"]),
    ]

"""The typed requests and answers of the HTTP API (Set Actions, jobs, scope, auth, admin, ops).

Request bodies are strict, and refuse unknown fields, like the CI/CD agent bodies of
`server.pipelines.models`; query models convert the query string's text. Answer models describe
what a client gets (they are not used to build answers: the stores shape them), and leave room for
fields added later (no `additionalProperties: false`), so an older client keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from server.admin.planner import SORTS
from server.admin.queries import MAX_LIMIT
from server.api.spec import OpenQuery, Query, Whole
from server.jobs.store import CustomerStatus, JobStatus
from server.pipelines.models import Body, Line
from server.stats.aggregates import MAX_WINDOW_DAYS

Time = Annotated[str | None, Field(description="ISO 8601 UTC with a Z, or null")]
Cid = Annotated[str, Field(pattern=r"^\s*[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\s*$", description="a customer ID")]
ScopeName = Literal["read", "agent", "write", "admin"]
JobStatusName = Literal["QUEUED", "IN_PROGRESS", "SUCCESS", "FAILED", "PARTIAL", "CANCELLED"]
StatusList = Annotated[str, Field(max_length=200, description="one status or several, comma-separated")]
Cursor = Annotated[str, Field(max_length=500, description="`next_cursor` of the page before")]
UpstreamToken = Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,4096}$",
                                     description="your own bearer token for the cluster: forwarded, never stored")]


# -- jobs ---------------------------------------------------------------------------------------
class Job(BaseModel):
    """A Set Action job as clients get it (REST answers, `job-update`)."""

    job_id: str
    user_id: int
    action_name: str
    action_code: int
    cluster: str
    status: JobStatus
    customer_count: int
    done: int
    failed: int
    http_status: int | None
    error_message: str | None
    created_at: Time
    started_at: Time
    updated_at: Time
    finished_at: Time
    duration_ms: int | None
    batch_id: str | None
    parent_job_id: str | None
    idempotency_key: str | None
    cancel_requested: bool
    attempts: int


class NewSetAction(Body):
    """POST /api/set-actions as JSON."""

    cluster: Annotated[str, Field(description="a cluster id from GET /api/clusters")]
    action: Annotated[str | int, Field(description="an action name or alias (any case), or its code")]
    cids: Annotated[list[Any] | str, Field(description="customer IDs: a list, or one string (one per line or "
                                                       "comma-separated); duplicates are dropped")]
    upstream_token: UpstreamToken | None = None


class SetActionUpload(BaseModel):
    """POST /api/set-actions as a form: a CSV `file` (or `cids` as text) and the other fields."""

    cluster: str
    action: str
    file: Annotated[bytes | None, Field(description="CSV: the column headed cid, customer_id, ... else the first")] = None
    cids: str | None = None
    upstream_token: UpstreamToken | None = None


class SetActionAnswer(BaseModel):
    job: Job
    idempotent_replay: bool


class JobAnswer(BaseModel):
    job: Job


class CustomerGroup(BaseModel):
    status: CustomerStatus
    http_status: int | None
    count: int
    example_error: str | None


class JobDetail(BaseModel):
    job: Job
    customer_summary: list[CustomerGroup]


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class Customer(BaseModel):
    cid: str
    status: CustomerStatus
    http_status: int | None
    error_message: str | None
    updated_at: Time


class CustomerPage(BaseModel):
    job_id: str
    customers: list[Customer]
    next_cursor: str | None


class RetryBody(Body):
    """POST /api/jobs/{job_id}/retry (optional)."""

    include_skipped: bool = False
    upstream_token: UpstreamToken | None = None


class MyJobsQuery(OpenQuery):
    status: StatusList | None = None
    action: Annotated[str, Field(max_length=64)] | None = None
    cluster: Annotated[str, Field(max_length=64)] | None = None
    q: Annotated[str, Field(max_length=100, description="a job id prefix or an exact CID")] | None = None
    text: Annotated[str, Field(max_length=100, description="the same as q")] | None = None
    cursor: Cursor | None = None
    limit: Whole(1, 200) = 50


class CustomersQuery(OpenQuery):
    status: Annotated[str, Field(max_length=16, description="one customer status")] | None = None
    cursor: Annotated[str, Field(max_length=200)] | None = None
    limit: Whole(1, 5000) = 500


class ClusterInfo(BaseModel):
    id: str
    name: str


class ActionInfo(BaseModel):
    name: str
    code: int
    aliases: list[str]


class Clusters(BaseModel):
    clusters: list[ClusterInfo]
    actions: list[ActionInfo]


class Today(BaseModel):
    total: int
    success: int
    failed: int


class UserDay(BaseModel):
    day: str
    created: int
    success: int
    failed: int
    partial: int
    cancelled: int
    avg_duration_ms: int | None


class MyStats(BaseModel):
    """The `job-stats` payload, with the last 7 days."""

    user_id: int | None
    counts: dict[str, int]
    today: Today
    running: int
    success_rate: float | None
    avg_duration_ms: int | None
    as_of: str
    daily: list[UserDay]


# -- scope --------------------------------------------------------------------------------------
class JobResult(BaseModel):
    status: CustomerStatus
    http_status: int | None
    error_message: str | None
    updated_at: Time


class CustomerState(BaseModel):
    cid: str
    known: bool
    state: str | None
    last_action: str | None
    updated_at: str | None
    job_result: JobResult


class CustomerStates(BaseModel):
    job_id: str
    cluster: str
    customer_count: int
    known: int
    unknown: int
    pages_read: int
    as_of: str
    customers: list[CustomerState]


class AppStatusEntry(BaseModel):
    app: str
    status: Literal["healthy", "warning", "error", "unknown"] | None
    detail: str | None = None
    from_cache: bool
    cached_at: Time
    error: str | None = None


class AppStatus(BaseModel):
    job_id: str
    cluster: str
    app: str
    customer_count: int
    cache_hits: int
    cache_misses: int
    failed_cids: list[str]
    appstatus: dict[str, AppStatusEntry]


TtlSeconds = Whole(1, 7 * 86_400, description="how fresh a cached status must be")


class AppStatusQuery(OpenQuery):
    app: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] = "ALL"
    ttl_seconds: TtlSeconds | None = None
    skip_cache: Annotated[bool, Field(description="true: ask the cluster for every customer")] = False


class CacheFigures(BaseModel):
    entries: int
    expired_entries: int
    hits: int
    misses: int
    expired: int
    hit_rate: float | None
    cleaned: int | None = None


class CacheStats(BaseModel):
    scope: Literal["all", "mine"]
    clusters: dict[str, CacheFigures]
    total: CacheFigures
    as_of: str


class Invalidate(Body):
    """POST /api/cache/invalidate: one of your jobs (some CIDs, one app), or as an admin a cluster,
    an app, or everything."""

    job_id: Annotated[str, Field(description="a UUID")] | None = None
    cids: list[Any] | None = None
    app: str | None = None
    cluster: str | None = None
    all: Literal[True] | None = None


class Invalidated(BaseModel):
    invalidated: int
    job_id: str | None = None
    cids: int | None = None
    app: str | None = None
    cluster: str | None = None
    all: bool | None = None


# -- auth ---------------------------------------------------------------------------------------
class Login(Body):
    username: Line(64)
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class LoggedInUser(BaseModel):
    id: int
    username: str
    role: Literal["user", "admin"]


class LoginAnswer(BaseModel):
    user: LoggedInUser
    csrf_token: str


class Me(BaseModel):
    id: int
    username: str
    role: Literal["user", "admin"]
    scope: ScopeName
    via: Literal["cookie", "token"]


class MeAnswer(BaseModel):
    user: Me
    csrf_token: str | None


class Ok(BaseModel):
    ok: bool


class NewToken(Body):
    scope: ScopeName = "read"
    name: Annotated[str, Field(max_length=100)] = ""


class CreatedToken(BaseModel):
    id: int
    name: str
    scope: ScopeName
    token: Annotated[str, Field(description="the secret: shown in this answer only")]
    prefix: str
    created_at: Time


class CreatedTokenAnswer(BaseModel):
    token: CreatedToken


class TokenInfo(BaseModel):
    id: int
    user_id: int
    name: str
    scope: ScopeName
    prefix: str
    created_at: Time
    revoked_at: Time


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class TokensQuery(OpenQuery):
    all: Annotated[bool, Field(description="admins: everyone's tokens")] = False


class RevokedToken(BaseModel):
    id: int
    user_id: int
    name: str


class RevokedAnswer(BaseModel):
    revoked: RevokedToken


# -- admin --------------------------------------------------------------------------------------
class AdminJob(Job):
    username: str | None


class AdminJobPage(BaseModel):
    jobs: list[AdminJob]
    next_cursor: str | None
    sort: str
    order: Literal["asc", "desc"]
    limit: int


Sort = Literal[tuple(SORTS) + ("duration_ms",)]  # type: ignore[valid-type]
AdminDate = Annotated[str, Field(max_length=40, description="ISO 8601 date or date-time")]


class AdminCsvQuery(Query):
    status: StatusList | None = None
    user: Annotated[str, Field(max_length=64, description="a user id or username")] | None = None
    action: Annotated[str, Field(max_length=64)] | None = None
    cluster: Annotated[str, Field(max_length=64)] | None = None
    text: Annotated[str, Field(max_length=200)] | None = None
    q: Annotated[str, Field(max_length=200)] | None = None
    created_from: AdminDate | None = None
    created_to: AdminDate | None = None
    finished_from: AdminDate | None = None
    finished_to: AdminDate | None = None
    sort: Sort | None = None
    order: Literal["asc", "desc", "ASC", "DESC"] | None = None
    format: Literal["json", "csv", "JSON", "CSV"] | None = None


class AdminJobsQuery(AdminCsvQuery):
    cursor: Annotated[str, Field(max_length=2000)] | None = None
    limit: Whole(1, MAX_LIMIT) = 50


class Figures(BaseModel):
    created: int
    success: int
    failed: int
    partial: int
    cancelled: int
    finished: int
    success_rate: float | None
    avg_duration_ms: int | None


class DayFigures(Figures):
    day: str


class ActionFigures(Figures):
    action_name: str
    p95_duration_ms: int | None


class ClusterFigures(Figures):
    cluster: str
    p95_duration_ms: int | None


class Processing(BaseModel):
    finished: int
    avg_ms: int | None
    p50_ms: int | None
    p95_ms: int | None


class AdminStats(BaseModel):
    as_of: str
    counts: dict[str, int]
    total: int
    running: int
    queued: int
    success_rate: float | None
    today: DayFigures
    window_days: int
    processing: Processing
    avg_duration_ms: int | None
    p95_duration_ms: int | None
    daily: list[DayFigures]
    by_action: list[ActionFigures]
    by_cluster: list[ClusterFigures]


class StatsQuery(Query):
    days: Whole(1, MAX_WINDOW_DAYS) = 7


class Verification(BaseModel):
    ok: bool
    difference_count: int
    differences: list[dict[str, Any]]
    checked: dict[str, int]
    elapsed_ms: int


class Owner(BaseModel):
    id: int
    username: str
    role: str


class Retry(BaseModel):
    job_id: str
    status: JobStatus
    created_at: Time


class JobEvent(BaseModel):
    event_id: int
    kind: str
    at: Time
    status: str | None
    done: int | None
    failed: int | None


class CustomerCounts(BaseModel):
    count: int
    by_outcome: dict[str, int]
    pruned: bool


class AdminJobDetail(BaseModel):
    job: AdminJob
    owner: Owner | None
    processing_ms: int | None
    finished: bool
    queued_ms: int | None
    attempts: int
    customers: CustomerCounts
    retries: list[Retry]
    event_count: int
    events: list[JobEvent]
    events_truncated: bool


class JobDetailQuery(Query):
    events_limit: Whole(1, 1000) = 200


class Result(BaseModel):
    seq: int
    cid: str
    outcome: CustomerStatus
    http_status: int | None
    error_message: str | None
    updated_at: Time


class Results(BaseModel):
    job_id: str
    customer_count: int
    results: list[Result]
    next_cursor: str | None
    by_outcome: dict[str, int]
    pruned: bool


class ResultsQuery(Query):
    outcome: Annotated[str, Field(max_length=20, description="one customer status")] | None = None
    cursor: Annotated[str, Field(max_length=2000)] | None = None
    limit: Whole(1, MAX_LIMIT) = 100


class AuditEntry(BaseModel):
    id: int
    at: Time
    user_id: int | None
    username: str | None
    kind: str
    subject: str | None
    detail: Any
    ip: str | None


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None


class AuditQuery(Query):
    user: Annotated[str, Field(max_length=64)] | None = None
    kind: Annotated[str, Field(max_length=400, description="kinds, comma-separated")] | None = None
    # `from` is a Python keyword: the field is from_ with the parameter's name as its alias
    from_: Annotated[AdminDate | None, Field(alias="from")] = None
    to: AdminDate | None = None
    cursor: Annotated[str, Field(max_length=2000)] | None = None
    limit: Whole(1, MAX_LIMIT) = 100


class UserRow(BaseModel):
    id: int
    username: str
    role: Literal["user", "admin"]
    created_at: Time
    disabled: bool
    jobs: dict[str, int]
    job_total: int


class UserList(BaseModel):
    users: list[UserRow]


class NewUser(Body):
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    password: Annotated[str, Field(min_length=8, max_length=1024)]
    role: Literal["user", "admin"] = "user"


class CreatedUser(BaseModel):
    user: LoggedInUser


class RetentionRun(BaseModel):
    at: Time
    events: int
    customers: int
    jobs: int
    skipped: bool


class RetentionStatus(BaseModel):
    event_retention_days: int
    retention_days: int
    interval_seconds: float
    chunk: int
    node: str
    runs: int
    last_run: RetentionRun | None
    last_error: str | None


class RetentionAnswer(BaseModel):
    retention: RetentionStatus


class NoQuery(Query):
    """A route that takes no query parameters."""


class NodeReport(BaseModel):
    """One node's latest system report (server/system/reports.py)."""

    node_id: str
    host: str
    pid: int
    state: Literal["live", "gone"]
    this_node: bool
    started_at: str | None
    last_seen: str | None
    seconds_since_report: float
    interval_seconds: float
    gone_after_seconds: float
    cpu_percent: float | None
    rss_bytes: int | None
    loop_lag_ms: float | None
    loop_lag_avg_ms: float | None
    sockets: int | None
    jobs_running: int | None
    fanout_queue: int | None
    upstream_in_flight: int | None
    db_pool_in_use: int | None
    db_pool_idle: int | None
    db_pool_max: int | None


class SystemAnswer(BaseModel):
    nodes: list[NodeReport]
    this_node: str
    live: int
    gone: int
    as_of: str
    interval_seconds: float


# -- ops ----------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    node: str


class NotReady(BaseModel):
    status: Literal["unavailable"]
    database: str  # why: database_unavailable, database_read_only, storage_full
    message: str | None = None


# -- CI/CD agents (the bodies and records are in server.pipelines.models) -------------------------
MAX_PAGE = 100  # pipeline jobs or deployments per page


class PageQuery(Query):
    cursor: Cursor | None = None
    limit: Whole(1, MAX_PAGE) = 50


class LimitQuery(Query):
    limit: Whole(1, MAX_PAGE) = 50


class PipelineJobsQuery(PageQuery):
    status: StatusList | None = None
    agent_id: Annotated[str, Field(max_length=100)] | None = None
    repo: Annotated[str, Field(max_length=200)] | None = None


class DeploymentsQuery(PageQuery):
    status: StatusList | None = None
    service_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")] | None = None

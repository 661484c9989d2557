"""The request bodies of the CI/CD agent API as typed models, and the records clients get.

Request models are pydantic v2 models in strict mode with unknown fields refused: `"exit_code": "0"`
is a wrong type, `"exit_code": 0` is zero (not "missing"), and a field left out is null. Text is
bounded and may not hold control characters (PostgreSQL cannot store NUL). `parse_body` turns the
first validation error into the one error envelope, naming the field by its dotted path.

`PipelineJob` and `Deployment` describe what clients get (the OpenAPI description is generated from
these models); `public_pipeline_job` and `public_deployment` shape a database row into exactly their
fields.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Mapping

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.errors import BadRequest
from server.timeutil import iso

MAX_METADATA_BYTES = 16 * 1024
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SERVICE_NAME = r"^[A-Za-z0-9._-]{1,100}$"


class PipelineStatus(str, enum.Enum):
    """A pipeline job's status: pending → queued → running → one of the final ones."""

    PENDING = "pending"  # reported, not yet queued on an agent
    QUEUED = "queued"  # waiting for an agent
    RUNNING = "running"  # an agent runs it (and sends heartbeats)
    SUCCESS = "success"  # completed with exit code 0
    FAILED = "failed"  # completed with another exit code
    CANCELLED = "cancelled"  # stopped before it completed
    TIMEOUT = "timeout"  # no heartbeat or update for JOBMON_PIPELINE_TIMEOUT, or reported so
    ERROR = "error"  # the agent could not run it


ACTIVE_PIPELINE = (PipelineStatus.PENDING.value, PipelineStatus.QUEUED.value, PipelineStatus.RUNNING.value)
# the final statuses that count as failures in the summary
FAILED_PIPELINE = (PipelineStatus.FAILED.value, PipelineStatus.TIMEOUT.value, PipelineStatus.ERROR.value)


class DeploymentStatus(str, enum.Enum):
    """A deployment's status: pending → staging → staged → production → live, or failed, or rolled_back."""

    PENDING = "pending"  # announced, nothing deployed yet
    STAGING = "staging"  # being deployed to staging
    STAGED = "staged"  # deployed to staging
    PRODUCTION = "production"  # being deployed to production
    LIVE = "live"  # deployed to production
    FAILED = "failed"  # gave up before going live
    ROLLED_BACK = "rolled_back"  # undone after staging or production


# -- text fields -----------------------------------------------------------------------------
def _no_control(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _single_line(value: str) -> str:
    if "\n" in value or "\r" in value or "\t" in value:
        raise ValueError("must be one line without tabs")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+\S*", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # what JSON allows and orjson (hence storage) cannot write
        raise ValueError("must hold integers within 64 bits") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return value


def Line(max_length: int, min_length: int = 1):  # noqa: N802 - a type, used like one
    """One line of text, `min_length` to `max_length` characters."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length),
                     AfterValidator(_no_control), AfterValidator(_single_line)]


def Paragraph(max_length: int):  # noqa: N802
    """Text of several lines, up to `max_length` characters."""
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_control)]


Uuid = Annotated[uuid.UUID, Field(description="a UUID")]
JobType = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$", description="build, test, deploy, ...")]
Tag = Line(64)
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
ServiceName = Annotated[str, Field(pattern=SERVICE_NAME)]
Url = Annotated[str, Field(max_length=2000), AfterValidator(_http_url)]


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(message, code="validation_error", details={"field": field})


class Body(BaseModel):
    """A request body: strict types, unknown fields refused, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# -- pipeline jobs ---------------------------------------------------------------------------
class NewPipelineJob(Body):
    """POST /api/dashboard/jobs"""

    job_type: JobType
    repo: Line(200)
    ref: Line(200) | None = None
    commit_sha: Line(64) | None = None
    commit_message: Paragraph(2000) | None = None
    commit_author: Line(200) | None = None
    agent_id: Line(100)
    status: Literal["pending", "queued"] = "pending"
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    metadata: Metadata = Field(default_factory=dict)


class PipelineJobUpdate(Body):
    """PATCH /api/dashboard/jobs/{job_id}: a status change while it runs, or `{}` as a heartbeat."""

    status: Literal["queued", "running", "cancelled"] | None = None
    started_at: datetime | None = None

    @model_validator(mode="after")
    def _started_only_when_running(self):
        # raised as is (not a ValueError): pydantic lets it through, and it names the field
        if self.started_at is not None and self.status != "running":
            raise _invalid("started_at", "'started_at' goes with \"status\": \"running\" only")
        return self

    def started_ms(self) -> int | None:
        """started_at as epoch milliseconds (a time without a zone is UTC)."""
        if self.started_at is None:
            return None
        moment = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)


class PipelineJobCompletion(Body):
    """PATCH /api/dashboard/jobs/{job_id}/complete"""

    exit_code: int | None = Field(default=None, ge=-2**31, le=2**31 - 1)
    status: Literal["timeout", "error", "cancelled"] | None = None
    duration_seconds: float | None = Field(default=None, ge=0, le=10 * 365 * 86_400)
    logs_url: Url | None = None
    error_message: Paragraph(4000) | None = None

    @model_validator(mode="after")
    def _outcome_given(self):
        if self.exit_code is None and self.status is None:
            raise _invalid("exit_code", "Send 'exit_code' (0 is success), or 'status': timeout, error or cancelled")
        return self

    def final_status(self) -> str:
        """The status this completion gives the job."""
        if self.status is not None:
            return self.status
        return PipelineStatus.SUCCESS.value if self.exit_code == 0 else PipelineStatus.FAILED.value


# -- deployments ------------------------------------------------------------------------------
class NewDeployment(Body):
    """POST /api/dashboard/deployments"""

    service_name: ServiceName
    version: Line(100)
    commit_sha: Line(64) | None = None
    commit_message: Paragraph(2000) | None = None
    commit_author: Line(200) | None = None
    build_job_id: Uuid | None = None
    test_job_id: Uuid | None = None
    cluster: Line(64) | None = None


class DeploymentStep(Body):
    """POST /api/dashboard/deployments/{id}/staging and /production: the deploy job that did it."""

    job_id: Uuid
    in_progress: bool = False


class DeploymentRollback(Body):
    """POST /api/dashboard/deployments/{id}/rollback"""

    rolled_back_to: Line(100)
    reason: Paragraph(2000) | None = None


class DeploymentFailure(Body):
    """POST /api/dashboard/deployments/{id}/fail"""

    reason: Paragraph(2000) | None = None


class DeploymentMetrics(Body):
    """PATCH /api/dashboard/deployments/{id}/metrics: what was observed after the deploy."""

    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: float | None = Field(default=None, ge=0, le=1e9)
    requests_per_sec: float | None = Field(default=None, ge=0, le=1e12)

    @model_validator(mode="after")
    def _something_given(self):
        if self.error_rate is None and self.latency_ms is None and self.requests_per_sec is None:
            raise _invalid("error_rate", "Send at least one of error_rate, latency_ms, requests_per_sec")
        return self


def parse_body(model: type[Body], body: bytes) -> Body:
    """The body as `model`, or a 400 naming the first wrong field (`details.field`, dotted)."""
    try:
        return model.model_validate_json(body if body.strip() else b"{}")  # no body: {}
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "json_invalid":
            raise BadRequest("The request body is not valid JSON", code="validation_error",
                             details={"field": None}) from None
        if not field:
            raise BadRequest("Expected a JSON object in the request body", code="validation_error",
                             details={"field": None}) from None
        if error["type"] == "extra_forbidden":
            allowed = list(model.model_fields)
            raise BadRequest(f"Unknown field {field[:64]!r}; this body takes: " + ", ".join(allowed),
                             code="validation_error", details={"field": field[:64], "allowed": allowed}) from None
        message = error["msg"].removeprefix("Value error, ")
        raise BadRequest(f"'{field}': {message}", code="validation_error", details={"field": field}) from None


# -- what clients get ---------------------------------------------------------------------------
Time = Annotated[str | None, Field(description="ISO 8601 UTC with a Z, or null")]


class PipelineJob(BaseModel):
    """A pipeline job as clients get it (REST answers, `pipeline-update`)."""

    job_id: str
    user_id: int
    job_type: str
    repo: str
    ref: str | None
    commit_sha: str | None
    commit_message: str | None
    commit_author: str | None
    agent_id: str
    status: PipelineStatus
    tags: list[str]
    metadata: dict[str, Any]
    exit_code: int | None
    duration_seconds: float | None
    logs_url: str | None
    error_message: str | None
    created_at: Time
    started_at: Time
    updated_at: Time
    finished_at: Time
    heartbeat_at: Time
    idempotency_key: str | None


class Deployment(BaseModel):
    """A deployment as clients get it (REST answers, `deployment-update`)."""

    id: str
    user_id: int
    service_name: str
    version: str
    commit_sha: str | None
    commit_message: str | None
    commit_author: str | None
    build_job_id: str | None
    test_job_id: str | None
    cluster: str | None
    status: DeploymentStatus
    staging_job_id: str | None
    staged_at: Time
    production_job_id: str | None
    live_at: Time
    rolled_back_at: Time
    rolled_back_to: str | None
    rollback_reason: str | None
    failure_reason: str | None
    error_rate: float | None
    latency_ms: float | None
    requests_per_sec: float | None
    metrics_at: Time
    idempotency_key: str | None
    created_at: Time
    updated_at: Time


class LiveService(BaseModel):
    """What is live for one service (the summary's `live_by_service` values)."""

    version: str
    deployment_id: str
    live_at: Time
    cluster: str | None


class Summary(BaseModel):
    """GET /api/dashboard/summary and the `dashboard-summary` event."""

    jobs_running: int
    jobs_failed_today: int
    deployments_today: int
    recent_jobs: list[PipelineJob]
    recent_deployments: list[Deployment]
    live_by_service: dict[str, LiveService]
    as_of: str


_JSON_FIELDS = {"tags", "metadata"}


def _shaper(model: type[BaseModel]):
    """A function from a row mapping to exactly the model's fields: times as ISO, JSON text decoded."""
    fields = tuple((name, name.endswith("_at"), name in _JSON_FIELDS) for name in model.model_fields)

    def shape(row: Mapping) -> dict:
        out = {}
        for name, is_time, is_json in fields:
            value = row[name]
            if is_time:
                value = iso(value)
            elif is_json and isinstance(value, str):
                value = orjson.loads(value)
            out[name] = value
        return out

    shape.__doc__ = f"A row as a {model.__name__}."
    return shape


public_pipeline_job = _shaper(PipelineJob)
public_deployment = _shaper(Deployment)


class PipelineJobAnswer(BaseModel):
    job: PipelineJob


class PipelineJobPage(BaseModel):
    jobs: list[PipelineJob]
    next_cursor: str | None = None


class DeploymentAnswer(BaseModel):
    deployment: Deployment


class DeploymentPage(BaseModel):
    deployments: list[Deployment]
    next_cursor: str | None = None

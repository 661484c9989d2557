"""The CI/CD agent API under /api/dashboard: pipeline jobs, deployments and their summary.

Reports (POST, PATCH) need a credential of scope `agent` or above (agent, write and admin tokens,
or a session); reads need `read`. A record belongs to the user whose credential reported it: that
user sees it, admins see everyone's, and another user's id is a 404. Bodies are the typed models of
`server.pipelines.models` (a 400 names the first wrong field; over 64 KB is a 413).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.routing import Route

from server.accounts.store import Principal, Scope
from server.api.common import (
    MAX_JSON_BYTES,
    IDEMPOTENCY_HEADER,
    OrjsonResponse,
    idempotency_key,
    read_body,
    services,
)
from server.api.models import DeploymentsQuery, LimitQuery, NoQuery, PageQuery, PipelineJobsQuery
from server.api.spec import operation
from server.errors import BadRequest
from server.jobs.store import parse_job_id
from server.parsing import parse_status_list
from server.pipelines.models import (
    ACTIVE_PIPELINE,
    SERVICE_NAME,
    Body,
    DeploymentAnswer,
    DeploymentFailure,
    DeploymentMetrics,
    DeploymentPage,
    DeploymentRollback,
    DeploymentStatus,
    DeploymentStep,
    NewDeployment,
    NewPipelineJob,
    PipelineJobAnswer,
    PipelineJobCompletion,
    PipelineJobPage,
    PipelineJobUpdate,
    PipelineStatus,
    Summary,
    parse_body,
)

AGENT_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


async def _reporter(request: Request) -> Principal:
    return await services(request).auth.require(request, Scope.AGENT)


async def _reader(request: Request) -> Principal:
    return await services(request).auth.require(request, Scope.READ)


def _owner(principal: Principal) -> int | None:
    """Whose records a list shows: the caller's, or everyone's for an admin."""
    return None if principal.is_admin else principal.user_id


async def _body(request: Request, model: type[Body]):
    return parse_body(model, await read_body(request, MAX_JSON_BYTES))


def _job_id(request: Request) -> str:
    return parse_job_id(request.path_params["job_id"])


def _deployment_id(request: Request) -> str:
    return parse_job_id(request.path_params["deployment_id"], field="id")


def _statuses(raw: str | None, valid) -> tuple[str, ...]:
    return parse_status_list(raw, [s.value for s in valid], case=str.lower)


def _created(record: dict, key: str, created: bool) -> OrjsonResponse:
    return OrjsonResponse({key: record}, status_code=201 if created else 200)


# -- pipeline jobs -----------------------------------------------------------------------------
@operation(auth=Scope.AGENT, body=NewPipelineJob, responses={201: PipelineJobAnswer, 200: PipelineJobAnswer},
           headers=IDEMPOTENCY_HEADER, links={201: {
               name: (target, {"job_id": "$response.body#/job/job_id"})
               for name, target in [("GetPipelineJob", "dashboard_get_job"), ("UpdatePipelineJob", "dashboard_update_job"),
                                    ("CompletePipelineJob", "dashboard_complete_job")]}})
async def create_job(request: Request) -> OrjsonResponse:
    """Report a new pipeline job (201; the same job again, 200, for a repeated Idempotency-Key)."""
    s = services(request)
    principal = await _reporter(request)
    key = idempotency_key(request)
    body = await _body(request, NewPipelineJob)
    job, created = await s.pipelines.create_job(principal.user_id, body, key)
    return _created(job, "job", created)


@operation(auth=Scope.READ, query=PipelineJobsQuery, responses={200: PipelineJobPage})
async def list_jobs(request: Request) -> OrjsonResponse:
    """Pipeline jobs newest first, by status (several allowed), agent or repo, one page per cursor."""
    principal = await _reader(request)
    query: PipelineJobsQuery = request.state.query
    return OrjsonResponse(await services(request).pipelines.list_jobs(
        user_id=_owner(principal), statuses=_statuses(query.status, PipelineStatus),
        agent_id=query.agent_id, repo=query.repo, cursor=query.cursor, limit=query.limit))


@operation(auth=Scope.READ, query=LimitQuery, responses={200: PipelineJobPage})
async def running_jobs(request: Request) -> OrjsonResponse:
    """Pending, queued and running pipeline jobs, newest first."""
    principal = await _reader(request)
    page = await services(request).pipelines.list_jobs(
        user_id=_owner(principal), statuses=ACTIVE_PIPELINE, limit=request.state.query.limit)
    return OrjsonResponse({"jobs": page["jobs"]})


@operation(auth=Scope.READ, query=PageQuery, responses={200: PipelineJobPage},
           path={"agent_id": {"type": "string", "pattern": AGENT_ID.pattern}})
async def agent_jobs(request: Request) -> OrjsonResponse:
    """One agent's pipeline jobs, newest first, one page per cursor."""
    principal = await _reader(request)
    agent_id = request.path_params["agent_id"]
    if not AGENT_ID.fullmatch(agent_id):
        raise BadRequest("'agent_id' is 1-100 characters", code="validation_error", details={"field": "agent_id"})
    query: PageQuery = request.state.query
    return OrjsonResponse(await services(request).pipelines.list_jobs(
        user_id=_owner(principal), agent_id=agent_id, cursor=query.cursor, limit=query.limit))


@operation(auth=Scope.READ, responses={200: PipelineJobAnswer})
async def get_job(request: Request) -> OrjsonResponse:
    """One pipeline job."""
    principal = await _reader(request)
    job = await services(request).pipelines.get_job(_job_id(request), principal.user_id, principal.is_admin)
    return OrjsonResponse({"job": job})


@operation(auth=Scope.AGENT, body=PipelineJobUpdate, responses={200: PipelineJobAnswer}, errors=(409,))
async def update_job(request: Request) -> OrjsonResponse:
    """A pipeline job's status while it runs (queued, running, cancelled), or `{}`: a heartbeat."""
    principal = await _reporter(request)
    job_id = _job_id(request)
    body = await _body(request, PipelineJobUpdate)
    job = await services(request).pipelines.update_job(job_id, principal.user_id, principal.is_admin, body)
    return OrjsonResponse({"job": job})


@operation(auth=Scope.AGENT, body=PipelineJobCompletion, responses={200: PipelineJobAnswer}, errors=(409,))
async def complete_job(request: Request) -> OrjsonResponse:
    """Finish a pipeline job: exit code 0 is success, another failed (or the status sent)."""
    principal = await _reporter(request)
    job_id = _job_id(request)
    body = await _body(request, PipelineJobCompletion)
    job = await services(request).pipelines.complete_job(job_id, principal.user_id, principal.is_admin, body)
    return OrjsonResponse({"job": job})


# -- deployments -------------------------------------------------------------------------------
@operation(auth=Scope.AGENT, body=NewDeployment, responses={201: DeploymentAnswer, 200: DeploymentAnswer},
           headers=IDEMPOTENCY_HEADER, links={201: {
               name: (target, {"deployment_id": "$response.body#/deployment/id"})
               for name, target in [("GetDeployment", "dashboard_get_deployment"), ("Stage", "dashboard_stage"),
                                    ("Promote", "dashboard_promote"), ("RollBack", "dashboard_roll_back"),
                                    ("Fail", "dashboard_fail"), ("Metrics", "dashboard_record_metrics")]}})
async def create_deployment(request: Request) -> OrjsonResponse:
    """Announce a deployment of a service version (201, status pending)."""
    s = services(request)
    principal = await _reporter(request)
    key = idempotency_key(request)
    body = await _body(request, NewDeployment)
    if body.cluster is not None:
        try:
            s.clusters.get(body.cluster)
        except BadRequest as exc:
            raise BadRequest(exc.message, code=exc.code, details={"field": "cluster", **(exc.details or {})}) from None
    await s.pipelines.check_jobs({"build_job_id": body.build_job_id, "test_job_id": body.test_job_id},
                                 principal.user_id, principal.is_admin)
    deployment, created = await s.pipelines.create_deployment(principal.user_id, body, key)
    return _created(deployment, "deployment", created)


@operation(auth=Scope.READ, query=DeploymentsQuery, responses={200: DeploymentPage})
async def list_deployments(request: Request) -> OrjsonResponse:
    """Deployments newest first, by status or service, one page per cursor."""
    principal = await _reader(request)
    query: DeploymentsQuery = request.state.query
    return OrjsonResponse(await services(request).pipelines.list_deployments(
        user_id=_owner(principal), statuses=_statuses(query.status, DeploymentStatus),
        service_name=query.service_name, cursor=query.cursor, limit=query.limit))


@operation(auth=Scope.READ, query=PageQuery, responses={200: DeploymentPage},
           path={"service_name": {"type": "string", "pattern": SERVICE_NAME}})
async def service_deployments(request: Request) -> OrjsonResponse:
    """One service's deployments, newest first, one page per cursor."""
    principal = await _reader(request)
    query: PageQuery = request.state.query
    return OrjsonResponse(await services(request).pipelines.list_deployments(
        user_id=_owner(principal), service_name=_service_name(request.path_params["service_name"]),
        cursor=query.cursor, limit=query.limit))


def _service_name(raw: str) -> str:
    if not re.fullmatch(SERVICE_NAME, raw):
        raise BadRequest("'service_name' is 1-100 letters, digits, '.', '_' or '-'", code="validation_error",
                         details={"field": "service_name"})
    return raw


@operation(auth=Scope.READ, responses={200: DeploymentAnswer})
async def get_deployment(request: Request) -> OrjsonResponse:
    """One deployment."""
    principal = await _reader(request)
    deployment = await services(request).pipelines.get_deployment(_deployment_id(request), principal.user_id,
                                                                  principal.is_admin)
    return OrjsonResponse({"deployment": deployment})


def _step(model: type[Body], method_name: str, doc: str):
    """A route that moves a deployment on with a body of `model` (PipelineStore.<method_name>)."""

    async def endpoint(request: Request) -> OrjsonResponse:
        principal = await _reporter(request)
        deployment_id = _deployment_id(request)
        body = await _body(request, model)
        change = getattr(services(request).pipelines, method_name)
        return OrjsonResponse({"deployment": await change(deployment_id, principal.user_id, principal.is_admin, body)})

    endpoint.__name__ = endpoint.__qualname__ = method_name
    endpoint.__doc__ = doc
    return operation(auth=Scope.AGENT, body=model, responses={200: DeploymentAnswer}, errors=(409,))(endpoint)


stage_deployment = _step(DeploymentStep, "stage", "Deployed to staging (staged), or being deployed there (staging).")
promote_deployment = _step(DeploymentStep, "promote",
                           "Deployed to production (live), or being deployed there (production).")
roll_back_deployment = _step(DeploymentRollback, "roll_back", "Roll a staged or live deployment back.")
fail_deployment = _step(DeploymentFailure, "fail", "A deployment that gave up before going live.")
deployment_metrics = _step(DeploymentMetrics, "record_metrics", "Error rate, latency, throughput after the deploy.")


# -- summary -----------------------------------------------------------------------------------
@operation(auth=Scope.READ, query=NoQuery, responses={200: Summary})
async def summary(request: Request) -> OrjsonResponse:
    """Running and failed-today jobs, today's deployments, the newest ones, and what is live where."""
    principal = await _reader(request)
    return OrjsonResponse(await services(request).pipelines.summary(_owner(principal)))


def routes() -> list[Route]:
    jobs, deployments = "/api/dashboard/jobs", "/api/dashboard/deployments"
    return [
        Route(jobs, create_job, methods=["POST"]),
        Route(jobs, list_jobs, methods=["GET"]),
        # before {job_id}: these are not job ids
        Route(f"{jobs}/running", running_jobs, methods=["GET"]),
        Route(f"{jobs}/agent/{{agent_id}}", agent_jobs, methods=["GET"]),
        Route(f"{jobs}/{{job_id}}", get_job, methods=["GET"]),
        Route(f"{jobs}/{{job_id}}", update_job, methods=["PATCH"]),
        Route(f"{jobs}/{{job_id}}/complete", complete_job, methods=["PATCH"]),
        Route(deployments, create_deployment, methods=["POST"]),
        Route(deployments, list_deployments, methods=["GET"]),
        Route(f"{deployments}/service/{{service_name}}", service_deployments, methods=["GET"]),
        Route(f"{deployments}/{{deployment_id}}", get_deployment, methods=["GET"]),
        Route(f"{deployments}/{{deployment_id}}/staging", stage_deployment, methods=["POST"]),
        Route(f"{deployments}/{{deployment_id}}/production", promote_deployment, methods=["POST"]),
        Route(f"{deployments}/{{deployment_id}}/rollback", roll_back_deployment, methods=["POST"]),
        Route(f"{deployments}/{{deployment_id}}/fail", fail_deployment, methods=["POST"]),
        Route(f"{deployments}/{{deployment_id}}/metrics", deployment_metrics, methods=["PATCH"]),
        Route("/api/dashboard/summary", summary, methods=["GET"]),
    ]

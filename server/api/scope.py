"""A job's scope: its customers' states and app status, and the app-status cache's stats and invalidation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from server.accounts.store import Scope
from server.api.common import (
    MAX_JSON_BYTES,
    OrjsonResponse,
    client_ip,
    job_in_path,
    services,
)
from server.api.models import AppStatus, AppStatusQuery, CacheStats, CustomerStates, Invalidate, Invalidated
from server.api.spec import json_body, operation
from server.appstatus.scope import parse_app
from server.errors import BadRequest, Forbidden
from server.jobs.catalogue import validate_cids


@operation(auth=Scope.READ, responses={200: CustomerStates}, errors=(502,))
async def job_actions(request: Request) -> OrjsonResponse:
    """The cluster's state of each of the job's customers, with the job's own result beside it."""
    _, job = await job_in_path(request, Scope.READ)
    return OrjsonResponse(await services(request).scope.customer_states(job))


@operation(auth=Scope.READ, query=AppStatusQuery, responses={200: AppStatus}, errors=(502,))
async def job_appstatus(request: Request) -> OrjsonResponse:
    """The app status of the job's customers, from the cache where fresh, else from the cluster."""
    s = services(request)
    _, job = await job_in_path(request, Scope.READ)
    query: AppStatusQuery = request.state.query
    ttl = query.ttl_seconds or s.settings.appstatus_ttl
    return OrjsonResponse(await s.scope.appstatus(job, query.app, ttl, query.skip_cache))


@operation(auth=Scope.READ, responses={200: CacheStats})
async def cache_stats(request: Request) -> OrjsonResponse:
    """Entries and counters per cluster: everything for admins, the caller's own jobs for users."""
    s = services(request)
    principal = await s.auth.require(request, Scope.READ)
    clusters = [cluster.id for cluster in s.clusters]
    if principal.is_admin:
        return OrjsonResponse({"scope": "all", **await s.cache.stats(clusters, None)})
    return OrjsonResponse({"scope": "mine", **await s.cache.stats(clusters, principal.user_id)})


async def _cids_of_job(request: Request, job_id: str, raw: object) -> list[str]:
    """The CIDs given, each of which must be a customer of the job."""
    s = services(request)
    cids = validate_cids(raw, s.settings.max_cids)
    known = await s.jobs.customers_of(job_id, cids)
    strangers = [cid for cid in cids if cid not in known]
    if strangers:
        raise BadRequest(f"{len(strangers)} CID(s) are not customers of this job, e.g. {strangers[0]!r}",
                         code="validation_error", details={"field": "cids", "not_in_job": strangers[:20]})
    return cids


@operation(auth=Scope.WRITE, body=Invalidate, responses={200: Invalidated})
async def invalidate(request: Request) -> OrjsonResponse:
    """Drop cache entries: of one of the caller's jobs (optionally some CIDs, one app), or, for
    admins, by cluster and/or app or all of them."""
    s = services(request)
    principal = await s.auth.require(request, Scope.WRITE)
    body = await json_body(request, Invalidate, MAX_JSON_BYTES)
    given = body.model_fields_set  # a field sent as null is still "given"
    app = parse_app(body.app) if body.app is not None else None
    if body.job_id is not None:
        if "cluster" in given or "all" in given:
            raise BadRequest("'job_id' cannot be combined with 'cluster' or 'all'", code="validation_error",
                             details={"field": "job_id"})
        job = await s.jobs.get_for(body.job_id, principal.user_id, principal.is_admin)
        cids = await _cids_of_job(request, job["job_id"], body.cids) if "cids" in given else None
        count = await s.cache.invalidate(cluster_id=job["cluster"], app=app, job_id=job["job_id"], cids=cids)
        target = {"job_id": job["job_id"], "cids": len(cids) if cids is not None else None, "app": app}
    else:
        if not principal.is_admin:
            raise Forbidden("Send 'job_id' of one of your jobs: only admins may invalidate beyond their own jobs")
        if "cids" in given:
            raise BadRequest("'cids' needs the 'job_id' they belong to", code="validation_error",
                             details={"field": "cids"})
        if "all" in given and body.all is not True:
            raise BadRequest("'all' must be true when given", code="validation_error", details={"field": "all"})
        cluster = s.clusters.get(body.cluster).id if "cluster" in given else None
        if cluster is None and app is None and body.all is not True:
            raise BadRequest("Say what to invalidate: 'job_id' (and 'cids', 'app'), or as an admin "
                             "'cluster' and/or 'app', or 'all': true", code="validation_error")
        count = await s.cache.invalidate(cluster_id=cluster, app=app)
        target = {"cluster": cluster, "app": app, "all": cluster is None and app is None}
    await s.audit.record("cache_invalidate", user_id=principal.user_id, username=principal.username,
                         subject=target.get("job_id") or target.get("cluster") or "*",
                         detail={**target, "invalidated": count}, ip=client_ip(request))
    return OrjsonResponse({"invalidated": count, **target})


def routes() -> list[Route]:
    return [
        Route("/api/jobs/{job_id}/actions", job_actions, methods=["GET"]),
        Route("/api/jobs/{job_id}/appstatus", job_appstatus, methods=["GET"]),
        Route("/api/cache/stats", cache_stats, methods=["GET"]),
        Route("/api/cache/invalidate", invalidate, methods=["POST"]),
    ]

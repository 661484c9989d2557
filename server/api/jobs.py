"""Starting Set Actions and reading, cancelling and retrying one's jobs."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.routing import Route

from server.accounts.store import Scope
from server.api.common import (
    IDEMPOTENCY_HEADER,
    MAX_JSON_BYTES,
    OrjsonResponse,
    client_ip,
    idempotency_key,
    job_in_path,
    json_object,
    services,
)
from server.api.models import (
    Clusters,
    CustomerPage,
    CustomersQuery,
    JobAnswer,
    JobDetail,
    JobPage,
    MyJobsQuery,
    MyStats,
    NewSetAction,
    RetryBody,
    SetActionAnswer,
    SetActionUpload,
)
from server.api.spec import json_body, operation
from server.errors import BadRequest, Conflict, PayloadTooLarge
from server.jobs.catalogue import (
    ACTIONS,
    parse_cid_csv,
    parse_cid_text,
    resolve_action,
    validate_cids,
)
from server.jobs.store import CustomerStatus, JobStatus
from server.parsing import parse_status_list
from server.stats.live import daily_figures, job_stats

UPSTREAM_TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")


@operation(auth=Scope.READ, responses={200: Clusters})
async def list_clusters(request: Request) -> OrjsonResponse:
    """The clusters a Set Action may target, and the actions."""
    s = services(request)
    await s.auth.require(request, Scope.READ)
    return OrjsonResponse({
        "clusters": [cluster.public() for cluster in s.clusters],
        "actions": [{"name": a.name, "code": a.code, "aliases": list(a.aliases)} for a in ACTIONS],
    })


def _upstream_token(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not UPSTREAM_TOKEN.fullmatch(raw):
        raise BadRequest("'upstream_token' must be a bearer token of printable ASCII", code="validation_error",
                         details={"field": "upstream_token"})
    return raw


async def _read_set_action(request: Request, max_cids: int, max_bytes: int) -> tuple[dict, list[str], str | None]:
    """(fields, cids, batch_id) from a JSON body or a multipart CSV upload."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
            raise PayloadTooLarge(f"Upload too large: at most {max_bytes} bytes of CSV",
                                  details={"field": "file", "max_bytes": max_bytes})
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
        except Exception as exc:  # python-multipart reports limits and malformed bodies alike
            raise BadRequest(f"Could not read the upload: {exc}", code="validation_error",
                             details={"field": "file"}) from None
        try:
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                if isinstance(form.get("cids"), str):
                    return fields, parse_cid_text(form["cids"], max_cids), None
                raise BadRequest("Attach a CSV file as 'file' (or send 'cids')", code="validation_error",
                                 details={"field": "file"})
            data = await upload.read(max_bytes + 1)
        finally:
            await form.close()  # its spooled temporary files, whatever happens
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"CSV file too large: at most {max_bytes} bytes",
                                  details={"field": "file", "max_bytes": max_bytes})
        return fields, parse_cid_csv(data, max_cids), str(uuid.uuid4())
    if not content_type.startswith("application/json"):
        raise BadRequest("Send JSON (application/json), a CSV upload (multipart/form-data) or a form",
                         code="validation_error")
    body = await json_object(request, limit=max_bytes)
    if isinstance(body.get("cids"), str):
        return body, parse_cid_text(body["cids"], max_cids), None
    if "cids" not in body:
        raise BadRequest("'cids' is required: a list of customer IDs", code="validation_error",
                         details={"field": "cids"})
    return body, validate_cids(body["cids"], max_cids), None


@operation(auth=Scope.WRITE, body=NewSetAction, form=SetActionUpload, responses={202: SetActionAnswer},
           headers=IDEMPOTENCY_HEADER, links={202: {
               name: (target, {"job_id": "$response.body#/job/job_id"})
               for name, target in [("GetJob", "jobs_get_job"), ("JobCustomers", "jobs_job_customers"),
                                    ("CancelJob", "jobs_cancel_job"), ("RetryJob", "jobs_retry_job"),
                                    ("JobActions", "scope_job_actions"), ("JobAppStatus", "scope_job_appstatus")]}})
async def create_set_action(request: Request) -> OrjsonResponse:
    """Start a Set Action: 202 with the new job (the same job again for a repeated Idempotency-Key)."""
    s = services(request)
    principal = await s.auth.require(request, Scope.WRITE)
    key = idempotency_key(request)
    if key is not None:
        existing = await s.jobs.by_idempotency_key(principal.user_id, key)
        if existing is not None:
            return OrjsonResponse({"job": existing, "idempotent_replay": True}, status_code=202)
    fields, cids, batch_id = await _read_set_action(request, s.settings.max_cids, s.settings.max_upload_bytes)
    cluster = s.clusters.get(fields.get("cluster"))
    action = resolve_action(fields.get("action"))
    token = _upstream_token(fields.get("upstream_token"))
    job, created = await s.jobs.create_job(
        user_id=principal.user_id, action=action, cluster=cluster.id, cids=cids,
        batch_size=s.settings.batch_size, idempotency_key=key, batch_id=batch_id)
    if created:
        s.runner.submit(job["job_id"], token)
        await s.audit.record("set_action", user_id=principal.user_id, username=principal.username,
                             subject=job["job_id"], ip=client_ip(request),
                             detail={"action": action.name, "cluster": cluster.id, "customers": len(cids)})
    return OrjsonResponse({"job": job, "idempotent_replay": not created}, status_code=202)


@operation(auth=Scope.READ, query=MyJobsQuery, responses={200: JobPage})
async def my_jobs(request: Request) -> OrjsonResponse:
    """The caller's jobs, newest first, filtered, one page per cursor."""
    s = services(request)
    principal = await s.auth.require(request, Scope.READ)
    query: MyJobsQuery = request.state.query
    statuses = parse_status_list(query.status, sorted(s.value for s in JobStatus))
    page = await s.jobs.list_jobs(
        user_id=principal.user_id, statuses=list(statuses) or None,
        action=resolve_action(query.action).name if query.action else None,
        cluster=query.cluster, text=query.q or query.text, cursor=query.cursor, limit=query.limit)
    return OrjsonResponse(page)


@operation(auth=Scope.READ, responses={200: JobDetail})
async def get_job(request: Request) -> OrjsonResponse:
    """One job (the owner's or, for admins, anyone's) with its customers grouped by outcome."""
    _, job = await job_in_path(request, Scope.READ)
    summary = await services(request).jobs.customer_summary(job["job_id"])
    return OrjsonResponse({"job": job, "customer_summary": summary})


@operation(auth=Scope.READ, query=CustomersQuery, responses={200: CustomerPage})
async def job_customers(request: Request) -> OrjsonResponse:
    """The job's customers in order, filterable by status, one page per cursor."""
    _, job = await job_in_path(request, Scope.READ)
    query: CustomersQuery = request.state.query
    status = query.status
    if status is not None:
        status = status.upper()
        if status not in {c.value for c in CustomerStatus}:
            raise BadRequest(f"Unknown customer status {status!r}; valid: "
                             + ", ".join(c.value for c in CustomerStatus),
                             code="validation_error", details={"field": "status"})
    cursor = query.cursor
    after = -1
    if cursor:
        cursor_job, after = services(request).jobs.cursors.decode(cursor, "customers", (str, int))
        if cursor_job != job["job_id"]:
            raise BadRequest("This 'cursor' belongs to another job's customers: start again without it",
                             code="validation_error", details={"field": "cursor"})
    page = await services(request).jobs.list_customers(
        job["job_id"], status=status, after_seq=after, limit=query.limit)
    return OrjsonResponse({"job_id": job["job_id"], **page})


@operation(auth=Scope.WRITE, responses={202: JobAnswer}, errors=(409,))
async def cancel_job(request: Request) -> OrjsonResponse:
    """Cancel a queued or running job; customers not yet sent become SKIPPED."""
    s = services(request)
    principal, job = await job_in_path(request, Scope.WRITE)
    updated = await s.jobs.request_cancel(job["job_id"])
    await s.audit.record("cancel", user_id=principal.user_id, username=principal.username,
                         subject=job["job_id"], ip=client_ip(request))
    return OrjsonResponse({"job": updated}, status_code=202)


@operation(auth=Scope.WRITE, body=RetryBody, body_required=False, responses={202: JobAnswer}, errors=(409,),
           headers=IDEMPOTENCY_HEADER)
async def retry_job(request: Request) -> OrjsonResponse:
    """Run the job's failed customers again, as a new job pointing back at this one.

    With `include_skipped: true`, also the customers a cancel kept from being sent.
    """
    s = services(request)
    principal, job = await job_in_path(request, Scope.WRITE)
    if job["status"] not in (JobStatus.FAILED.value, JobStatus.PARTIAL.value, JobStatus.CANCELLED.value):
        raise Conflict(f"Only a finished job with failures can be retried; this one is {job['status']}")
    body = await json_body(request, RetryBody, MAX_JSON_BYTES, required=False)
    include_skipped = body.include_skipped
    key = idempotency_key(request)
    token = body.upstream_token  # checked before anything is stored
    wanted = [CustomerStatus.FAILED, CustomerStatus.SKIPPED] if include_skipped else [CustomerStatus.FAILED]
    cids = await s.jobs.cids_with_status(job["job_id"], wanted)
    if not cids:
        raise Conflict("This job has no failed or unsent customers to retry" if include_skipped
                       else "This job has no failed customers to retry")
    new_job, created = await s.jobs.create_job(
        user_id=job["user_id"], action=resolve_action(job["action_code"]), cluster=job["cluster"], cids=cids,
        batch_size=s.settings.batch_size, idempotency_key=key, parent_job_id=job["job_id"])
    if created:
        s.runner.submit(new_job["job_id"], token)
        await s.audit.record("retry", user_id=principal.user_id, username=principal.username,
                             subject=new_job["job_id"], detail={"parent_job_id": job["job_id"], "customers": len(cids),
                                                                "include_skipped": include_skipped},
                             ip=client_ip(request))
    return OrjsonResponse({"job": new_job}, status_code=202)


@operation(auth=Scope.READ, responses={200: MyStats})
async def my_stats(request: Request) -> OrjsonResponse:
    """The caller's job stats (the `job-stats` payload) and the last 7 days."""
    s = services(request)
    principal = await s.auth.require(request, Scope.READ)
    stats = await job_stats(s.db, principal.user_id)
    stats["daily"] = await daily_figures(s.db, principal.user_id)
    return OrjsonResponse(stats)


def routes() -> list[Route]:
    return [
        Route("/api/clusters", list_clusters, methods=["GET"]),
        Route("/api/set-actions", create_set_action, methods=["POST"]),
        Route("/api/jobs/mine", my_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/customers", job_customers, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/retry", retry_job, methods=["POST"]),
        Route("/api/stats/mine", my_stats, methods=["GET"]),
    ]

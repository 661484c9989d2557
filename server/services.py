"""The objects a running server is made of: built once, in dependency order, by
`running_services` (the app's lifespan), then passed to handlers through `request.state.services`."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import socketio

from server.accounts.audit import AuditLog
from server.accounts.auth import Authenticator
from server.accounts.store import Accounts
from server.admin.queries import AdminQueries
from server.appstatus.cache import AppStatusCache
from server.appstatus.scope import JobScope
from server.config import Settings
from server.db import Db, migrate
from server.jobs.cursors import CursorCodec
from server.jobs.events import JobEventLog
from server.jobs.retention import RetentionTask
from server.jobs.runner import JobRunner
from server.jobs.store import JobStore
from server.metrics import Metrics
from server.pipelines.regressions import DeployRegressions
from server.pipelines.store import PipelineStore
from server.pipelines.timeouts import PipelineTimeouts
from server.ratelimit import RateLimiter
from server.realtime.alerts import Alerts
from server.realtime.catchup import BusCatchUp
from server.realtime.dashboard_push import DashboardPush
from server.realtime.emitter import SocketEmitter
from server.realtime.fanout import Fanout
from server.realtime.live_stats import LiveStats
from server.realtime.namespace import Realtime
from server.stats.aggregates import AdminStats
from server.system.reports import NodeReporter, new_node_id
from server.upstream.client import TmsClient
from server.upstream.clusters import ClusterRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may need, fully built before the first request."""

    settings: Settings
    db: Db
    accounts: Accounts
    auth: Authenticator
    audit: AuditLog
    clusters: ClusterRegistry
    client: TmsClient
    jobs: JobStore
    runner: JobRunner
    cache: AppStatusCache
    scope: JobScope
    admin: AdminQueries
    admin_stats: AdminStats
    retention: RetentionTask
    realtime: Realtime
    pipelines: PipelineStore
    pipeline_timeouts: PipelineTimeouts
    regressions: DeployRegressions
    system: NodeReporter
    metrics: Metrics
    limiter: RateLimiter


@contextlib.asynccontextmanager
async def running_services(settings: Settings, sio: socketio.AsyncServer, clusters: ClusterRegistry,
                           *, demo_users: tuple[tuple[str, str, str], ...] = ()):
    """Build every service in dependency order, start the background work, and stop it all
    (in reverse) when the block ends. Each object gets what it uses in its constructor."""
    db = Db(settings.database_url, connect_timeout=settings.database_connect_timeout)
    await db.connect()
    try:
        await migrate(db)
        cursors = CursorCodec(settings.secret_key)
        accounts = Accounts(db)
        for username, password, role in demo_users:
            await accounts.ensure_user(username, password, role)
        auth = Authenticator(accounts, settings.secret_key, settings.session_days)
        audit = AuditLog(db, cursors)
        metrics = Metrics()
        limiter = RateLimiter(auth, per_minute=settings.rate_limit, burst=settings.rate_burst,
                              redis_url=settings.redis_url, prefix=settings.redis_channel)
        client = TmsClient(settings.upstream_timeout, settings.upstream_connections, metrics)
        # the realtime side first: the job store hands every committed event to it
        emitter = SocketEmitter(sio)
        events = JobEventLog(db)
        fanout = Fanout(sio, events, settings.redis_url, settings.redis_channel)
        live_stats = LiveStats(db, emitter, fanout, multi_node=bool(settings.redis_url))
        alerts = Alerts(db, emitter, stuck_after_ms=int(settings.stuck_after * 1000),
                        cluster_failures=settings.cluster_alert_after)
        dashboard = DashboardPush(db, emitter, multi_node=bool(settings.redis_url))
        jobs = JobStore(db, cursors, subscribers=(fanout.publish, live_stats.job_events, alerts.job_events))
        pipelines = PipelineStore(db, cursors, subscribers=(fanout.publish, dashboard.changed))
        runner = JobRunner(jobs, clusters, client, job_concurrency=settings.job_concurrency,
                           batch_concurrency=settings.batch_concurrency, lease_seconds=settings.lease_seconds,
                           on_batch_done=alerts.batch_done)
        cache = AppStatusCache(db, client, batch_size=settings.appstatus_batch_size,
                               concurrency=settings.appstatus_concurrency,
                               cleanup_interval=settings.appstatus_cleanup_interval,
                               claim_seconds=2 * settings.upstream_timeout + 10, metrics=metrics)
        scope = JobScope(jobs, cache, clusters, client, emitter, appstatus_ttl=settings.appstatus_ttl,
                         states_max_pages=settings.states_max_pages)
        # only Redis pub/sub can lose events: catching up from the event log when it did
        catchup = BusCatchUp(fanout, events, live_stats, dashboard, interval=settings.catchup_interval,
                             enabled=bool(settings.redis_url))
        realtime = Realtime(sio, settings, auth=auth, accounts=accounts, jobs=jobs, events=events, fanout=fanout,
                            alerts=alerts, live_stats=live_stats, scope=scope, dashboard=dashboard, metrics=metrics,
                            catchup=catchup)
        metrics.watch(fanout, runner)
        regressions = DeployRegressions(pipelines, jobs, alerts, window_seconds=settings.regression_window,
                                        rate=settings.regression_rate,
                                        min_customers=settings.regression_min_customers)
        system = NodeReporter(db, settings.system_interval, node_id=new_node_id(), realtime=realtime, runner=runner,
                              fanout=fanout, client=client)
        services = Services(
            settings=settings, db=db, accounts=accounts, auth=auth, audit=audit, clusters=clusters, client=client,
            jobs=jobs, runner=runner, cache=cache, scope=scope, admin=AdminQueries(db, accounts, cursors),
            admin_stats=AdminStats(db), retention=RetentionTask(db, settings), realtime=realtime,
            pipelines=pipelines, pipeline_timeouts=PipelineTimeouts(pipelines, settings.pipeline_timeout),
            regressions=regressions, system=system, metrics=metrics, limiter=limiter)
    except BaseException:
        await db.disconnect()
        raise
    started = []
    try:
        for component in (limiter, realtime, runner, cache, scope, services.retention, services.pipeline_timeouts,
                          regressions, system):
            await component.start()
            started.append(component)
        yield services
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                logger.exception("stopping %r failed", component)
        await client.aclose()
        await db.disconnect()

"""This node's Prometheus metrics, through `prometheus_client`, in a registry of the app's own.

One `Metrics` per app (several apps run in one test process, so never the library's global
registry), built in `services.running_services` and handed to what counts:

    jobmon_http_requests_total{method, route, status}         every HTTP request (route = the template)
    jobmon_http_request_duration_seconds{method, route}       its time to the end of the answer
    jobmon_upstream_calls_total{cluster, operation, outcome}  calls to the TMS clusters (outcome: ok,
                                                              http, timeout, connection, malformed)
    jobmon_upstream_call_duration_seconds{cluster, operation}
    jobmon_socketio_connects_total{outcome}                   accepted | refused
    jobmon_socketio_disconnects_total
    jobmon_appstatus_cache_lookups_total{cluster, result}     hit | miss, per customer looked up

and read when scraped (`NodeCollector`): the fan-out's deliveries, dropped events, queue depth and
users caught up after the Redis bus lost their events, the jobs this node runs, its sockets. `jobmon_jobs{status}` (every user's jobs) is read from the
database by the /metrics route, just before the text is written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match, Mount

if TYPE_CHECKING:
    from server.jobs.runner import JobRunner
    from server.realtime.fanout import Fanout

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# an HTTP answer is usually a few ms; the upstream calls go up to the 30 s deadline
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED_ROUTE = "unmatched"  # the route label of a path no route serves (404), never the raw path
# a label value per method a client can make up would let it grow the series without bound
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The counters and histograms of one app, and the text of a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._http_requests = Counter("jobmon_http_requests", "HTTP requests answered by this node.",
                                      ["method", "route", "status"], registry=r)
        self._http_seconds = Histogram("jobmon_http_request_duration_seconds",
                                       "Time from an HTTP request to the end of its answer.",
                                       ["method", "route"], buckets=HTTP_BUCKETS, registry=r)
        self._upstream_calls = Counter("jobmon_upstream_calls", "Calls to the TMS clusters, by outcome.",
                                       ["cluster", "operation", "outcome"], registry=r)
        self._upstream_seconds = Histogram("jobmon_upstream_call_duration_seconds",
                                           "Time of a call to a TMS cluster (failed ones included).",
                                           ["cluster", "operation"], buckets=UPSTREAM_BUCKETS, registry=r)
        self._connects = Counter("jobmon_socketio_connects", "Socket.IO connections to this node, by outcome.",
                                 ["outcome"], registry=r)
        self._disconnects = Counter("jobmon_socketio_disconnects", "Socket.IO connections ended on this node.",
                                    registry=r)
        self._cache_lookups = Counter("jobmon_appstatus_cache_lookups",
                                      "Customers looked up in the app-status cache: hit or miss.",
                                      ["cluster", "result"], registry=r)
        self.jobs = Gauge("jobmon_jobs", "Jobs by status (all users), read at scrape time.", ["status"],
                          registry=r)
        # label children by their values: one dict read per count instead of the library's locked lookup
        self._children: dict[tuple, object] = {}

    def __repr__(self) -> str:
        return f"Metrics(series={len(self._children)})"

    def _child(self, metric, *values: str):
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """An HTTP request was answered (route: its template, such as /api/jobs/{job_id})."""
        self._child(self._http_requests, method, route, str(status)).inc()
        self._child(self._http_seconds, method, route).observe(seconds)

    def upstream_call(self, cluster: str, operation: str, outcome: str, seconds: float) -> None:
        """A call to a cluster ended (outcome: ok, or the UpstreamError kind)."""
        self._child(self._upstream_calls, cluster, operation, outcome).inc()
        self._child(self._upstream_seconds, cluster, operation).observe(seconds)

    def socket_connected(self, accepted: bool) -> None:
        self._child(self._connects, "accepted" if accepted else "refused").inc()

    def socket_disconnected(self) -> None:
        self._disconnects.inc()

    def cache_lookups(self, cluster: str, hits: int, misses: int) -> None:
        """Customers found fresh in the app-status cache (hits) and fetched or failed (misses)."""
        if hits:
            self._child(self._cache_lookups, cluster, "hit").inc(hits)
        if misses:
            self._child(self._cache_lookups, cluster, "miss").inc(misses)

    def watch(self, fanout: "Fanout", runner: "JobRunner") -> None:
        """Read the fan-out and the runner's own figures at each scrape."""
        self.registry.register(NodeCollector(fanout, runner))

    def exposition(self, job_counts: dict[str, int]) -> bytes:
        """The text of a scrape, with the jobs by status just read."""
        for status, n in job_counts.items():
            self.jobs.labels(status).set(n)
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """Figures the fan-out and the runner keep as plain numbers, turned into metrics when scraped
    (counting a delivery stays an integer increment on the hot path)."""

    def __init__(self, fanout: "Fanout", runner: "JobRunner"):
        self.fanout = fanout
        self.runner = runner

    def collect(self):
        delivered = CounterMetricFamily(
            "jobmon_fanout_deliveries", "Events sent to this node's sockets by the fan-out "
            "(job-update, pipeline-update, deployment-update, resync).", value=self.fanout.delivered)
        queued = CounterMetricFamily(
            "jobmon_fanout_queued_deliveries", "Of those, the ones that waited in a socket's queue instead "
            "of going straight to its WebSocket: it was still writing earlier ones, was slow to read, or "
            "is on long-polling.", value=self.fanout.queued)
        dropped = CounterMetricFamily(
            "jobmon_fanout_dropped_events", "Events this node could not deliver live (their users "
            "were told to resync): queue_full, or gap_too_large after it was cut off.", labels=["reason"])
        for reason in ("queue_full", "gap_too_large"):
            dropped.add_metric([reason], self.fanout.dropped[reason])
        depth = GaugeMetricFamily("jobmon_fanout_queue_depth", "Event batches waiting for this node's fan-out.",
                                  value=self.fanout.queue_depth)
        caught_up = CounterMetricFamily(
            "jobmon_fanout_caught_up_users", "Users whose events the Redis bus lost, caught up from the "
            "event log by this node (realtime/catchup.py): above zero, this node missed events.",
            value=self.fanout.caught_up)
        running = GaugeMetricFamily("jobmon_node_running_jobs", "Jobs this node is executing.",
                                    value=len(self.runner.running_jobs))
        sockets = GaugeMetricFamily("jobmon_node_sockets", "Socket.IO clients connected to this node.",
                                    value=len(self.fanout.sockets))
        return [delivered, queued, dropped, depth, caught_up, running, sockets]


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status (ASGI). It sits
    outside the other middleware, so answers they give (429, security headers) are counted too."""

    def __init__(self, app, routes: list[BaseRoute]):
        self.app = app
        self.routes = routes  # the app's own, to name the route of an answer given before routing (429)

    async def __call__(self, scope, receive, send):
        services = scope.get("state", {}).get("services") if scope["type"] == "http" else None
        if services is None:
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # unless an answer starts: an exception here becomes the error handler's 500
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            method = scope["method"] if scope["method"] in METHODS else "other"
            services.metrics.http_request(method, self.route_template(scope, root_path), status,
                                          time.perf_counter() - started)

        async def send_counting(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()  # before the client has it all, so its next request sees it counted
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            if not counted:
                count()

    def route_template(self, scope, root_path: str) -> str:
        """The path template of the route that served the request (such as /api/jobs/{job_id}),
        under the mounts it went through; never the raw path."""
        route = scope.get("route")
        if route is not None:  # set by the router (the innermost one, under a mount)
            prefix = scope.get("root_path", "")[len(root_path):]
            return prefix + ("/{path}" if isinstance(route, Mount) else route.path)
        for candidate in self.routes:  # answered before routing
            if candidate.matches(scope)[0] is not Match.NONE:
                return candidate.path + ("/{path}" if isinstance(candidate, Mount) else "")
        return UNMATCHED_ROUTE

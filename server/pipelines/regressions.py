"""Deploy regressions: after a deployment that names a cluster goes live, did that cluster's Set
Actions start failing more?

Once JOBMON_REGRESSION_WINDOW seconds have passed since it went live, the cluster's Set Action
customer failure rate in that window is compared with the same length of time before it. When
it rose by more than JOBMON_REGRESSION_RATE (an absolute difference of rates), with at least
JOBMON_REGRESSION_MIN_CUSTOMERS customers answered after, a critical `deploy_regression`
job-alert names the deployment, both rates and the rollback target (the version of the service
that was live before it).

Every node checks; the store hands each deployment to one of them (a conditional UPDATE of
`regression_checked`), and the alert's id (`deploy_regression:<deployment id>`) keeps it to one
alert even so. A deployment whose window ended more than HORIZON ago is not checked: its alert
would come too late to act on (a cluster that was down for a day, say).
"""

from __future__ import annotations

import logging

from server.jobs.store import JobStore
from server.periodic import PeriodicTask
from server.pipelines.store import PipelineStore
from server.realtime.alerts import AlertKind, Alerts
from server.timeutil import now_ms, parse_iso

logger = logging.getLogger(__name__)

HORIZON_MS = 86_400_000


def _rate(answered: int, failed: int) -> float:
    return failed / answered if answered else 0.0


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class DeployRegressions:
    """Checks live deployments whose window has passed, every quarter window (at most every 30 s)."""

    def __init__(self, pipelines: PipelineStore, jobs: JobStore, alerts: Alerts, *, window_seconds: float,
                 rate: float, min_customers: int):
        self.pipelines = pipelines
        self.jobs = jobs
        self.alerts = alerts
        self.window_seconds = window_seconds
        self.rate = rate
        self.min_customers = min_customers
        # every quarter of the period, at most every 30 s
        every = min(max(window_seconds / 4, 0.05), 30.0)  # a quarter of the period, at most 30 s
        self._periodic = PeriodicTask(every, "deploy regression check", self.check, "jobmon-deploy-regressions")

    def __repr__(self) -> str:
        return f"DeployRegressions(window={self.window_seconds:g}s, rate={self.rate:g})"

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def check(self) -> list[dict]:
        """Judge every deployment whose window has just passed; return the alerts raised."""
        window_ms = int(self.window_seconds * 1000)
        until = now_ms() - window_ms
        raised = []
        while deployments := await self.pipelines.claim_regression_checks(until, until - HORIZON_MS):
            for deployment in deployments:
                alert = await self.judge(deployment)
                if alert is not None:
                    raised.append(alert)
        return raised

    async def judge(self, deployment: dict) -> dict | None:
        """Compare the cluster's failure rate after the deployment went live with before; alert on a rise."""
        window_ms = int(self.window_seconds * 1000)
        live_at, cluster = parse_iso(deployment["live_at"]), deployment["cluster"]
        answered_after, failed_after = await self.jobs.customer_outcomes(cluster, live_at, live_at + window_ms)
        answered_before, failed_before = await self.jobs.customer_outcomes(cluster, live_at - window_ms, live_at)
        after, before = _rate(answered_after, failed_after), _rate(answered_before, failed_before)
        if answered_after < self.min_customers or after - before <= self.rate:
            return None
        previous = await self.pipelines.live_before(deployment)
        target = (f"roll back to {previous['version']} (deployment {previous['id'][:8]})" if previous
                  else "no earlier live version to roll back to")
        window = _duration(self.window_seconds)
        message = (f"Deployment {deployment['service_name']} {deployment['version']} ({deployment['id'][:8]}) "
                   f"on cluster {cluster}: Set Action customer failure rate {after:.1%} in the {window} after it "
                   f"went live ({failed_after} of {answered_after} customers), {before:.1%} in the {window} before "
                   f"({failed_before} of {answered_before}); {target}")
        return await self.alerts.raise_alert(f"deploy_regression:{deployment['id']}", AlertKind.DEPLOY_REGRESSION,
                                             message, user_id=deployment["user_id"], cluster=cluster)

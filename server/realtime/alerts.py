"""Job alerts: a job that FAILED or ended PARTIAL, a job stuck IN_PROGRESS, a cluster that keeps failing,
a deployment after which its cluster's Set Actions fail more (raised by pipelines.regressions).

Every alert is a row of `job_alerts` before it is emitted. Its id names what it is about
(`job_failed:<job_id>`, `job_stuck:<job_id>`, `cluster_failing:<cluster>:<5-minute window>`,
`deploy_regression:<deployment id>`), and the insert does nothing when the id exists, so when
several nodes notice the same thing exactly one of them emits it. A listener that was away asks for the alerts since a time (`resume` with
`alerts_since`) and gets them from the table.
"""

from __future__ import annotations

import enum
import logging

import sqlalchemy as sa

from server.db import Db
from server.db import schema as tables
from server.realtime.emitter import ADMINS_ROOM, Emitter, user_room
from server.timeutil import iso, now_ms
from server.upstream.client import UpstreamError

logger = logging.getLogger(__name__)

CLUSTER_WINDOW_MS = 300_000  # one cluster_failing alert per cluster per 5 minutes, across nodes
REPLAY_LIMIT = 1000


class AlertKind(str, enum.Enum):
    JOB_FAILED = "job_failed"  # every customer of a job failed
    JOB_PARTIAL = "job_partial"  # some customers of a job failed
    JOB_STUCK = "job_stuck"  # IN_PROGRESS for longer than settings.stuck_after
    CLUSTER_FAILING = "cluster_failing"  # N whole-batch failures in a row on one cluster
    DEPLOY_REGRESSION = "deploy_regression"  # a cluster's failure rate rose after a deployment went live


SEVERITY = {AlertKind.JOB_FAILED: "critical", AlertKind.JOB_PARTIAL: "warning",
            AlertKind.JOB_STUCK: "warning", AlertKind.CLUSTER_FAILING: "critical",
            AlertKind.DEPLOY_REGRESSION: "critical"}



def public_alert(row) -> dict:
    """An alert as clients see it (the `job-alert` payload)."""
    r = row._mapping if hasattr(row, "_mapping") else row
    return {"alert_id": r["alert_id"], "severity": r["severity"], "kind": r["kind"], "job_id": r["job_id"],
            "cluster": r["cluster"], "user_id": r["user_id"], "message": r["message"], "at": iso(r["at"])}


def _short(job: dict) -> str:
    return f"{job['action_name']} job {job['job_id'][:8]} on {job['cluster']}"


class Alerts:
    """Raises, stores and replays alerts; `emit` sends one to its owner and the admins."""

    def __init__(self, db: Db, emitter: Emitter, *, stuck_after_ms: int, cluster_failures: int):
        self.db = db
        self.emitter = emitter
        self.stuck_after_ms = stuck_after_ms
        self.cluster_failures = cluster_failures
        self._streaks: dict[str, int] = {}  # cluster -> whole-batch failures in a row seen by this node

    async def raise_alert(self, alert_id: str, kind: AlertKind, message: str, *, user_id: int | None,
                          job_id: str | None = None, cluster: str | None = None) -> dict | None:
        """Store the alert and emit it; None when it was raised before (here or on another node)."""
        row = {"alert_id": alert_id[:160], "user_id": user_id, "severity": SEVERITY[kind], "kind": kind.value,
               "job_id": job_id, "cluster": cluster, "message": message[:2000], "at": now_ms()}
        inserted = await self.db.fetch_val(
            "INSERT INTO job_alerts (alert_id, user_id, severity, kind, job_id, cluster, message, at) "
            "VALUES (:alert_id, :user_id, :severity, :kind, :job_id, :cluster, :message, :at) "
            "ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id", row)
        if inserted is None:
            return None
        alert = public_alert(row)
        logger.warning("alert %s: %s", alert["kind"], alert["message"])
        # to the owner's sockets and the admins', on every node
        rooms = [user_room(alert["user_id"]), ADMINS_ROOM] if alert["user_id"] is not None else [ADMINS_ROOM]
        await self.emitter.emit("job-alert", alert, rooms)
        return alert

    async def job_finished(self, job: dict) -> None:
        """A job's status event: alert when it FAILED or ended PARTIAL."""
        if job.get("status") == "FAILED":
            kind, verb = AlertKind.JOB_FAILED, "failed"
        elif job.get("status") == "PARTIAL":
            kind, verb = AlertKind.JOB_PARTIAL, "ended PARTIAL"
        else:
            return
        reason = job.get("error_message") or "see the job's customers"
        await self.raise_alert(f"{kind.value}:{job['job_id']}", kind, f"{_short(job)} {verb}: {reason}",
                               user_id=job["user_id"], job_id=job["job_id"], cluster=job["cluster"])

    async def job_events(self, events: list[dict]) -> None:
        """The job store's subscriber: alert on the status events of FAILED and PARTIAL jobs."""
        for event in events:
            if event["kind"] == "status" and event.get("topic", "job") == "job":
                await self.job_finished(event["job"])

    async def batch_done(self, job: dict, error: UpstreamError | None) -> None:
        """A batch ended: count whole-batch failures in a row per cluster; alert at the threshold."""
        cluster = job["cluster"]
        if error is None:
            self._streaks.pop(cluster, None)
            return
        streak = self._streaks.get(cluster, 0) + 1
        self._streaks[cluster] = streak
        if streak != self.cluster_failures:
            return  # alert once per streak; a success re-arms it
        window = now_ms() // CLUSTER_WINDOW_MS
        await self.raise_alert(
            f"cluster_failing:{cluster}:{window}", AlertKind.CLUSTER_FAILING,
            f"Cluster {cluster}: {streak} batches in a row failed; last error: {error.message}",
            user_id=job["user_id"], job_id=job["job_id"], cluster=cluster)

    async def jobs_stuck(self, stuck: list[dict]) -> int:
        """Alert for these jobs IN_PROGRESS past the limit (each once: JobStore.flag_stuck marks them)."""
        for job in stuck:
            minutes = self.stuck_after_ms / 60_000
            await self.raise_alert(
                f"job_stuck:{job['job_id']}", AlertKind.JOB_STUCK,
                f"{_short(job)} has been IN_PROGRESS for over {minutes:g} min "
                f"({job['done']} of {job['customer_count']} customers done)",
                user_id=job["user_id"], job_id=job["job_id"], cluster=job["cluster"])
        return len(stuck)

    async def since(self, since_ms: int, user_id: int | None, limit: int = REPLAY_LIMIT) -> list[dict]:
        """Alerts raised at or after `since_ms`, oldest first: a user's own, or every one (None)."""
        a = tables.job_alerts
        query = sa.select(a).where(a.c.at >= since_ms)
        if user_id is not None:
            query = query.where(a.c.user_id == user_id)
        rows = await self.db.fetch_all(query.order_by(a.c.at, a.c.alert_id).limit(limit))
        return [public_alert(r) for r in rows]

    async def prune(self, before_ms: int) -> None:
        await self.db.execute(tables.job_alerts.delete().where(tables.job_alerts.c.at < before_ms))

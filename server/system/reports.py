"""Every node's report of its own system metrics (the `node_reports` table), and the admin's view
of all of them (`GET /admin/system`).

Each node writes one row, its own, every JOBMON_SYSTEM_INTERVAL seconds: the database is the one
thing every node shares, with or without Redis. A node that has not reported for
GONE_AFTER_INTERVALS of its own intervals (it died, hangs, or lost the database) is shown as gone
with when it was last seen; rows not renewed for FORGET_AFTER_MS are pruned by whichever node
reports next.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from server.db import Db
from server.periodic import PeriodicTask
from server.system.process import CpuMeter, LoopLagSampler, rss_bytes
from server.timeutil import iso, now_ms

logger = logging.getLogger(__name__)

GONE_AFTER_INTERVALS = 3  # missed reports before a node is shown as gone
FORGET_AFTER_MS = 3_600_000  # a gone node stays listed (as gone) for an hour, then its row is pruned
MAX_NODES = 500  # rows listed at most (pruning keeps far fewer)

FIGURES = ("cpu_percent", "rss_bytes", "loop_lag_ms", "loop_lag_avg_ms", "sockets", "jobs_running",
           "fanout_queue", "upstream_in_flight", "db_pool_in_use", "db_pool_idle", "db_pool_max")
COLUMNS = ("node_id", "host", "pid", "started_at", "reported_at", "interval_ms") + FIGURES

_UPSERT = (
    f"INSERT INTO node_reports ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)}) "
    "ON CONFLICT (node_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("node_id", "host", "pid", "started_at"))
)


def new_node_id() -> str:
    """`host:pid:suffix`: readable, and unique even when a pid is reused or one process serves twice."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"


class NodeReporter:
    """Measures this node and writes its row on an interval; lists every node's latest row."""

    def __init__(self, db: Db, interval: float, *, node_id: str, realtime, runner, fanout, client):
        self.db = db
        self.interval = interval
        self.node_id = node_id
        self.host = socket.gethostname()[:100]
        self.pid = os.getpid()
        # what the figures are read from (each keeps its own count; nothing here is a copy)
        self._realtime = realtime  # .connected_count
        self._runner = runner  # .running_jobs
        self._fanout = fanout  # .queue_depth
        self._client = client  # .in_flight
        self._cpu = CpuMeter()
        self._lag = LoopLagSampler()
        self._started_at = now_ms()
        self._task = PeriodicTask(interval, "reporting this node's system metrics", self.report, name="jobmon-system")

    def __repr__(self) -> str:
        return f"NodeReporter({self.node_id!r}, every {self.interval:g} s)"

    async def start(self) -> None:
        """Report at once (a new node is listed from its first second), then every interval."""
        await self._lag.start()
        try:
            await self.report()
        except Exception:
            logger.exception("the first system metrics report failed; trying again in %s seconds.", self.interval)
        await self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        await self._lag.stop()

    def figures(self) -> dict[str, Any]:
        """This node's figures now (CPU and loop lag: since the previous call)."""
        in_use, idle, pool_max = self.db.pool_usage()
        worst, mean = self._lag.take()
        return {
            "cpu_percent": self._cpu.percent(),
            "rss_bytes": rss_bytes(),
            "loop_lag_ms": worst,
            "loop_lag_avg_ms": mean,
            "sockets": self._realtime.connected_count,
            "jobs_running": len(self._runner.running_jobs),
            "fanout_queue": self._fanout.queue_depth,
            "upstream_in_flight": self._client.in_flight,
            "db_pool_in_use": in_use,
            "db_pool_idle": idle,
            "db_pool_max": pool_max,
        }

    async def report(self) -> None:
        """Write this node's row, and prune the rows of nodes long gone."""
        now = now_ms()
        values = {"node_id": self.node_id, "host": self.host, "pid": self.pid, "started_at": self._started_at,
                  "reported_at": now, "interval_ms": max(1, round(self.interval * 1000)), **self.figures()}
        await self.db.execute(_UPSERT, values)
        await self.db.execute("DELETE FROM node_reports WHERE reported_at < :cutoff", {"cutoff": now - FORGET_AFTER_MS})

    async def nodes(self) -> dict[str, Any]:
        """Every node's latest report, live ones first: `{"nodes", "this_node", "as_of", ...}`."""
        now = now_ms()
        rows = await self.db.fetch_dicts(
            f"SELECT {', '.join(COLUMNS)} FROM node_reports ORDER BY reported_at DESC LIMIT {MAX_NODES}")
        nodes = []
        for row in rows:
            gone_after = GONE_AFTER_INTERVALS * row["interval_ms"]
            live = now - row["reported_at"] <= gone_after
            nodes.append({
                "node_id": row["node_id"], "host": row["host"], "pid": row["pid"],
                "state": "live" if live else "gone", "this_node": row["node_id"] == self.node_id,
                "started_at": iso(row["started_at"]), "last_seen": iso(row["reported_at"]),
                "seconds_since_report": round(max(0, now - row["reported_at"]) / 1000, 1),
                "interval_seconds": row["interval_ms"] / 1000, "gone_after_seconds": gone_after / 1000,
                **{name: row[name] for name in FIGURES},
            })
        nodes.sort(key=lambda n: (n["state"] != "live", n["host"], n["pid"], n["node_id"]))
        return {"nodes": nodes, "this_node": self.node_id, "live": sum(n["state"] == "live" for n in nodes),
                "gone": sum(n["state"] == "gone" for n in nodes), "as_of": iso(now),
                "interval_seconds": self.interval}

"""Catching up after the bus lost events: this node's sockets brought up to date from the database.

Redis pub/sub keeps nothing. An event published while a node's subscription is down (Redis
stopped, or restarted empty; a proxy reset; a network cut) never reaches that node, and its
sockets would see nothing of it until that user's next event. So each node, at once when its
subscription is confirmed again and every `interval` seconds as a safety net (a silent network
cut is noticed by nobody), reads the event counters of the users its sockets watch in one query
on the counters' primary key, and has the fan-out deliver what it has not delivered yet: in
order, once, through the same consumer as live events (a `resync` past GAP_FILL_LIMIT). The
users it caught up get fresh `job-stats` and `dashboard-summary` (those pushed meanwhile went
over the same bus).

Which counters: those of the users with a socket on this node; with an admin socket, every
user's (admins see everyone's events), i.e. the whole `event_counters` table, one small row per
user who ever had an event (10,000 rows: about 5 ms on PostgreSQL), whatever the traffic.

While the subscription is healthy, a periodic sweep only calls an event missing if it had
committed by the previous sweep: one committed since is usually still on its way over the bus,
and reading it from the database too would cost a query for nothing (it would not be sent twice).

Where a node starts from for a user it has delivered nothing of is read when a socket connects
(`watch`), so an event missed between a connection and the first sweep is not taken for the past.
"""

from __future__ import annotations

import asyncio
import logging

from server.jobs.events import JobEventLog
from server.realtime.dashboard_push import DashboardPush
from server.realtime.fanout import Fanout, SocketState
from server.realtime.live_stats import LiveStats

logger = logging.getLogger(__name__)


class BusCatchUp:
    """Per node: sweeps after every (re)subscription to the bus and every `interval` seconds."""

    def __init__(self, fanout: Fanout, events: JobEventLog, live_stats: LiveStats, dashboard: DashboardPush, *,
                 interval: float, enabled: bool):
        self.fanout = fanout
        self.events = events
        self.live_stats = live_stats
        self.dashboard = dashboard
        self.interval = interval  # seconds between periodic sweeps; 0: only after a (re)subscription
        self.enabled = enabled  # only with a bus that can lose events (Redis)
        self.sweeps = 0
        self._previous: dict[int, int] = {}  # the counters read by the last sweep
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"BusCatchUp(interval={self.interval:g}, enabled={self.enabled}, sweeps={self.sweeps})"

    async def start(self) -> None:
        if not self.enabled:
            return
        self.fanout.when_subscribed(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="jobmon-catchup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def read_baseline(self, state: SocketState) -> tuple[dict[int, int], bool] | None:
        """A socket is joining this node: its user's event counters, or everyone's for the first
        admin (and whether they are everyone's), read before it joins; None when there is nothing to
        watch or the read failed."""
        if not self.enabled:
            return None
        all_users = state.principal.is_admin and not (self.fanout.admins - {state.sid})
        try:
            counters = await self.events.counters(None if all_users else [state.principal.user_id])
        except Exception:
            # the first sweep takes its reading as the baseline instead
            logger.exception("reading the event counters for a new socket failed")
            return None
        counters.setdefault(state.principal.user_id, 0)
        return counters, all_users

    def watch(self, state: SocketState, baseline: tuple[dict[int, int], bool] | None) -> None:
        """The socket joined: where its user's events (an admin's first: everyone's) are caught up
        from, if this node has delivered none of them yet. An event committed after the counters
        were read and before the socket joined is the past to it, as to a client that connects a
        moment later: it fetches it, or `resume`s it."""
        if baseline is not None:
            counters, all_users = baseline
            self.fanout.set_baseline(counters, sid=state.sid, all_users=all_users)

    async def _run(self) -> None:
        delay, retry_everything = self.interval, False
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay or None)
            except TimeoutError:
                pass
            everything = retry_everything or self._wake.is_set() or not self.fanout.bus_live
            self._wake.clear()
            try:
                await self.sweep(everything=everything)
                delay, retry_everything = self.interval, False
            except asyncio.CancelledError:
                raise
            except Exception:
                delay, retry_everything = min(max(2 * (delay or 0.5), self.interval), 60.0), everything
                logger.exception("catching up from the event log failed; trying again in %s seconds.", delay)

    async def sweep(self, *, everything: bool) -> set[int]:
        """One query for the counters of the users this node's sockets watch, then deliver what is
        missing: all of it (`everything`, after the bus lost events), or what had committed by the
        previous sweep. Returns the users caught up."""
        self.sweeps += 1
        users = self.fanout.watched_users()
        counters = await self.events.counters(users) if users is None or users else {}
        if everything:
            targets = counters
        else:
            targets = {u: min(c, self._previous[u]) for u, c in counters.items() if u in self._previous}
        self._previous = counters
        caught = await self.fanout.catch_up(targets)
        if caught:
            logger.info("caught up %s user(s) from the event log (events the bus did not bring)", len(caught))
            await self.live_stats.push_here(caught)
            await self.dashboard.push_here(caught)
        return caught

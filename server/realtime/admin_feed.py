"""The admin job feed of the design's admin Socket.IO protocol: which other users' `job-update`
events an admin socket gets, and the filters a client asks for with `subscribe:jobs`.

An admin socket gets every user's job-update events from the moment it connects (today's
protocol); `subscribe:jobs` with filters narrows that to the jobs that match all of them,
`subscribe:jobs` without filters restores everything, `unsubscribe:jobs` stops it. The filter is a
`JobFeed` kept on the socket's state and checked in the delivery path (`fanout.Fanout._deliver`)
against the job in the event itself: no query per event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from server.errors import AppError, BadRequest
from server.jobs.catalogue import resolve_action
from server.jobs.store import JobStatus
from server.parsing import is_int, parse_status_list

FILTERS = ("status", "user", "action", "cluster")
CLUSTER_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_USER_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class JobFeed:
    """Which other users' job-update events an admin socket gets: those whose job matches every
    filter given (statuses: any of them), or none at all once unsubscribed (`off`)."""

    statuses: frozenset[str] = frozenset()
    user_id: int | None = None
    username: str | None = None
    action: str | None = None
    cluster: str | None = None
    off: bool = False

    def matches(self, job: dict) -> bool:
        """Whether a job (as a job-update event carries it) passes the filters."""
        return (not self.off
                and (not self.statuses or job.get("status") in self.statuses)
                and (self.user_id is None or job.get("user_id") == self.user_id)
                and (self.action is None or job.get("action_name") == self.action)
                and (self.cluster is None or job.get("cluster") == self.cluster))

    def public(self) -> dict:
        """The filters as the client is told they were understood."""
        return {"status": sorted(self.statuses), "user": self.username, "action": self.action,
                "cluster": self.cluster}


UNSUBSCRIBED = JobFeed(off=True)


def _bad(field: str, message: str, **details: Any) -> BadRequest:
    return BadRequest(message, code="validation_error", details={"field": field, **details})


async def parse_job_feed(data: Any, find_user: Callable[[str], Awaitable[dict | None]]) -> JobFeed:
    """The feed a `subscribe:jobs` payload asks for: nothing (or `{}`) for every job, else filters
    given at the top level or under `filters`; a 400 naming the first wrong field otherwise."""
    if data is None:
        return JobFeed()
    if not isinstance(data, dict):
        raise _bad("filters", "Send an object of optional filters: {\"status\", \"user\", \"action\", \"cluster\"}")
    if "filters" in data:
        if set(data) != {"filters"} or not (data["filters"] is None or isinstance(data["filters"], dict)):
            raise _bad("filters", "'filters' must be an object (and come alone), like {\"filters\": "
                                  "{\"status\": [\"FAILED\"]}}")
        data = data["filters"] or {}
    unknown = sorted(str(key)[:40] for key in data if key not in FILTERS)
    if unknown:
        raise _bad(unknown[0], f"Unknown filter {unknown[0]!r}; filters: " + ", ".join(FILTERS), allowed=list(FILTERS))
    statuses = _statuses(data.get("status"))
    user_id, username = await _user(data.get("user"), find_user)
    action = data.get("action")
    if action is not None:
        if not isinstance(action, (str, int)) or isinstance(action, bool) or len(str(action)) > 64:
            raise _bad("action", "'action' must be an action name, like PE-Enable")
        try:
            action = resolve_action(action).name
        except AppError as exc:
            raise _bad("action", exc.message, valid=exc.details.get("valid_actions")) from None
    cluster = data.get("cluster")
    if cluster is not None and (not isinstance(cluster, str) or not CLUSTER_TEXT.match(cluster)):
        raise _bad("cluster", "'cluster' must be a cluster id (up to 64 letters, digits, '_', '.', '-')")
    return JobFeed(statuses=frozenset(statuses), user_id=user_id, username=username, action=action, cluster=cluster)


def _statuses(raw: Any) -> tuple[str, ...]:
    valid = [s.value for s in JobStatus]
    if raw is None:
        return ()
    if isinstance(raw, list) and len(raw) <= len(valid) and all(isinstance(s, str) and len(s) <= 20 for s in raw):
        raw = ",".join(raw)
    if not isinstance(raw, str) or len(raw) > 200:
        raise _bad("status", "'status' must be a status or a list of them: " + ", ".join(valid), valid=valid)
    return parse_status_list(raw, valid, "status")


async def _user(raw: Any, find_user) -> tuple[int | None, str | None]:
    if raw is None:
        return None, None
    if is_int(raw) and 0 < raw <= MAX_USER_ID:
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        raise _bad("user", "'user' must be a username or a user id")
    user = await find_user(raw.strip())
    if user is None:
        raise _bad("user", f"No user {raw.strip()!r} (give a user id or a username)")
    return user["id"], user["username"]

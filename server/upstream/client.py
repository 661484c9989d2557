"""The client of the upstream TMS cluster API (see DESIGN.md), over one shared aiohttp session.

aiohttp rather than httpx: a node runs hundreds of calls at once, and httpcore's pool scans every
connection several times per request (seen at 60% of a busy node's CPU with 200 calls in flight).

Every call has a total deadline (a per-read timeout would let a slow drip of bytes outlive it) and every failure becomes an `UpstreamError` with the HTTP status to record
and a message an operator understands. Without an HTTP answer the status is the one a gateway
would give: 408 when the deadline passed, 503 when no connection could be made, 502 when the
connection broke or the answer was not the API's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
import orjson

from server.upstream.clusters import Cluster

logger = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A call to a cluster failed as a whole: nothing in its answer can be trusted."""

    def __init__(self, message: str, http_status: int | None, kind: str):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.kind = kind  # timeout | connection | http | rejected | malformed

    def __repr__(self) -> str:
        return f"UpstreamError({self.kind!r}, {self.http_status!r}, {self.message!r})"


@dataclass(frozen=True)
class CustomerResult:
    """The outcome of one customer inside a set-action answer."""

    ok: bool
    error: str | None = None


_STATUS_HINTS = {
    400: "the cluster rejected the request as malformed",
    401: "the cluster rejected the credentials (missing or expired token)",
    403: "the credentials are not allowed to run this action on the cluster",
    404: "the cluster does not know this endpoint",
    408: "the cluster timed out the request",
    409: "the cluster reported a conflict",
    429: "the cluster is rate-limiting requests",
    500: "the cluster had an internal error",
    502: "the cluster's gateway failed",
    503: "the cluster is unavailable",
    504: "the cluster's gateway timed out",
}


def _error_text(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail"):
            value = parsed.get(key)
            if isinstance(value, str):
                return value[:200]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"][:200]
    return ""


class TmsClient:
    """Talks to the clusters; one instance per server process, closed on shutdown."""

    def __init__(self, timeout: float = 30.0, max_connections: int = 100):
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the loop
        self.in_flight = 0  # calls started and not yet answered (the node's system metrics)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # all calls share one pool: waiting for a free connection counts in the deadline
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(self.timeout, 10.0)),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, cluster: Cluster, user_token: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "jobmon"}
        token = user_token or cluster.service_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _call(self, cluster: Cluster, method: str, path: str, *, user_token: str | None = None,
                    json_body: object = None, params: dict | None = None) -> object:
        url = cluster.base_url + path
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().request(
                    method, url, data=None if json_body is None else orjson.dumps(json_body),
                    params=params, headers=self._headers(cluster, user_token), allow_redirects=False,
                ) as response:
                    status, body = response.status, await response.read()
        except TimeoutError:
            raise UpstreamError(
                f"Cluster '{cluster.id}' did not answer within {self.timeout:g} s", 408, "timeout"
            ) from None
        except aiohttp.ClientConnectorError:
            # no HTTP answer at all: recorded as 503, as a gateway would answer for it
            raise UpstreamError(
                f"Could not connect to cluster '{cluster.id}': the connection was refused or the "
                "host is unreachable", 503, "connection"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise UpstreamError(
                f"Lost the connection to cluster '{cluster.id}' before it answered ({reason})", 502, "connection"
            ) from None
        finally:
            self.in_flight -= 1
        if status >= 400:
            hint = _STATUS_HINTS.get(status, "the cluster refused the request")
            detail = _error_text(body)
            message = f"HTTP {status} from cluster '{cluster.id}': {hint}"
            raise UpstreamError(message + (f" ({detail})" if detail else ""), status, "http")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"Cluster '{cluster.id}' answered with malformed JSON", 502, "malformed"
            ) from None

    async def set_action(self, cluster: Cluster, action_name: str, action_code: int,
                         cids: list[str], request_id: str,
                         user_token: str | None = None) -> dict[str, CustomerResult]:
        """Run one batch; return each customer's outcome (a customer missing in the answer failed)."""
        body = await self._call(
            cluster, "POST", "/tms/v1/set-action", user_token=user_token,
            json_body={"action": action_name, "action_code": action_code,
                       "customer_ids": cids, "request_id": request_id},
        )
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise UpstreamError(f"Cluster '{cluster.id}' answered without a 'success' flag", 502, "malformed")
        if not body["success"]:
            reason = body.get("error") if isinstance(body.get("error"), str) else "no reason given"
            raise UpstreamError(f"Cluster '{cluster.id}' refused the Set Action: {reason[:200]}", 200, "rejected")
        results = body.get("results")
        if not isinstance(results, dict):
            raise UpstreamError(f"Cluster '{cluster.id}' answered without per-customer results", 502, "malformed")
        outcomes = {}
        for cid in cids:
            entry = results.get(cid)
            if isinstance(entry, dict) and entry.get("ok") is True:
                outcomes[cid] = CustomerResult(True)
            elif isinstance(entry, dict):
                error = entry.get("error")
                outcomes[cid] = CustomerResult(False, str(error)[:500] if error else "failed on the cluster")
            else:
                outcomes[cid] = CustomerResult(False, "the cluster's answer did not include this customer")
        return outcomes

    async def customer_states_page(self, cluster: Cluster, page: int,
                                   user_token: str | None = None) -> tuple[list[dict], int | None]:
        """One page of the cluster's global customer list and the next page number."""
        body = await self._call(cluster, "GET", "/tms/v1/customers/states",
                                params={"page": page}, user_token=user_token)
        if not isinstance(body, dict) or not isinstance(body.get("customers"), list):
            raise UpstreamError(f"Cluster '{cluster.id}' answered the states list malformed", 502, "malformed")
        next_page = body.get("next_page")
        if next_page is not None and (not isinstance(next_page, int) or next_page <= page):
            raise UpstreamError(f"Cluster '{cluster.id}' gave a bad next_page {next_page!r}", 502, "malformed")
        customers = [c for c in body["customers"] if isinstance(c, dict) and isinstance(c.get("cid"), str)]
        return customers, next_page

    async def appstatus_batch(self, cluster: Cluster, cids: list[str], app: str,
                              user_token: str | None = None) -> dict[str, dict]:
        """App status of many customers in one call."""
        body = await self._call(cluster, "POST", "/tms/v1/appstatus/batch",
                                json_body={"cids": cids, "app": app}, user_token=user_token)
        statuses = body.get("statuses") if isinstance(body, dict) else None
        if not isinstance(statuses, dict):
            raise UpstreamError(f"Cluster '{cluster.id}' answered app status malformed", 502, "malformed")
        return {cid: value for cid, value in statuses.items() if isinstance(value, dict)}

    async def appstatus_one(self, cluster: Cluster, cid: str, app: str,
                            user_token: str | None = None) -> dict:
        """App status of one customer (the fallback when the batch call is missing or fails)."""
        body = await self._call(cluster, "GET", f"/tms/v1/appstatus/{cid}",
                                params={"app": app}, user_token=user_token)
        if not isinstance(body, dict):
            raise UpstreamError(f"Cluster '{cluster.id}' answered app status malformed", 502, "malformed")
        return body

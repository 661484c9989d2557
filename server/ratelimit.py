"""Rate limits on the HTTP API: per token, per session, and per client address for anonymous requests.

Each principal has a bucket: `JOBMON_RATE_LIMIT` requests a minute on average, with bursts of
`JOBMON_RATE_BURST` (the generic cell rate algorithm: one number per principal, the time its
bucket will be empty again). A request over the limit is answered 429 with `Retry-After` (whole
seconds until the next request is allowed) and the error envelope, before any handler or database
work; a refused request does not count. One script hammering the API is refused alone: other
principals have buckets of their own.

Where the buckets live: with `JOBMON_REDIS_URL`, in Redis (one Lua script per request, on Redis's
own clock, so every node shares them); without, in this process (a single node). While Redis cannot
be reached, each node limits on its own in memory, and goes back to Redis a few seconds later.

The principal is found without the database: a bearer token's hash, once this node has seen the
token accepted (until then, and for a made-up token, the client address: rotating invented tokens
earns no fresh buckets), the session id inside a session cookie whose signature holds, else the
client address. Only the API is limited (`/api/...`, `/admin/...`): health, readiness,
metrics, pages and static files, the embedded simulator and the Socket.IO transports (which have
their own limiter, see realtime.namespace) are not.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import orjson
from starlette.requests import cookie_parser

from server.accounts.auth import SESSION_COOKIE, Authenticator
from server.errors import error_body

logger = logging.getLogger(__name__)

LIMITED_PREFIXES = ("/api/", "/admin/")
NOT_LIMITED_PREFIXES = ("/admin/socket.io",)  # a Socket.IO transport: it has its own limiter
MAX_KEYS = 100_000  # buckets kept in memory; past it, the empty ones are forgotten (then the oldest)
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, buckets stay in memory this long

# KEYS[1]: the bucket; ARGV: the interval between requests and the burst capacity, in microseconds.
# Returns 0 (allowed, counted) or the microseconds to wait. Redis's clock, so nodes' clocks do not matter.
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > capacity then
  return math.ceil(next_tat - now - capacity)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
"""


def is_limited(path: str) -> bool:
    """Whether requests to this path count against a principal's rate limit."""
    return path.startswith(LIMITED_PREFIXES) and not path.startswith(NOT_LIMITED_PREFIXES)


class MemoryBuckets:
    """The buckets of one process (the generic cell rate algorithm, times in seconds)."""

    def __init__(self, clock=time.monotonic, max_keys: int = MAX_KEYS):
        self.clock = clock
        self.max_keys = max_keys
        self._empty_at: dict[str, float] = {}  # key -> when its bucket is empty again

    def __repr__(self) -> str:
        return f"MemoryBuckets(keys={len(self._empty_at)})"

    def take(self, key: str, interval: float, capacity: float) -> float:
        """Count one request: 0.0 if allowed, else the seconds until one would be."""
        now = self.clock()
        empty_at = max(self._empty_at.get(key, now), now) + interval
        if empty_at - now > capacity:
            return empty_at - now - capacity
        if len(self._empty_at) >= self.max_keys and key not in self._empty_at:
            self._forget(now)
        self._empty_at[key] = empty_at
        return 0.0

    def _forget(self, now: float) -> None:
        self._empty_at = {k: t for k, t in self._empty_at.items() if t > now}
        while len(self._empty_at) >= self.max_keys:  # all busy: drop the oldest inserted
            del self._empty_at[next(iter(self._empty_at))]


class RateLimiter:
    """Finds a request's principal and takes one request from its bucket (Redis or memory)."""

    def __init__(self, auth: Authenticator, *, per_minute: int, burst: int, redis_url: str = "",
                 prefix: str = "jobmon"):
        self.auth = auth
        self.per_minute = per_minute
        self.burst = burst
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.capacity = self.interval * burst
        self.memory = MemoryBuckets()
        self._redis_url = redis_url
        self._prefix = f"{prefix}:ratelimit:"
        self._redis = None
        self._script = None
        self._redis_down_until = 0.0
        self._accepted_tokens: dict[str, None] = {}  # digests, oldest first (bounded by MAX_KEYS)

    def __repr__(self) -> str:
        where = "redis" if self._redis_url else "memory"
        return f"RateLimiter({self.per_minute}/min, burst={self.burst}, {where})"

    @property
    def enabled(self) -> bool:
        """False with JOBMON_RATE_LIMIT=0."""
        return self.per_minute > 0

    async def start(self) -> None:
        """Connect to Redis when configured (lazily: the first request opens the connection)."""
        if self._redis_url and self.enabled:
            import redis.asyncio as redis

            # short timeouts: a request waits for Redis at most this long, then the node limits alone
            self._redis = redis.from_url(self._redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._script = self._redis.register_script(GCRA_SCRIPT)

    async def stop(self) -> None:
        """Close the Redis connections."""
        if self._redis is not None:
            await self._redis.aclose()

    def principal_key(self, scope: dict) -> tuple[str, str | None]:
        """Who a request counts for, found without the database; and the digest of a bearer token
        this node has not seen accepted yet (until then it counts for the client address, so
        made-up tokens do not earn a bucket each)."""
        token = session = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credential.strip():
                    token = credential.strip()
            elif name == b"cookie" and session is None:
                cookie = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
                session = self.auth.unsign_session(cookie) if cookie else None
        if token is not None:  # as the authenticator does, a token wins over a cookie
            digest = _digest(token)
            if digest in self._accepted_tokens:
                return "token:" + digest, None
            return _address(scope), digest
        if session is not None:  # signed: a forged cookie has no session id
            return "session:" + _digest(session), None
        return _address(scope), None

    def token_accepted(self, digest: str) -> None:
        """A request with this token was not refused as unauthenticated: from now on it has its own bucket."""
        if len(self._accepted_tokens) >= MAX_KEYS:
            del self._accepted_tokens[next(iter(self._accepted_tokens))]
        self._accepted_tokens[digest] = None

    async def admit(self, scope: dict) -> tuple[int, str | None]:
        """Count this request: (0 if it may go on, else the whole seconds to wait, at least 1;
        the digest of a token to confirm with token_accepted once it is answered other than 401)."""
        key, unconfirmed = self.principal_key(scope)
        wait = None
        if self._script is not None and time.monotonic() >= self._redis_down_until:
            try:
                micros = await self._script(keys=[self._prefix + key],
                                            args=[round(self.interval * 1e6), round(self.capacity * 1e6)])
                wait = int(micros) / 1e6
            except Exception as exc:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                logger.error("rate limits: Redis failed (%s); limiting on this node alone, trying again in %s "
                             "seconds.", exc, REDIS_RETRY_SECONDS)
        if wait is None:
            wait = self.memory.take(key, self.interval, self.capacity)
        return (max(1, math.ceil(wait)) if wait > 0 else 0), unconfirmed


def _address(scope: dict) -> str:
    client = scope.get("client")
    return "address:" + (client[0] if client else "unknown")


def _digest(secret: str) -> str:
    """A short stand-in for a credential: neither memory nor Redis holds the credential itself."""
    return hashlib.blake2b(secret.encode(), digest_size=12).hexdigest()


class RateLimitMiddleware:
    """Answers 429 to a request over its principal's limit, before routing (ASGI)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and is_limited(scope["path"]):
            services = scope.get("state", {}).get("services")
            limiter: RateLimiter | None = services.limiter if services is not None else None
            if limiter is not None and limiter.enabled:
                wait, unconfirmed = await limiter.admit(scope)
                if wait:
                    return await _too_many(send, limiter, wait)
                if unconfirmed is not None:
                    return await self.app(scope, receive, _confirming(send, limiter, unconfirmed))
        await self.app(scope, receive, send)


def _confirming(send, limiter: RateLimiter, digest: str):
    """`send`, telling the limiter when the answer shows the token was accepted (not a 401)."""

    async def send_confirming(message):
        if message["type"] == "http.response.start" and message["status"] != 401:
            limiter.token_accepted(digest)
        await send(message)

    return send_confirming


async def _too_many(send, limiter: RateLimiter, wait: int) -> None:
    body = orjson.dumps(error_body(
        "rate_limited", f"Too many requests: at most {limiter.per_minute} a minute, in bursts of up to "
        f"{limiter.burst}; try again in {wait} s",
        {"retry_after": wait, "limit_per_minute": limiter.per_minute, "burst": limiter.burst}))
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(wait).encode())]})
    await send({"type": "http.response.body", "body": body})

"""Rate limits on the HTTP API: a runaway script gets 429 with Retry-After, everyone else carries on;
in one process, and across two nodes sharing Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from realtime_client import SioClient
from server.config import ConfigError, load_settings
from server.ratelimit import MemoryBuckets, RateLimiter, is_limited
from support import REDIS_URL, api_error, free_port, require_redis


def hammer(api, path: str, count: int, threads: int = 4) -> list:
    """`count` requests as fast as `threads` connections can send them."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: api.get(path), range(count)))


def introduce(*apis) -> None:
    """One request per token client: a token's first request on a node counts for the client address
    (a made-up token never gets further); once accepted, the token has a bucket of its own."""
    for api in apis:
        assert api.get("/api/auth/me").status_code == 200


def assert_refused(response) -> int:
    """A 429 as the API gives it: the envelope, a whole number of seconds in Retry-After."""
    error = api_error(response, 429)
    assert error["code"] == "rate_limited" and "a minute" in error["message"]
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert error["details"]["retry_after"] == int(retry_after)
    assert response.headers["x-content-type-options"] == "nosniff"  # the usual headers too
    return int(retry_after)


def test_a_runaway_script_is_refused_while_another_users_dashboard_carries_on(make_server):
    server = make_server(RATE_LIMIT=600, RATE_BURST=20)
    script_owner, other = server.create_user("script-owner"), server.create_user("dashboard-user")
    script = server.client(token=server.create_token(script_owner, "read"))
    dashboard = server.client(other)  # a browser session
    with ThreadPoolExecutor(1) as pool:
        hammering = pool.submit(hammer, script, "/api/jobs/mine", 300)
        seen = [dashboard.get(path) for path in ("/api/auth/me", "/api/jobs/mine", "/api/stats/mine") * 3]
        answers = hammering.result()
    assert [r.status_code for r in seen] == [200] * 9
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) >= 100 and all(r.status_code in (200, 429) for r in answers)
    assert {assert_refused(r) for r in refused} == {1}  # 600 a minute: one more every 0.1 s
    assert dashboard.get("/api/jobs/mine").status_code == 200
    # the refused requests were counted, by route template
    metrics = server.client().get("/metrics").text
    assert f'jobmon_http_requests_total{{method="GET",route="/api/jobs/mine",status="429"}} {len(refused)}.0' in metrics


def test_a_refused_script_that_waits_as_told_gets_through(make_server):
    server = make_server(RATE_LIMIT=120, RATE_BURST=2)  # one request every 0.5 s after two at once
    user = server.create_user("patient")
    api = server.client(token=server.create_token(user, "read"))
    introduce(api)
    assert [api.get("/api/jobs/mine").status_code for _ in range(2)] == [200, 200]
    refused = api.get("/api/jobs/mine")
    time.sleep(assert_refused(refused))
    assert api.get("/api/jobs/mine").status_code == 200


def test_each_token_and_session_has_its_own_bucket_and_anonymous_requests_share_their_address(make_server):
    server = make_server(RATE_LIMIT=6, RATE_BURST=3)  # one more every 10 s: none during the test
    user = server.create_user("two-credentials")
    tokens = [server.create_token(user, "read") for _ in range(2)]
    anonymous = server.client()
    assert [anonymous.get("/api/jobs/mine").status_code for _ in range(2)] == [401, 401]
    server.client(user)  # logging in is the address's third anonymous request
    assert_refused(anonymous.get("/api/jobs/mine"))
    # a login from the same address is anonymous too: refused before the password is checked
    assert_refused(server.client().login(user["username"], user["password"]))
    # a made-up token, or a forged session cookie, counts for the address: refused as well
    assert_refused(server.client(token="jm_made-up-token").get("/api/jobs/mine"))
    forged = server.client()
    forged.http.cookies.set("jobmon_session", "forged.cookie.value")
    assert_refused(forged.get("/api/jobs/mine"))
    # so does a real token's first request on a node
    assert_refused(server.client(token=tokens[0]).get("/api/jobs/mine"))

    other_node = make_server(RATE_LIMIT=6, RATE_BURST=3)  # same database, buckets of its own
    first, second = (other_node.client(token=token) for token in tokens)
    browser = other_node.client(user)
    introduce(first, second)  # with the login, the address's three
    for api in (first, second, browser):
        codes = [api.get("/api/jobs/mine").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429], codes


@pytest.mark.asyncio
async def test_what_must_stay_reachable_is_not_limited(make_server):
    server = make_server(RATE_LIMIT=6, RATE_BURST=1)
    user = await asyncio.to_thread(server.create_user, "wallboard")
    token = await asyncio.to_thread(server.create_token, user, "read")
    api = server.client(token=token)
    await asyncio.to_thread(introduce, api)  # the address's one request
    assert (await asyncio.to_thread(api.get, "/api/jobs/mine")).status_code == 200  # the token's one
    assert_refused(await asyncio.to_thread(api.get, "/api/jobs/mine"))
    anonymous = server.client()
    assert_refused(await asyncio.to_thread(anonymous.get, "/api/auth/me"))
    for path in ("/healthz", "/readyz", "/metrics", "/", "/wallboard", "/web/js/socket.js") * 3:
        assert (await asyncio.to_thread(anonymous.get, path)).status_code == 200, path
        assert (await asyncio.to_thread(api.get, path)).status_code == 200, path
    # the Socket.IO transport (polling, then the WebSocket) has its own limiter
    socket = await SioClient().connect(server.url, token=token, transports=("polling", "websocket"))
    try:
        assert "counts" in await socket.call("get-stats")
    finally:
        await socket.close()


def test_hostile_credentials_are_counted_not_crashed_on(make_server):
    server = make_server(RATE_LIMIT=6, RATE_BURST=2)
    api = server.client()
    for headers in ({"Authorization": "Bearer " + "x" * 8000}, {"Authorization": "Bearer \u00e9t\u00e9".encode()},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Cookie": "jobmon_session=" + "y" * 4000},
                    {"Cookie": "jobmon_session=\"; other=;;="}):
        answers = [api.get("/api/auth/me", headers=headers) for _ in range(3)]
        assert [r.status_code for r in answers][:2] == [401, 401] or answers[0].status_code == 429, headers
        assert all(r.status_code in (401, 429) for r in answers), headers
        assert "error" in answers[-1].json()


def test_limits_off_with_zero(make_server):
    server = make_server(RATE_LIMIT=0, RATE_BURST=1)
    anonymous = server.client()
    assert {r.status_code for r in hammer(anonymous, "/api/auth/me", 50)} == {401}


def test_only_the_api_is_limited():
    for path in ("/api/jobs/mine", "/api/auth/login", "/admin/jobs", "/admin/jobs/stats"):
        assert is_limited(path), path
    for path in ("/", "/wallboard", "/web/js/app.js", "/healthz", "/readyz", "/metrics", "/socket.io/",
                 "/admin/socket.io/", "/sim/tms/v1/set-action", "/apix"):
        assert not is_limited(path), path


def test_memory_buckets_pace_bursts_and_forget_idle_keys():
    now = [1000.0]
    buckets = MemoryBuckets(clock=lambda: now[0], max_keys=3)
    interval, capacity = 0.5, 0.5 * 3  # 120 a minute, bursts of 3
    assert [buckets.take("a", interval, capacity) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", interval, capacity) == pytest.approx(0.5)
    assert buckets.take("b", interval, capacity) == 0.0  # another key is untouched
    now[0] += 0.5
    assert buckets.take("a", interval, capacity) == 0.0  # one more allowed after one interval
    assert buckets.take("a", interval, capacity) == pytest.approx(0.5)
    assert buckets.take("c", interval, capacity) == 0.0
    now[0] += 10  # every bucket is full again: the next new key makes room by forgetting them
    assert buckets.take("d", interval, capacity) == 0.0
    assert len(buckets._empty_at) == 1
    for key in "efg":  # all busy at the cap: the oldest goes
        buckets.take(key, interval, capacity)
    assert list(buckets._empty_at) == ["e", "f", "g"]


@pytest.mark.parametrize("name, raw", [("RATE_LIMIT", "-1"), ("RATE_LIMIT", "fast"), ("RATE_BURST", "0"),
                                       ("RATE_BURST", "1.5")])
def test_wrong_rate_settings_stop_start_up_naming_the_variable(tmp_path, name, raw):
    with pytest.raises(ConfigError, match=f"JOBMON_{name}"):
        load_settings({"JOBMON_DATA_DIR": str(tmp_path), f"JOBMON_{name}": raw})


def test_limits_are_on_by_default(tmp_path):
    settings = load_settings({"JOBMON_DATA_DIR": str(tmp_path)})
    assert (settings.rate_limit, settings.rate_burst) == (600, 120)


# -- across nodes ----------------------------------------------------------------------------
@pytest.fixture
def redis_nodes(make_server):
    """Two nodes on one database and the shared Redis, under a channel (and key prefix) of their own."""
    require_redis()
    env = {"REDIS_URL": REDIS_URL, "REDIS_CHANNEL": f"test-{uuid.uuid4().hex[:8]}", "RATE_LIMIT": 6,
           "RATE_BURST": 6}
    return make_server(**env), make_server(**env)


@pytest.mark.redis
def test_two_nodes_share_each_principals_bucket_through_redis(redis_nodes):
    node_a, node_b = redis_nodes
    script_owner, other = node_a.create_user("script-owner"), node_a.create_user("dashboard-user")
    token = node_a.create_token(script_owner, "read")
    on_a, on_b = node_a.client(token=token), node_b.client(token=token)
    introduce(on_a, on_b)
    # bursts of 6 (then one every 10 s): with a bucket per node 12 would get through, shared only 6
    answers = [(on_a if i % 2 else on_b).get("/api/jobs/mine") for i in range(24)]
    assert [r.status_code for r in answers].count(200) == 6, [r.status_code for r in answers]
    for response in answers:
        if response.status_code != 200:
            assert 1 <= assert_refused(response) <= 10
    dashboard = node_b.client(other)
    assert [dashboard.get("/api/jobs/mine").status_code for _ in range(5)] == [200] * 5


@pytest.mark.asyncio
async def test_while_redis_is_unreachable_each_node_limits_on_its_own(caplog):
    class Auth:  # only unsign_session is used, for cookies (none here)
        def unsign_session(self, cookie):
            return None

    limiter = RateLimiter(Auth(), per_minute=60, burst=2, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                          prefix=f"test-{uuid.uuid4().hex[:8]}")
    await limiter.start()
    try:
        scope = {"headers": [(b"authorization", b"Bearer some-token")], "client": ("10.0.0.1", 1)}
        assert [(await limiter.admit(scope))[0] for _ in range(3)] == [0, 0, 1]
        assert "limiting on this node alone" in caplog.text
    finally:
        await limiter.stop()

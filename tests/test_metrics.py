"""/metrics: what a Prometheus scrape finds after real requests, a real job against the simulated
cluster and a connected Socket.IO client, parsed with prometheus_client's own parser; and who may
scrape it."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime_client import Refused, SioClient, session_cookie, start
from server.config import ConfigError, load_settings
from support import api_error

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"


def scrape(api, **kwargs) -> dict[str, list]:
    """The families of a scrape by name, each a list of samples."""
    response = api.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(families: dict, sample_name: str, **labels) -> float:
    """The value of the one sample with this name and these labels (0 when there is none)."""
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = [s.value for s in families.get(family, []) if s.name == sample_name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


@pytest.mark.own_server  # jobmon_jobs counts every user's jobs
@pytest.mark.asyncio
async def test_a_scrape_shows_requests_upstream_calls_deliveries_sockets_and_cache(server, alice, sim):
    api = server.client(alice)
    anonymous = server.client()
    before = await asyncio.to_thread(scrape, anonymous)
    assert value(before, "jobmon_upstream_calls_total", cluster="sim", operation="set_action", outcome="ok") == 0
    socket = await SioClient().connect(server.url, cookie=session_cookie(api))
    with pytest.raises(Refused):
        await SioClient().connect(server.url, token="no-such-token")
    try:
        during = await asyncio.to_thread(scrape, anonymous)
        assert value(during, "jobmon_node_sockets") == 1
        job = await start(api, ["C1", "C2", "C3"])
        await socket.wait_finished(job["job_id"])
        sim.knobs(set_action_status=500)
        failed = await start(api, ["C4"])
        await socket.wait_finished(failed["job_id"])
        for _ in range(2):  # a miss per customer, then a hit per customer
            assert (await asyncio.to_thread(api.get, f"/api/jobs/{job['job_id']}/appstatus")).status_code == 200
        assert (await asyncio.to_thread(api.get, f"/api/jobs/{job['job_id']}")).status_code == 200
        assert (await asyncio.to_thread(api.get, "/api/jobs/not-a-uuid")).status_code == 400
        assert (await asyncio.to_thread(anonymous.get, "/no/such/page")).status_code == 404
        assert (await asyncio.to_thread(anonymous.get, "/web/js/socket.js")).status_code == 200
        f = await asyncio.to_thread(scrape, anonymous)
    finally:
        await socket.close()

    requests = [s for s in f["jobmon_http_requests"] if s.name == "jobmon_http_requests_total"]
    assert value(f, "jobmon_http_requests_total", method="POST", route="/api/set-actions", status="202") == 2
    assert value(f, "jobmon_http_requests_total", method="GET", route="/api/jobs/{job_id}", status="200") >= 1
    assert value(f, "jobmon_http_requests_total", method="GET", route="/api/jobs/{job_id}", status="400") == 1
    assert value(f, "jobmon_http_requests_total", method="GET", route="/api/jobs/{job_id}/appstatus",
                 status="200") == 2
    assert value(f, "jobmon_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(f, "jobmon_http_requests_total", method="GET", route="/web/{path}", status="200") == 1
    assert value(f, "jobmon_http_requests_total", method="GET", route="/metrics", status="200") == 2
    # labels are templates: no job id, no raw path, ever
    routes = {s.labels["route"] for s in requests}
    assert not any(job["job_id"] in r or "not-a-uuid" in r or "/no/such" in r for r in routes), routes
    assert value(f, "jobmon_http_request_duration_seconds_count", method="POST", route="/api/set-actions") == 2

    assert value(f, "jobmon_upstream_calls_total", cluster="sim", operation="set_action", outcome="ok") == 1
    assert value(f, "jobmon_upstream_calls_total", cluster="sim", operation="set_action", outcome="http") == 1
    assert value(f, "jobmon_upstream_call_duration_seconds_count", cluster="sim", operation="set_action") == 2
    assert value(f, "jobmon_upstream_calls_total", cluster="sim", operation="appstatus_batch", outcome="ok") == 1

    assert value(f, "jobmon_appstatus_cache_lookups_total", cluster="sim", result="miss") == 3
    assert value(f, "jobmon_appstatus_cache_lookups_total", cluster="sim", result="hit") == 3

    # every job-update of both jobs reached the one socket (created, progress, status...)
    assert value(f, "jobmon_fanout_deliveries_total") >= len(socket.updates()) >= 4
    assert value(f, "jobmon_fanout_dropped_events_total", reason="queue_full") == 0
    assert value(f, "jobmon_fanout_queue_depth") == 0
    assert value(f, "jobmon_socketio_connects_total", outcome="accepted") == 1
    assert value(f, "jobmon_socketio_connects_total", outcome="refused") == 1

    assert value(f, "jobmon_jobs", status="SUCCESS") == 1 and value(f, "jobmon_jobs", status="FAILED") == 1
    assert value(f, "jobmon_node_running_jobs") == 0

    after = await asyncio.to_thread(scrape, anonymous)  # the socket closed meanwhile
    assert value(after, "jobmon_socketio_disconnects_total") == 1 and value(after, "jobmon_node_sockets") == 0


def test_each_app_counts_its_own_requests(make_server):
    first, second = make_server(), make_server()
    for _ in range(3):
        assert first.client().get("/healthz").status_code == 200
    assert value(scrape(first.client()), "jobmon_http_requests_total", method="GET", route="/healthz",
                 status="200") == 3
    assert value(scrape(second.client()), "jobmon_http_requests_total", method="GET", route="/healthz",
                 status="200") == 0


def test_a_made_up_method_is_not_a_label_of_its_own(make_server):
    server = make_server()
    api = server.client()
    for method in ("PROPFIND", "MKCOL", "LOCK"):  # methods the HTTP parser knows, no route takes
        assert api.http.request(method, "/healthz").status_code == 405
    families = scrape(api)  # (a scrape is counted once answered: in the next one)
    assert {s.labels.get("method") for s in families["jobmon_http_requests"]} == {"other"}
    assert value(families, "jobmon_http_requests_total", method="other", route="/healthz", status="405") == 3


def test_a_scrape_token_is_asked_for_when_configured(make_server):
    server = make_server(METRICS_TOKEN=SCRAPE_TOKEN)
    anonymous = server.client()
    assert api_error(anonymous.get("/metrics"), 401)["code"] == "invalid_token"
    for header in (f"Bearer {SCRAPE_TOKEN}x", f"Basic {SCRAPE_TOKEN}", SCRAPE_TOKEN, "Bearer", "Bearer " + "é" * 40):
        response = anonymous.get("/metrics", headers={"Authorization": header.encode("utf-8")})
        assert api_error(response, 401)["code"] == "invalid_token", header
    user = server.create_user("scraper", role="admin")
    user_token = server.create_token(user, "admin")  # an API token is not the scrape token
    assert anonymous.get("/metrics", headers={"Authorization": f"Bearer {user_token}"}).status_code == 401
    families = scrape(anonymous, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert "jobmon_jobs" in families
    assert anonymous.get("/healthz").status_code == 200  # the rest is unchanged


def test_metrics_off_is_a_404(make_server):
    server = make_server(METRICS="off")
    assert api_error(server.client().get("/metrics"), 404)["code"] == "not_found"


@pytest.mark.parametrize("name, raw", [("METRICS", "maybe"), ("METRICS_TOKEN", "short"),
                                       ("METRICS_TOKEN", "changeme"), ("METRICS_TOKEN", "has a space in it....")])
def test_wrong_metrics_settings_stop_start_up_naming_the_variable(tmp_path, name, raw):
    with pytest.raises(ConfigError, match=f"JOBMON_{name}"):
        load_settings({"JOBMON_DATA_DIR": str(tmp_path), f"JOBMON_{name}": raw})

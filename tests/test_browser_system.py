"""Admin → System in headless Chromium: the node table stays live without a reload as nodes come,
work and go. Screenshots as in tests/test_browser.py ($JOBMON_SCREENSHOTS, else a temporary folder)."""

from __future__ import annotations

import time

import pytest

from support import require_chromium
from test_browser import (  # noqa: F401 (fixtures)
    assert_not_reloaded, backend, browser, chromium, expect, log_in, mark_page, new_user, off_loop, shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(autouse=True)
def chromium_present():
    require_chromium()


def node_id_of(server, admin) -> str:
    """The id the server reports itself under (asked as the admin, through its own API)."""
    api = server.client(admin)
    deadline = time.monotonic() + 10
    while True:
        answer = api.get("/admin/system").json()
        if answer["this_node"] in {n["node_id"] for n in answer["nodes"]} or time.monotonic() > deadline:
            return answer["this_node"]
        time.sleep(0.05)


def test_the_admin_watches_nodes_come_work_and_go_without_a_reload(make_server, sim, browser):
    a = make_server(SYSTEM_INTERVAL=0.5)
    admin = new_user(a, "root", role="admin")
    carol = new_user(a, "carol")
    page = browser().page()
    log_in(page, a, admin)
    page.click("#nav-admin")
    page.click("#admin-tab-system")
    a_id = off_loop(node_id_of, a, admin)
    a_row = page.locator(f'#admin-nodes tr[data-node-id="{a_id}"]')
    expect(a_row).to_have_attribute("data-state", "live")
    expect(a_row).to_contain_text("(this node)")
    expect(a_row.locator("td").nth(5)).to_have_text("1")  # this page's own socket
    expect(a_row.locator("td").nth(3)).to_contain_text("MB")
    mark_page(page)

    # a second node on the same database appears, live
    b = off_loop(make_server, SYSTEM_INTERVAL=0.5)
    b_id = off_loop(node_id_of, b, admin)
    b_row = page.locator(f'#admin-nodes tr[data-node-id="{b_id}"]')
    expect(b_row).to_have_attribute("data-state", "live")
    expect(page.locator("#admin-system-summary")).to_contain_text("2 live · 0 gone")

    # a job on a slow cluster: one node shows it running, with its upstream call in flight
    sim.knobs(latency_ms=3000)
    job = off_loop(lambda: a.client(carol).start(["N1"]))
    running = page.locator("#admin-nodes tbody tr").filter(has=page.locator("td:nth-child(7)", has_text="1"))
    expect(running).to_have_count(1)
    expect(running.locator("td").nth(8)).to_have_text("1")
    shot(page, "admin-system")
    sim.knobs(latency_ms=0)
    off_loop(lambda: a.client(carol).wait_for(job["job_id"]))

    # node b stops: it is shown as gone, with when it was last seen
    off_loop(b.stop)
    expect(b_row).to_have_attribute("data-state", "gone")
    expect(b_row).to_contain_text("s ago")
    expect(page.locator("#admin-system-summary")).to_contain_text("1 live · 1 gone")
    expect(a_row).to_have_attribute("data-state", "live")
    assert_not_reloaded(page)

    # leaving the section stops the polling
    page.click("#admin-tab-stats")
    requests = []
    page.on("request", lambda request: requests.append(request.url) if "/admin/system" in request.url else None)
    page.wait_for_timeout(2500)
    assert requests == []


def test_a_user_who_is_not_an_admin_is_told_so(make_server, browser):
    server = make_server()
    dave = new_user(server, "dave")
    page = browser().page()
    log_in(page, server, dave)
    page.goto(server.url + "/#/admin/system")
    expect(page.locator("main")).to_contain_text("Admins only")
    assert page.locator("#admin-nodes").count() == 0

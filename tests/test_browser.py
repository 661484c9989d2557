"""The dashboard and the wallboard in real headless Chromium (Playwright), against a real server.

Each test acts as a person would: logs in through the form, clicks, types, uploads, hovers, and
asserts what the page shows. The simulated cluster runs on its own port with knobs for latency and
failures. Screenshots of each page go to $JOBMON_SCREENSHOTS (`make screenshots`: docs/, which the
README shows), else to a temporary folder. SQLite only: the backends
are covered by the API tests; here the browser is what is under test.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import require_chromium

# a server each: the pages show every user's figures to the admin, and one test restarts its server
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.own_server]

# the README's screenshots are rewritten by `make screenshots`; other runs keep theirs elsewhere
SCREENSHOTS = Path(os.environ.get("JOBMON_SCREENSHOTS") or Path(tempfile.gettempdir()) / "jobmon-screenshots")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture
def backend():
    """SQLite only (overrides conftest's backend parameter)."""
    return "sqlite"


@pytest.fixture(scope="module")
def chromium():
    path = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Browser:
    """A browser context (one cookie jar) whose pages fail the test on script errors or CSP refusals."""

    def __init__(self, chromium):
        self.context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.errors: list[str] = []

    def page(self):
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

        def console(message):
            text = message.text
            if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
                self.errors.append(f"CSP: {text}")

        page.on("console", console)
        return page

    def close(self):
        self.context.close()


@pytest.fixture
def browser(chromium):
    opened: list[Browser] = []

    def make() -> Browser:
        b = Browser(chromium)
        opened.append(b)
        return b

    yield make
    errors = [error for b in opened for error in b.errors]
    for b in opened:
        b.close()
    assert not errors, errors


def off_loop(fn, *args, **kwargs):
    """Call fn in a thread of its own: Playwright's sync API keeps an event loop running in this one,
    and the server helpers that touch the database use asyncio.run()."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def new_user(server, name: str, role: str = "user") -> dict:
    return off_loop(server.create_user, name, role)


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def dismiss_toasts(page) -> None:
    """Close the alert toasts (they would cover the page in a screenshot)."""
    while page.locator(".toast-close").count():
        page.locator(".toast-close").first.click()


def log_in(page, server, user) -> None:
    page.goto(server.url + "/")
    page.fill("#login-username", user["username"])
    page.fill("#login-password", user["password"])
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text(user["username"])
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def job_row(page, job_id: str):
    return page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')


def mark_page(page) -> None:
    """Set a flag that a reload would wipe out."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


# -- tests -----------------------------------------------------------------------------------------

def test_new_user_starts_set_actions_typed_and_from_csv_and_watches_them_live(make_server, sim, browser):
    server = make_server(BATCH_SIZE=1, MAX_CIDS=50)
    carol = new_user(server, "carol")
    b = browser()
    page = b.page()

    page.goto(server.url + "/")
    expect(page.locator("#login-username")).to_be_focused()
    page.click(".login-form button[type=submit]")
    expect(page.locator("#login-username-error")).to_have_text("Enter your username.")
    page.fill("#login-username", "carol")
    page.fill("#login-password", "wrong password")
    page.click(".login-form button[type=submit]")
    expect(page.locator(".login-form [role=alert]")).to_have_text("Wrong username or password")
    shot(page, "login")
    page.fill("#login-password", carol["password"])
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("carol")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#conn")).to_have_text("Live")
    mark_page(page)

    # validation next to the field: nothing typed, a malformed CID, then more CIDs than the server takes
    page.click("nav >> text=New Set Action")
    page.click("#na-review")
    expect(page.locator("#na-cids-error")).to_have_text("Enter at least one customer ID.")
    expect(page.locator("#na-cids")).to_have_attribute("aria-invalid", "true")
    page.fill("#na-cids", "C1\nbad/cid")
    page.click("#na-review")
    expect(page.locator("#na-cids-error")).to_contain_text('1 invalid customer ID(s), e.g. "bad/cid"')
    page.fill("#na-cids", "\n".join(f"C{i}" for i in range(60)))
    page.click("#na-review")
    expect(page.locator("#na-count")).to_have_text("60 customers")
    page.click("#na-confirm")
    expect(page.locator("#na-cids-error")).to_contain_text("Too many customer IDs")

    # typed CIDs (one per line and comma-separated, one repeated): confirm shows the count the server uses
    sim.knobs(latency_ms=2500)
    page.fill("#na-cids", "C1\nC2, C3\nC3")
    page.select_option("#na-action", "PE-Enable")
    page.click("#na-review")
    expect(page.locator("#na-confirm-text")).to_contain_text("Run PE-Enable on 3 customers on Cluster sim (sim)?")
    expect(page.locator("#na-confirm-panel .cid-preview li")).to_have_text(["C1", "C2", "C3"])
    shot(page, "new-set-action")
    page.click("#na-confirm")
    job_id = page.locator("#na-job-id").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id)
    expect(page.locator("#na-result .status")).to_have_attribute("data-status", re.compile("QUEUED|IN_PROGRESS"))

    page.click("text=See it in My jobs")
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", "IN_PROGRESS")
    expect(row.locator("progress.bar")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("IN PROGRESS")
    expect(row).to_have_attribute("data-status", "SUCCESS", timeout=20_000)
    expect(row.locator(".badge")).to_have_text("SUCCESS")
    expect(row).to_contain_text("3 / 3")
    assert_not_reloaded(page)

    # a CSV upload started in one tab appears live in another tab's table
    watcher = b.page()
    watcher.goto(server.url + "/#/jobs")
    expect(watcher.locator("#conn")).to_have_attribute("data-state", "live")
    mark_page(watcher)
    sim.knobs(latency_ms=1500)
    page.click("nav >> text=New Set Action")
    page.check("#na-mode-csv")
    page.set_input_files("#na-file", files=[{"name": "customers.csv", "mimeType": "text/csv",
                                              "buffer": b"customer_id,region\nD1,north\nD2,south\nD3,east\nD4,west\n"}])
    page.click("#na-review")
    expect(page.locator("#na-confirm-text")).to_contain_text("4 customers")
    expect(page.locator("#na-confirm-text")).to_contain_text("customers.csv")
    page.click("#na-confirm")
    csv_job_id = page.locator("#na-job-id").inner_text()
    csv_row = job_row(watcher, csv_job_id)
    expect(csv_row).to_be_visible()
    expect(watcher.locator("#jobs-table tbody tr").first).to_have_attribute("data-job-id", csv_job_id)
    expect(csv_row).to_have_attribute("data-status", "SUCCESS", timeout=20_000)
    expect(csv_row).to_contain_text("4 / 4")
    assert_not_reloaded(watcher)

    # job detail: customers grouped by outcome and HTTP status, the customer list, the scoped links
    page.click("#na-job-id")
    expect(page.locator("#job-fields")).to_contain_text("CSV upload")
    summary = page.locator("#customer-summary tbody tr")
    expect(summary).to_have_count(1)
    expect(summary.first).to_contain_text("SUCCESS")
    expect(summary.first).to_contain_text("200")
    expect(summary.first).to_contain_text("4")
    expect(page.locator("#customer-list tbody tr")).to_have_count(4)
    expect(page.locator("text=App status")).to_have_attribute("href", f"#/scope/apps?job={csv_job_id}")
    shot(page, "job-detail")

    # cancel a running job from its detail page: the customers not yet sent are skipped
    api = off_loop(server.client, carol)
    sim.knobs(latency_ms=1000)
    long_job = api.start([f"L{i}" for i in range(16)])  # four rounds of four batches of one
    page.goto(f"{server.url}/#/jobs/{long_job['job_id']}")
    expect(page.locator(".job-title .status")).to_have_attribute("data-status", "IN_PROGRESS")
    page.click("#job-cancel")
    expect(page.locator(".job-title .status")).to_have_attribute("data-status", "CANCELLED")
    expect(page.locator("#customer-summary")).to_contain_text("SKIPPED")
    # ... and can be sent in a new job
    sim.knobs(latency_ms=0)
    cancelled_job = api.job(long_job["job_id"])
    unsent = cancelled_job["customer_count"] - cancelled_job["done"]
    expect(page.locator("#job-retry")).to_have_count(0)  # nothing failed
    page.click(f"#job-retry-unsent >> text=Send the {unsent} unsent customers")
    expect(page).not_to_have_url(re.compile(long_job["job_id"]))
    expect(page.locator(".job-title .status")).to_have_attribute("data-status", "SUCCESS")
    expect(page.locator("#job-fields")).to_contain_text("Retry of")
    expect(page.locator("#customer-list tbody tr")).to_have_count(unsent)

    # CSV export of the list
    with watcher.expect_download() as download:
        watcher.click("#export-csv")
    text = download.value.path().read_text()
    assert text.startswith("job_id,action_name,cluster,status")
    assert job_id in text and csv_job_id in text


def test_failed_and_partial_jobs_show_the_error_in_a_tooltip(server, sim, browser):
    dave = new_user(server, "dave")
    page = browser().page()
    log_in(page, server, dave)
    mark_page(page)
    api = server.client(dave)

    sim.knobs(set_action_status=401)
    failed = api.wait_for(api.start(["F1"])["job_id"])
    hostile = "<img src=x onerror=window.__xss=1> locked"
    sim.knobs(set_action_status=None, fail_cids={"P2": hostile})
    partial = api.wait_for(api.start(["P1", "P2"])["job_id"])
    assert failed["status"] == "FAILED" and partial["status"] == "PARTIAL"

    # both rows arrived live (the table was open before the jobs existed)
    failed_row = job_row(page, failed["job_id"])
    expect(failed_row).to_have_attribute("data-status", "FAILED")
    expect(job_row(page, partial["job_id"])).to_have_attribute("data-status", "PARTIAL")
    assert_not_reloaded(page)

    tip = page.locator("#tooltip")
    expect(tip).to_be_hidden()
    failed_row.locator(".badge").hover()
    expect(tip).to_be_visible()
    # the server's explanation, shown as is: it already starts with the status, so not twice
    assert failed["error_message"].startswith("HTTP 401 from cluster 'sim': ")
    expect(tip).to_have_text(failed["error_message"])
    # screen readers get the same text as the badge's description
    described = failed_row.locator(".badge").get_attribute("aria-describedby")
    expect(page.locator(f"#{described}")).to_have_text(failed["error_message"])
    shot(page, "my-jobs")
    page.mouse.move(5, 5)
    expect(tip).to_be_hidden()

    # keyboard: the badge takes focus and shows the tooltip, Escape hides it; untrusted text stays text
    partial_row = job_row(page, partial["job_id"])
    partial_row.locator(".badge").focus()
    expect(tip).to_be_visible()
    expect(tip).to_have_text(f"HTTP 200 - {partial['error_message']}")
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()
    assert hostile in partial["error_message"]
    assert page.evaluate("window.__xss") is None
    assert page.locator("#jobs-table img").count() == 0

    # the status filter narrows the list
    page.check("#filter-status-FAILED")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"#/jobs\?status=FAILED$"))

    # stats cards and the 7-day chart
    page.click("nav >> text=Stats")
    expect(page.locator("#stat-today")).to_have_text("2")
    expect(page.locator("#stat-today-failed")).to_have_text("2")
    expect(page.locator("#stat-success-rate")).to_have_text("0.0 %")
    expect(page.locator("#daily-chart canvas")).to_be_visible()
    expect(page.locator("#daily-table tbody tr")).to_have_count(7)
    expect(page.locator("#daily-table tbody tr").last).to_contain_text("2")
    dismiss_toasts(page)
    shot(page, "stats")

    # retry the failed customers from the job detail page
    sim.knobs(fail_cids={})
    page.goto(f"{server.url}/#/jobs/{partial['job_id']}")
    page.click("#job-retry")
    expect(page.locator("#job-fields")).to_contain_text("Retry of")
    expect(page.locator("#job-fields")).to_contain_text(partial["job_id"])
    expect(page.locator(".page-head .status")).to_have_attribute("data-status", "SUCCESS")


def test_scoped_views_show_exactly_one_jobs_customers_with_cache_figures(server, sim, browser):
    erin = new_user(server, "erin")
    api = server.client(erin)
    job = api.wait_for(api.start(["C000001", "C000002", "C000003"], action="PE-Enable")["job_id"])
    api.wait_for(api.start(["C000009"], action="T-Enable")["job_id"])
    page = browser().page()
    log_in(page, server, erin)

    page.click("nav >> text=Scoped views")
    page.select_option("#scope-job", job["job_id"])
    expect(page).to_have_url(re.compile(rf"#/scope/customers\?job={job['job_id']}$"))
    rows = page.locator("#actions-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("C000001")
    expect(rows.first).to_contain_text("PE_ENABLED")
    expect(page.locator("#actions-table")).not_to_contain_text("C000009")
    expect(page.locator("#actions-summary")).to_contain_text("3 customers: 3 known")
    shot(page, "scope-customer-status")

    page.click("#tab-apps")
    rows = page.locator("#appstatus-table tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#appstatus-misses")).to_have_text("3")
    expect(page.locator("#appstatus-hits")).to_have_text("0")
    expect(rows.first.locator("td").nth(4)).to_have_text("no")
    page.click("#appstatus-refresh")
    expect(page.locator("#appstatus-hits")).to_have_text("3")
    expect(page.locator("#appstatus-misses")).to_have_text("0")
    expect(rows.first.locator("td").nth(4)).to_have_text("yes")
    expect(rows.first.locator("td").nth(5)).not_to_be_empty()
    expect(page.locator("#cache-stats")).to_contain_text("3 hits, 3 misses")
    page.click("#appstatus-bypass")
    expect(page.locator("#appstatus-misses")).to_have_text("3")
    expect(rows.first.locator("td").nth(4)).to_have_text("no")
    cached_at = rows.first.locator("td").nth(5).inner_text()

    # another client's refresh reaches this page as appstatus-update, live: new cached-at times
    time.sleep(1.1)  # the times shown have a one-second resolution
    answer = api.get(f"/api/jobs/{job['job_id']}/appstatus", params={"skip_cache": "true"})
    assert answer.status_code == 200, answer.text
    expect(rows.first.locator("td").nth(5)).not_to_have_text(cached_at)
    expect(page.locator("#appstatus-source")).to_contain_text("Live update")
    shot(page, "scope-app-status")


def test_a_second_users_jobs_never_appear(server, sim, browser):
    alice = new_user(server, "alice")
    bob = new_user(server, "bob")
    page = browser().page()
    log_in(page, server, alice)
    bob_api, alice_api = server.client(bob), server.client(alice)

    bobs = bob_api.wait_for(bob_api.start(["B1", "B2"])["job_id"])
    # alice's own job, started after bob's, is the barrier: once it shows, bob's would have too
    alices = alice_api.wait_for(alice_api.start(["A1"])["job_id"])
    expect(job_row(page, alices["job_id"])).to_have_attribute("data-status", "SUCCESS")
    assert bobs["job_id"] not in page.content()
    page.reload()
    expect(job_row(page, alices["job_id"])).to_be_visible()
    assert bobs["job_id"] not in page.locator("main").inner_text()
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)

    # search by CID (bob's CIDs find nothing here), then keyset pages of ten
    page.fill("#filter-q", "B1")
    page.press("#filter-q", "Enter")
    expect(page.locator("#jobs-table")).to_contain_text("No job matches these filters.")
    page.fill("#filter-q", "A1")
    page.press("#filter-q", "Enter")
    expect(page.locator("#jobs-table tbody tr[data-job-id]")).to_have_count(1)
    for i in range(11):
        alice_api.start([f"N{i}"])
    page.goto(f"{server.url}/#/jobs?limit=10")
    expect(page.locator("#jobs-table tbody tr[data-job-id]")).to_have_count(10)
    expect(page.locator(".page-label")).to_have_text("Page 1 · 10 jobs")
    page.click("#page-older")
    expect(page.locator(".page-label")).to_have_text("Page 2 · 2 jobs")
    expect(job_row(page, alices["job_id"])).to_be_visible()
    page.click("#page-newer")
    expect(page.locator(".page-label")).to_have_text("Page 1 · 10 jobs")
    assert bobs["job_id"] not in page.content()

    page.goto(f"{server.url}/#/jobs/{bobs['job_id']}")
    expect(page.locator("main [role=alert]")).to_have_text("This job belongs to another user.")
    page.goto(f"{server.url}/#/scope/apps?job={bobs['job_id']}")
    expect(page.locator("main [role=alert]")).to_have_text("This job belongs to another user.")
    expect(page.locator("#appstatus-table tbody tr")).to_have_count(0)
    page.goto(f"{server.url}/#/admin")
    expect(page.locator("main [role=alert]")).to_contain_text("Admins only")
    expect(page.locator("#nav-admin")).to_be_hidden()

    page.click("#logout-btn")
    expect(page.locator(".login-form")).to_contain_text("You are signed out.")
    page.goto(f"{server.url}/#/jobs")
    expect(page.locator("#login-username")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()


def test_admin_sees_everyones_jobs_cache_and_tokens(server, sim, browser):
    frank = new_user(server, "frank")
    admin = new_user(server, "root", role="admin")
    api = server.client(frank)
    job = api.wait_for(api.start(["G1"])["job_id"])
    page = browser().page()
    log_in(page, server, admin)
    expect(page.locator("#nav-admin")).to_be_visible()
    page.click("#nav-admin")
    row = page.locator(f'#admin-jobs tr[data-job-id="{job["job_id"]}"]')
    expect(row).to_contain_text("frank")
    expect(row.locator(".status")).to_have_attribute("data-status", "SUCCESS")
    shot(page, "admin")
    # the admin's socket receives every user's job-updates; "My jobs" still shows only their own
    page.click("nav >> text=My jobs")
    expect(page.locator("#jobs-table")).to_contain_text("No jobs yet.")
    other = api.wait_for(api.start(["G2"])["job_id"])
    page.click("#nav-admin")
    expect(page.locator(f'#admin-jobs tr[data-job-id="{other["job_id"]}"]')).to_be_visible()
    page.click("nav >> text=My jobs")
    expect(page.locator("#jobs-table")).to_contain_text("No jobs yet.")
    assert other["job_id"] not in page.locator("#jobs-table").inner_text()

    page.click("#nav-admin")
    page.click("#admin-tab-stats")
    expect(page.locator("#admin-stats-content .cards")).to_contain_text("Started today")
    expect(page.locator("#admin-stats-content")).to_contain_text("PE-Enable")
    page.click("#admin-tab-cache")
    expect(page.locator("table#admin-cache")).to_contain_text("sim")
    page.click("#admin-tab-users")
    expect(page.locator("table#admin-users")).to_contain_text("frank")
    page.fill("#new-user-name", "ivy")
    page.fill("#new-user-password", "x")
    page.click("text=Create user")
    expect(page.locator("#new-user-password-error")).not_to_be_empty()
    page.click("#admin-tab-audit")
    expect(page.locator("table#admin-audit")).to_contain_text("set_action")

    # the filtered list, exported as CSV by the server
    page.click("#admin-tab-jobs")
    page.fill("#admin-user", "frank")
    page.click(".admin-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/admin/jobs\?.*user=frank"))
    expect(page.locator("table#admin-jobs tbody tr")).to_have_count(2)
    with page.expect_download() as download:
        page.click("#admin-export")
    text = download.value.path().read_text()
    assert text.splitlines()[0].startswith("job_id,username") and job["job_id"] in text


def test_wallboard_with_a_read_token_reconnects_after_a_server_restart(make_server, sim, browser):
    server = make_server(BATCH_SIZE=1, BATCH_CONCURRENCY=1)
    gina = new_user(server, "gina")
    api = server.client(gina)
    sim.knobs(set_action_status=401)
    failed = api.wait_for(api.start(["W1"])["job_id"])
    sim.knobs(set_action_status=None, latency_ms=700)
    running = api.start([f"R{i}" for i in range(8)])

    # the dashboard, and a read token created on the Tokens page that opens the wallboard
    b = browser()
    dashboard = b.page()
    log_in(dashboard, server, gina)
    mark_page(dashboard)
    dashboard.click("nav >> text=Tokens")
    dashboard.fill("#token-name", "ops room")
    dashboard.click("#token-create")
    token = dashboard.locator("#token-secret").input_value()
    expect(dashboard.locator("#my-tokens")).to_contain_text("ops room")
    dashboard.locator("#token-secret").evaluate("node => { node.value = node.value.slice(0, 12) + '…'; }")
    shot(dashboard, "tokens")
    dashboard.goto(server.url + "/#/jobs")
    expect(job_row(dashboard, running["job_id"])).to_be_visible()

    wall_context = browser()  # no cookie: only the token
    wall = wall_context.page()
    requested: list[str] = []
    wall.on("request", lambda request: requested.append(request.url + " " + json.dumps(request.headers)))
    wall.on("websocket", lambda ws: requested.append(ws.url))
    wall.set_viewport_size({"width": 1600, "height": 900})
    wall.goto(f"{server.url}/wallboard#token={token}")
    expect(wall.locator("#conn")).to_have_attribute("data-state", "live")
    expect(wall.locator("#wb-owner")).to_have_text("gina's jobs")
    expect(wall.locator(f'#wb-running li[data-job-id="{running["job_id"]}"] progress')).to_be_visible()
    expect(wall.locator(f'#wb-failures li[data-job-id="{failed["job_id"]}"]')).to_contain_text("HTTP 401 from cluster 'sim'")
    expect(wall.locator("#wb-today-failed")).to_have_text("1")
    # the alert raised before the wallboard opened is listed, but not toasted as news
    expect(wall.locator("#wb-alerts li").first).to_contain_text(failed["job_id"][:8])
    expect(wall.locator(".toast")).to_have_count(0)
    assert wall.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(11, 18, 32)"
    shot(wall, "wallboard")

    # stop the server mid-job: both pages say "reconnecting", the wallboard how old its data is
    server.stop_serving()
    expect(dashboard.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(dashboard.locator("#conn")).to_have_text("Reconnecting…")
    expect(wall.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(wall.locator("#wb-banner")).to_contain_text("old)")
    expect(wall.locator("#wb-age")).to_contain_text("old")
    time.sleep(1.5)
    shot(wall, "wallboard-reconnecting")

    # back on the same port and database: live again, and the job finished meanwhile shows as such
    server.restart()
    expect(dashboard.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(wall.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(wall.locator("#wb-banner")).to_be_hidden()
    expect(job_row(dashboard, running["job_id"])).to_have_attribute("data-status", "SUCCESS", timeout=30_000)
    expect(wall.locator(f'#wb-running li[data-job-id="{running["job_id"]}"]')).to_have_count(0)
    assert_not_reloaded(dashboard)

    # an alert reaches the wallboard's panel and both pages' toasts
    sim.knobs(set_action_status=503, latency_ms=0)
    alerted = api.wait_for(api.start(["Z1"])["job_id"])
    expect(wall.locator("#wb-alerts li").first).to_contain_text("job failed")
    expect(wall.locator("#wb-alerts li").first).to_contain_text(alerted["job_id"][:8])
    expect(wall.locator(".toast").first).to_contain_text("Job failed")
    expect(dashboard.locator(".toast a[href='#/jobs/%s']" % alerted["job_id"])).to_be_visible()
    expect(wall.locator("#wb-failures li").first).to_have_attribute("data-job-id", alerted["job_id"])

    # the token travelled in the Socket.IO auth and the Authorization header, never in a URL
    assert requested
    for line in requested:
        url = line.split(" ", 1)[0]
        assert token not in url, url
    assert any(f"Bearer {token}" in line for line in requested)


def test_a_thousand_row_table_under_fifty_updates_per_second(server, browser, capsys):
    henry = new_user(server, "henry")
    page = browser().page()
    log_in(page, server, henry)
    expect(page.locator("#jobs-table")).to_be_visible()
    figures = page.evaluate("""async () => {
      const socket = await import('/web/js/socket.js');
      const view = await import('/web/js/views/jobs.js');
      const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
      const start = Date.now();
      const iso = (ms) => new Date(ms).toISOString();
      const jobs = [];
      for (let i = 0; i < 1000; i += 1) {
        const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
        jobs.push({ job_id: id, user_id: 1, action_name: 'PE-Enable', action_code: 2, cluster: 'sim',
          status: 'IN_PROGRESS', customer_count: 500, done: 0, failed: 0, http_status: null,
          error_message: null, created_at: iso(start - 1000 * 1000 + i * 1000), started_at: iso(start),
          updated_at: iso(start), finished_at: null, duration_ms: null });
      }
      const t0 = performance.now();
      for (const job of jobs) socket.dispatch('job-update', { event_id: null, kind: 'created', job });
      await frame();
      const insertMs = performance.now() - t0;
      const rows = document.querySelectorAll('#jobs-table tbody tr[data-job-id]').length;
      const before = view.flushStats().length;
      // 50 updates per second for 5 seconds: progress, and every tenth a job finishing or failing
      const frames = [];
      let last = performance.now();
      let running = true;
      (async () => { while (running) { await frame(); const now = performance.now(); frames.push(now - last); last = now; } })();
      let sent = 0;
      const timer = setInterval(() => {
        const job = jobs[Math.floor(Math.random() * jobs.length)];
        job.done = Math.min(job.customer_count, job.done + 5);
        job.updated_at = new Date().toISOString();
        if (sent % 10 === 9) {
          job.status = sent % 20 === 19 ? 'FAILED' : 'SUCCESS';
          job.http_status = job.status === 'FAILED' ? 503 : 200;
          job.error_message = job.status === 'FAILED' ? 'simulated HTTP 503' : null;
        }
        socket.dispatch('job-update', { event_id: null, kind: 'progress', job: { ...job } });
        sent += 1;
      }, 20);
      await new Promise((resolve) => setTimeout(resolve, 5000));
      clearInterval(timer);
      running = false;
      await frame();
      const flushes = view.flushStats().slice(before).map((f) => f.ms).sort((a, b) => a - b);
      const sorted = frames.slice(1).sort((a, b) => a - b);
      const pct = (list, p) => list[Math.min(list.length - 1, Math.floor(list.length * p))];
      return { rows, insertMs, sent, frames: sorted.length,
        frameP50: pct(sorted, 0.5), frameP95: pct(sorted, 0.95), frameMax: sorted[sorted.length - 1],
        longFrames: sorted.filter((f) => f > 50).length,
        flushes: flushes.length, flushP50: pct(flushes, 0.5), flushP95: pct(flushes, 0.95),
        flushMax: flushes[flushes.length - 1],
        shownDone: document.querySelectorAll('#jobs-table tr[data-status="SUCCESS"]').length };
    }""")
    with capsys.disabled():
        print(f"\n[browser] 1,000-row live table: inserted 1,000 rows in {figures['insertMs']:.0f} ms; "
              f"{figures['sent']} updates at 50/s over 5 s -> {figures['flushes']} DOM passes, "
              f"apply p50 {figures['flushP50']:.2f} ms / p95 {figures['flushP95']:.2f} ms / "
              f"max {figures['flushMax']:.2f} ms; frame time p50 {figures['frameP50']:.1f} ms / "
              f"p95 {figures['frameP95']:.1f} ms / max {figures['frameMax']:.1f} ms, "
              f"{figures['longFrames']} frames over 50 ms of {figures['frames']}")
    assert figures["rows"] == 1000
    assert figures["sent"] >= 200
    assert figures["shownDone"] > 0
    assert figures["flushP95"] < 16, figures  # applying a frame's updates fits in one 60 Hz frame
    assert figures["frameP95"] < 50, figures

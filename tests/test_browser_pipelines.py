"""The Pipelines and Deployments pages and the wallboard's CI/CD parts in headless Chromium.

A CI/CD agent is played by an HTTP client with a token of scope `agent`, made through the API as a
user would; it reports pipeline jobs and deployments while the pages are open, and each test asserts
what the person in front of the page sees change, without a reload. Screenshots as in
tests/test_browser.py ($JOBMON_SCREENSHOTS, else a temporary folder).
"""

from __future__ import annotations

import re

import pytest

from support import require_chromium, unique
from test_browser import (  # noqa: F401 (fixtures)
    assert_not_reloaded, backend, browser, chromium, dismiss_toasts, expect, log_in, mark_page, new_user, shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = "<img src=x onerror=window.__xss=1> fix"
SHA = "4f2a9c81d0e5b7a3c2d1e0f9a8b7c6d5e4f3a2b1"


@pytest.fixture(autouse=True)
def chromium_present():
    require_chromium()


def agent_for(server, user):
    """(cookie client of the user, client of a new `agent` token made through POST /api/tokens)."""
    api = server.client(user)
    answer = api.post("/api/tokens", json={"name": f"ci {user['username']}", "scope": "agent"})
    assert answer.status_code in (200, 201), answer.text
    return api, server.client(token=answer.json()["token"]["token"])


def ok(response, *statuses):
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


def report_job(agent, **fields) -> dict:
    body = {"job_type": "build", "repo": "acme/api", "ref": "main", "commit_sha": SHA,
            "commit_message": "Fix the retry loop\n\nA longer body.", "commit_author": "Ada Lovelace",
            "agent_id": "ci-7", **fields}
    return ok(agent.post("/api/dashboard/jobs", json=body), 201)["job"]


def patch_job(agent, job_id: str, path: str = "", **body) -> dict:
    return ok(agent.http.patch(f"/api/dashboard/jobs/{job_id}{path}", json=body), 200)["job"]


def new_deployment(agent, service: str, version: str, **fields) -> dict:
    body = {"service_name": service, "version": version, "commit_sha": SHA[:12],
            "commit_message": f"Release {version}", "commit_author": "Grace Hopper", **fields}
    return ok(agent.post("/api/dashboard/deployments", json=body), 201)["deployment"]


def move(agent, deployment: dict, step: str, **body) -> dict:
    return ok(agent.post(f"/api/dashboard/deployments/{deployment['id']}/{step}", json=body), 200)["deployment"]


def ship(agent, service: str, version: str, **fields) -> dict:
    """A deployment through staging to production (live), each step by a deploy job of its own."""
    deployment = new_deployment(agent, service, version, **fields)
    for step in ("staging", "production"):
        job = report_job(agent, job_type="deploy", repo=f"acme/{service}")
        patch_job(agent, job["job_id"], status="running")
        deployment = move(agent, deployment, step, job_id=job["job_id"])
        patch_job(agent, job["job_id"], "/complete", exit_code=0)
    assert deployment["status"] == "live", deployment
    return deployment


def pipeline_row(page, table: str, job_id: str):
    return page.locator(f'#{table} tr[data-job-id="{job_id}"]')


def deployment_entry(page, deployment_id: str):
    return page.locator(f'.timeline li[data-deployment-id="{deployment_id}"]')


# -- tests -----------------------------------------------------------------------------------------

def test_an_agents_pipeline_job_appears_and_changes_status_live(server, browser):
    user = new_user(server, unique("pia"))
    _, agent = agent_for(server, user)
    page = browser().page()
    log_in(page, server, user)
    page.click("nav >> text=Tokens")
    expect(page.locator("#token-scope option[value=agent]")).to_have_text(
        "agent – for CI/CD agents: report pipeline jobs and deployments")
    page.click("nav >> text=Pipelines")
    expect(page.locator("#pipelines-table")).to_contain_text("No pipeline jobs yet.")
    expect(page.locator("nav a[data-nav=pipelines]")).to_have_attribute("aria-current", "page")
    mark_page(page)

    # created: a pending row in both tables, with the repository, the commit and the agent
    job = report_job(agent)
    row = pipeline_row(page, "pipelines-table", job["job_id"])
    expect(row).to_have_attribute("data-status", "pending")
    expect(row.locator(".badge")).to_have_text("PENDING")
    expect(row).to_contain_text("acme/api")
    expect(row).to_contain_text("main")
    expect(row).to_contain_text(SHA[:7])
    expect(row).to_contain_text("Ada Lovelace")
    expect(row).to_contain_text("ci-7")
    expect(row).to_contain_text("Fix the retry loop")
    # a time-ordered id (jobs of the same minute share its start) is shown by its random end
    expect(row.locator(".mono.muted").first).to_have_text(job["job_id"][-8:])
    running = pipeline_row(page, "pipelines-running", job["job_id"])
    expect(running).to_be_visible()

    # running: blue badge, a ticking elapsed time; then failed with exit code 2 and a logs link
    patch_job(agent, job["job_id"], status="running")
    expect(row).to_have_attribute("data-status", "running")
    expect(row.locator(".badge")).to_have_text("RUNNING")
    assert row.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(31, 95, 191)"
    expect(running).to_have_attribute("data-status", "running")
    expect(page.locator("#sum-jobs-running")).to_have_text("1")

    logs = "https://ci.example.com/acme/api/builds/42?step=test"
    done = patch_job(agent, job["job_id"], "/complete", exit_code=2, logs_url=logs,
                     error_message="make: *** [test] Error 2")
    assert done["status"] == "failed" and done["exit_code"] == 2
    expect(row).to_have_attribute("data-status", "failed")
    expect(row.locator(".badge")).to_have_text("FAILED")
    assert row.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(198, 40, 40)"
    expect(row.locator("td").nth(5)).to_have_text("2")
    expect(row.locator("td").nth(6)).not_to_be_empty()  # the duration
    link = row.locator("a.logs-link")
    expect(link).to_have_attribute("href", logs)
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    expect(running).to_have_count(0)  # no longer running
    expect(page.locator("#pipelines-running")).to_contain_text("Nothing running.")
    expect(page.locator("#sum-jobs-running")).to_have_text("0")
    expect(page.locator("#sum-jobs-failed-today")).to_have_text("1")

    # the error message as the failed badge's tooltip
    row.locator(".badge").hover()
    expect(page.locator("#tooltip")).to_have_text("make: *** [test] Error 2")
    page.mouse.move(5, 5)

    # a second job, successful, and a third still running: the newest first
    second = report_job(agent, job_type="test", agent_id="ci-8", repo="acme/web", status="queued")
    patch_job(agent, second["job_id"], status="running")
    patch_job(agent, second["job_id"], "/complete", exit_code=0, duration_seconds=84.2)
    third = report_job(agent, job_type="deploy", agent_id="ci-8")
    patch_job(agent, third["job_id"], status="running")
    expect(pipeline_row(page, "pipelines-table", second["job_id"])).to_have_attribute("data-status", "success")
    expect(pipeline_row(page, "pipelines-table", second["job_id"])).to_contain_text("1 min 24 s")
    expect(pipeline_row(page, "pipelines-running", third["job_id"])).to_have_attribute("data-status", "running")
    expect(page.locator("#pipelines-table tbody tr").first).to_have_attribute("data-job-id", third["job_id"])
    expect(page.locator("#pipelines-table tbody tr[data-job-id]")).to_have_count(3)
    # pipeline events share the user's event id sequence: the page's resume point moved with them
    assert page.evaluate("import('/web/js/state.js').then((s) => s.live.lastEventId)") >= 6
    expect(page.locator("#sum-jobs-running")).to_have_text("1")
    dismiss_toasts(page)
    shot(page, "pipelines")
    assert_not_reloaded(page)

    # filters: status, agent, repository (in the URL, so a reload keeps them)
    page.check("#pl-status-failed")
    expect(page).to_have_url(re.compile(r"#/pipelines\?status=failed$"))
    expect(page.locator("#pipelines-table tbody tr[data-job-id]")).to_have_count(1)
    expect(pipeline_row(page, "pipelines-table", job["job_id"])).to_be_visible()
    page.uncheck("#pl-status-failed")
    page.fill("#pl-agent", "ci-8")
    page.click(".pl-filters button[type=submit]")
    expect(page.locator("#pipelines-table tbody tr[data-job-id]")).to_have_count(2)
    page.fill("#pl-repo", "acme/web")
    page.click(".pl-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/pipelines\?agent=ci-8&repo=acme%2Fweb$"))
    expect(page.locator("#pipelines-table tbody tr[data-job-id]")).to_have_count(1)
    expect(pipeline_row(page, "pipelines-table", second["job_id"])).to_be_visible()
    # a live job of another agent does not join the filtered list
    other = report_job(agent, agent_id="ci-9", commit_message=HOSTILE, commit_author=HOSTILE)
    patch_job(agent, third["job_id"], "/complete", exit_code=0)
    expect(pipeline_row(page, "pipelines-running", other["job_id"])).to_contain_text(HOSTILE)  # text, not HTML
    expect(pipeline_row(page, "pipelines-table", other["job_id"])).to_have_count(0)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0

    # a logs URL that is not http(s) never becomes a link (the page checks, whatever the server does)
    page.goto(f"{server.url}/#/pipelines")
    expect(pipeline_row(page, "pipelines-table", job["job_id"])).to_be_visible()
    page.evaluate("""([job]) => import('/web/js/socket.js').then((s) => s.dispatch('pipeline-update', {
        event_id: null, kind: 'status',
        job: { ...job, logs_url: 'javascript:window.__xss=1', updated_at: new Date(Date.now() + 60000).toISOString() } }))""",
                  [done])
    expect(pipeline_row(page, "pipelines-table", job["job_id"]).locator("a")).to_have_count(0)


def test_deployments_page_shows_each_services_timeline_and_what_is_live(server, browser):
    user = new_user(server, unique("dee"))
    _, agent = agent_for(server, user)
    service = unique("billing")
    page = browser().page()
    log_in(page, server, user)
    page.click("nav >> text=Deployments")
    expect(page.locator("#timelines")).to_contain_text("No deployments yet.")
    mark_page(page)

    # staged, then live: the timeline entry moves through its steps; "live by service" follows
    first = new_deployment(agent, service, "1.0.0", commit_author="Grace Hopper")
    entry = deployment_entry(page, first["id"])
    expect(entry).to_have_attribute("data-status", "pending")
    expect(entry).to_contain_text("1.0.0")
    expect(entry).to_contain_text("Grace Hopper")
    expect(entry).to_contain_text(SHA[:7])
    expect(entry).to_contain_text("Release 1.0.0")
    expect(page.locator(f'.service-timeline[data-service="{service}"] h3')).to_have_text(service)
    build = report_job(agent, job_type="deploy")
    move(agent, first, "staging", job_id=build["job_id"])
    expect(entry).to_have_attribute("data-status", "staged")
    expect(entry.locator(".badge")).to_have_text("STAGED")
    expect(entry.locator('[data-step="staging"] time')).to_be_visible()
    expect(entry.locator('[data-step="production"]')).to_have_class(re.compile("step-todo"))
    move(agent, first, "production", job_id=build["job_id"])
    expect(entry).to_have_attribute("data-status", "live")
    expect(entry.locator('[data-step="production"] time')).to_be_visible()
    live_row = page.locator(f'#live-by-service tr[data-service="{service}"]')
    expect(live_row).to_contain_text("1.0.0")
    expect(entry).to_have_class(re.compile("is-live"))
    expect(page.locator(f'.service-timeline[data-service="{service}"] .live-chip')).to_have_text("live: 1.0.0")

    # metrics when the agent reports them
    ok(agent.http.patch(f"/api/dashboard/deployments/{first['id']}/metrics",
                        json={"error_rate": 0.005, "latency_ms": 120, "requests_per_sec": 350}), 200)
    expect(entry.locator(".deploy-metrics")).to_contain_text("error rate 0.5 %")
    expect(entry.locator(".deploy-metrics")).to_contain_text("latency 120 ms")

    # the next version goes live, then is rolled back to the first: who, which commit, why
    second = ship(agent, service, "1.1.0", commit_author="Alan Turing", commit_message="Faster invoices")
    second_entry = deployment_entry(page, second["id"])
    expect(second_entry).to_have_attribute("data-status", "live")
    expect(live_row).to_contain_text("1.1.0")
    expect(page.locator(f'.service-timeline[data-service="{service}"] .timeline > li').first) \
        .to_have_attribute("data-deployment-id", second["id"])
    move(agent, second, "rollback", rolled_back_to="1.0.0", reason="error rate up after deploy")
    expect(second_entry).to_have_attribute("data-status", "rolled_back")
    expect(second_entry).to_have_class(re.compile("rolled-back"))
    expect(second_entry.locator(".badge")).to_have_text("ROLLED BACK")
    expect(second_entry.locator('[data-step="rolled-back"]')).to_contain_text("to 1.0.0: error rate up after deploy")
    expect(second_entry).to_contain_text("Alan Turing")
    expect(second_entry).to_contain_text("Faster invoices")
    expect(live_row).not_to_contain_text("1.1.0")

    # a second service: its own timeline; a failed one says so
    other = f"{service}-web"
    ship(agent, other, "2.0.0")
    failing = new_deployment(agent, other, "2.1.0", commit_message=HOSTILE)
    move(agent, failing, "fail", reason="smoke test failed")
    expect(deployment_entry(page, failing["id"])).to_have_attribute("data-status", "failed")
    expect(deployment_entry(page, failing["id"]).locator('[data-step="failed"]')).to_contain_text("smoke test failed")
    expect(deployment_entry(page, failing["id"])).to_contain_text(HOSTILE)  # text, not HTML
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0
    expect(page.locator(f'#live-by-service tr[data-service="{other}"]')).to_contain_text("2.0.0")
    expect(page.locator(".service-timeline").first).to_have_attribute("data-service", other)
    expect(page.locator("#sum-live-services")).to_have_text("2")
    assert_not_reloaded(page)

    # one service's timeline alone, after a reload: the same, from the REST lists
    page.fill("#dep-service", service)
    page.press("#dep-service", "Enter")
    expect(page).to_have_url(re.compile(rf"#/deployments\?service={service}$"))
    page.reload()
    expect(page.locator(".service-timeline")).to_have_count(1)
    expect(page.locator(f'.service-timeline[data-service="{service}"] .timeline > li')).to_have_count(2)
    expect(deployment_entry(page, second["id"])).to_have_attribute("data-status", "rolled_back")
    expect(deployment_entry(page, first["id"])).to_have_class(re.compile("is-live"))
    expect(page.locator("#live-by-service tbody tr")).to_have_count(1)
    expect(page.locator("#live-by-service tbody tr")).to_contain_text("1.0.0")
    shot(page, "deployments")


def test_wallboard_shows_todays_deployments_running_pipeline_jobs_and_a_deploy_regression(make_server, sim, browser):
    # a deploy_regression is judged this many seconds after a deployment goes live
    server = make_server(REGRESSION_WINDOW="2", REGRESSION_MIN_CUSTOMERS="5")
    user = new_user(server, unique("wally"))
    api, agent = agent_for(server, user)
    service = unique("shop")
    rolled = ship(agent, service, "3.0.0")
    move(agent, rolled, "rollback", rolled_back_to="2.9.0", reason="checkout errors")
    live = ship(agent, service, "3.0.1")
    running = report_job(agent, job_type="test", repo="acme/shop")
    patch_job(agent, running["job_id"], status="running")
    read = ok(api.post("/api/tokens", json={"name": "ops room", "scope": "read"}))["token"]["token"]

    dashboard = browser().page()
    log_in(dashboard, server, user)
    wall = browser().page()
    wall.set_viewport_size({"width": 1600, "height": 900})
    wall.goto(f"{server.url}/wallboard#token={read}")
    expect(wall.locator("#conn")).to_have_attribute("data-state", "live")
    back = wall.locator(f'#wb-deploys li[data-deployment-id="{rolled["id"]}"]')
    expect(back).to_have_class(re.compile("wb-deploy-back"))
    expect(back).to_contain_text("to 2.9.0: checkout errors")
    expect(wall.locator(f'#wb-deploys li[data-deployment-id="{live["id"]}"]')).to_have_attribute("data-status", "live")
    expect(wall.locator("#wb-deploys-figures")).to_contain_text("1 rolled back")
    job = wall.locator(f'#wb-pipelines li[data-job-id="{running["job_id"]}"]')
    expect(job).to_have_attribute("data-status", "running")
    expect(job).to_contain_text("acme/shop")

    # live: a new deployment joins the strip, the finished job leaves the running list
    staged = new_deployment(agent, service, "3.1.0", cluster="sim")
    move(agent, staged, "staging", job_id=running["job_id"])
    expect(wall.locator("#wb-deploys li").first).to_have_attribute("data-deployment-id", staged["id"])
    expect(wall.locator("#wb-deploys li").first).to_have_attribute("data-status", "staged")
    second = report_job(agent, job_type="build", repo="acme/cart")
    patch_job(agent, second["job_id"], status="running")
    patch_job(agent, running["job_id"], "/complete", exit_code=0)
    expect(wall.locator(f'#wb-pipelines li[data-job-id="{second["job_id"]}"]')).to_be_visible()
    expect(job).to_have_count(0)

    # 3.1.0 goes live on the cluster sim, whose Set Actions then fail: a deploy_regression alert,
    # listed and toasted like the others (on the dashboard, with a link to the Deployments page)
    move(agent, staged, "production", job_id=second["job_id"])
    sim.knobs(fail_cids={f"R{i}": "customer locked" for i in range(6)})
    api.wait_for(api.start([f"R{i}" for i in range(8)])["job_id"])
    alert = wall.locator('#wb-alerts li[data-kind="deploy_regression"]')
    expect(alert).to_contain_text("deploy regression", timeout=20_000)
    expect(alert).to_contain_text(f"{service} 3.1.0")
    expect(alert).to_contain_text("roll back to 3.0.1")
    expect(wall.locator(".toast", has_text="Deploy regression")).to_be_visible()
    toast = dashboard.locator(".toast", has_text="Deploy regression")
    expect(toast).to_contain_text(f"{service} 3.1.0")
    toast.locator("a", has_text="Open deployments").click()
    expect(dashboard).to_have_url(re.compile("#/deployments$"))
    expect(deployment_entry(dashboard, staged["id"])).to_have_attribute("data-status", "live")
    dismiss_toasts(wall)
    shot(wall, "wallboard-pipelines")


def test_another_users_pipeline_jobs_and_deployments_never_appear(server, browser):
    alice, bob = new_user(server, unique("alice")), new_user(server, unique("bob"))
    _, alice_agent = agent_for(server, alice)
    bob_api, bob_agent = agent_for(server, bob)
    b = browser()
    pipelines, deployments = b.page(), b.page()
    log_in(pipelines, server, alice)
    pipelines.click("nav >> text=Pipelines")
    deployments.goto(f"{server.url}/#/deployments")
    expect(deployments.locator("#conn")).to_have_attribute("data-state", "live")
    alice_read = ok(server.client(alice).post("/api/tokens", json={"name": "wall", "scope": "read"}))["token"]["token"]
    wall = browser().page()
    wall.goto(f"{server.url}/wallboard#token={alice_read}")
    expect(wall.locator("#conn")).to_have_attribute("data-state", "live")

    bobs_job = report_job(bob_agent, repo="bob/secret")
    patch_job(bob_agent, bobs_job["job_id"], status="running")
    bobs_deployment = ship(bob_agent, unique("bobsvc"), "6.6.6")
    # alice's own records, reported after bob's, are the barrier: once they show, bob's would have too
    alices_job = report_job(alice_agent)
    patch_job(alice_agent, alices_job["job_id"], status="running")
    alices_deployment = ship(alice_agent, unique("alicesvc"), "1.0.0")
    expect(pipeline_row(pipelines, "pipelines-running", alices_job["job_id"])).to_be_visible()
    expect(deployment_entry(deployments, alices_deployment["id"])).to_have_attribute("data-status", "live")
    expect(wall.locator(f'#wb-pipelines li[data-job-id="{alices_job["job_id"]}"]')).to_be_visible()
    expect(wall.locator(f'#wb-deploys li[data-deployment-id="{alices_deployment["id"]}"]')).to_be_visible()
    for page in (pipelines, deployments, wall):
        content = page.content()
        assert bobs_job["job_id"] not in content and bobs_deployment["id"] not in content
        assert "bob/secret" not in content and "6.6.6" not in content
    # and after a reload, from the REST lists and the summary
    deployments.reload()
    expect(deployment_entry(deployments, alices_deployment["id"])).to_be_visible()
    expect(deployments.locator("#live-by-service tbody tr")).to_have_count(1)
    assert bobs_deployment["id"] not in deployments.content()
    # bob's agent token reads bob's records, not alice's
    assert bob_agent.get(f"/api/dashboard/jobs/{alices_job['job_id']}").status_code == 404
    assert bob_api.get(f"/api/dashboard/deployments/{alices_deployment['id']}").status_code == 404

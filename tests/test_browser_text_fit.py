"""What a user reads, in headless Chromium against a real server: a failed or partial job's tooltip
names its HTTP status once, and the wallboard's count cards hold their values at any value they can
show, on a 1920×1080 wallboard and a 1366×768 laptop."""

from __future__ import annotations

import time

import pytest

from test_browser import (  # noqa: F401 (fixtures)
    backend,
    browser,
    chromium,
    expect,
    job_row,
    log_in,
    new_user,
    off_loop,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.own_server]


def tooltip_of(page, job_id: str) -> str:
    """Hover the job's badge in My jobs; the tooltip's text."""
    row = job_row(page, job_id)
    expect(row).to_be_visible()
    assert row.get_attribute("data-status") in ("FAILED", "PARTIAL")
    row.locator(".badge").hover()
    tip = page.locator("#tooltip")
    expect(tip).to_be_visible()
    text = tip.text_content()
    # screen readers get the same text
    described = row.locator(".badge").get_attribute("aria-describedby")
    expect(page.locator(f"#{described}")).to_have_text(text)
    page.mouse.move(5, 5)
    expect(tip).to_be_hidden()
    return text


def test_failure_tooltips_name_the_http_status_once(make_server, sim, browser):
    server = make_server(BATCH_SIZE=1, BATCH_CONCURRENCY=1)
    erin = new_user(server, "erin")
    api = off_loop(server.client, erin)
    page = browser().page()
    log_in(page, server, erin)

    def finished(cids, **knobs):
        sim.knobs(**knobs)
        return off_loop(lambda: api.wait_for(api.start(cids)["job_id"]))

    refused = ("HTTP 401 from cluster 'sim': the cluster rejected the credentials (missing or expired token) "
               "(simulated HTTP 401)")
    jobs = {
        "failed, one customer": finished(["F1"], set_action_status=401),
        "failed, two customers": finished(["F2", "F3"], set_action_status=401),
        "failed in answers, two customers": finished(["F4", "F5"], set_action_status=None, fail_cids={
            "F4": "customer locked", "F5": "customer locked"}),
        "partial in answers, three customers": finished(["P1", "P2", "P3"], fail_cids={"P2": "customer locked"}),
    }
    # partial with a whole batch refused: the first batch gets 401, the cluster lets the second through
    sim.knobs(fail_cids={}, set_action_status=401, latency_ms=500)
    mixed = off_loop(api.start, ["M1", "M2"])
    off_loop(lambda: api.wait_for(mixed["job_id"], statuses=("IN_PROGRESS",)))
    while off_loop(api.job, mixed["job_id"])["done"] < 1:
        time.sleep(0.01)
    sim.knobs(set_action_status=None)
    jobs["partial, one batch refused"] = off_loop(lambda: api.wait_for(mixed["job_id"]))
    sim.knobs(latency_ms=0)

    # what the API says: the job's status and message, each naming the cluster's answer once
    said = {name: (job["status"], job["http_status"], job["error_message"]) for name, job in jobs.items()}
    assert said == {
        "failed, one customer": ("FAILED", 401, refused),
        "failed, two customers": ("FAILED", 401, f"All 2 customers failed: {refused}"),
        "failed in answers, two customers": ("FAILED", 200, "All 2 customers failed: customer locked"),
        "partial in answers, three customers": ("PARTIAL", 200, "1 of 3 customers failed: customer locked"),
        "partial, one batch refused": ("PARTIAL", 401, f"1 of 2 customers failed: {refused}"),
    }, said

    # what the user reads on hovering each badge: the status once, before the message or in it
    shown = {name: tooltip_of(page, job["job_id"]) for name, job in jobs.items()}
    assert shown == {
        "failed, one customer": refused,
        "failed, two customers": f"All 2 customers failed: {refused}",
        "failed in answers, two customers": "HTTP 200 - All 2 customers failed: customer locked",
        "partial in answers, three customers": "HTTP 200 - 1 of 3 customers failed: customer locked",
        "partial, one batch refused": f"1 of 2 customers failed: {refused}",
    }, shown
    assert not any(text.startswith("HTTP 401 - ") for text in shown.values()), shown

    # the wallboard's recent failures say it the same way
    token = off_loop(server.create_token, erin, "read")
    wall = browser().page()
    wall.goto(f"{server.url}/wallboard#token={token}")
    expect(wall.locator("#conn")).to_have_attribute("data-state", "live")
    for name, job in jobs.items():
        expect(wall.locator(f'#wb-failures li[data-job-id="{job["job_id"]}"] .wb-error')).to_have_text(shown[name])


# the longest value each card can show: counts with thousands separators, a full success rate, and
# an average time of days
LONGEST = {"counts": {"QUEUED": 9_999_999, "IN_PROGRESS": 9_999_999, "SUCCESS": 9_999_999, "FAILED": 0,
                      "PARTIAL": 0, "CANCELLED": 0},
           "today": {"total": 9_999_999, "success": 9_999_999, "failed": 9_999_999},
           "running": 19_999_998, "success_rate": 100.0, "avg_duration_ms": (999 * 60 + 59) * 60_000,
           "user_id": None, "as_of": "2026-01-01T00:00:00.000Z"}

MEASURE = """[...document.querySelectorAll('.wb-card')].map((card) => {
  const value = card.querySelector('strong');
  const label = card.querySelector('.label');
  const c = card.getBoundingClientRect(), v = value.getBoundingClientRect(), l = label.getBoundingClientRect();
  return { label: label.textContent, text: value.textContent, scroll: value.scrollWidth, client: value.clientWidth,
           inside: v.left >= c.left - 0.5 && v.right <= c.right + 0.5 && l.left >= c.left - 0.5 && l.right <= c.right + 0.5,
           right: c.right, left: c.left, fontPx: parseFloat(getComputedStyle(value).fontSize) };
})"""
# shown and measured in one turn of the page's event loop: no server push comes in between
SHOW_AND_MEASURE = ("(stats) => import('/web/js/socket.js').then((s) => { s.dispatch('job-stats', stats); return "
                    + MEASURE + "; })")


def assert_values_fit(page, size: str, stats: dict | None = None) -> list[dict]:
    cards = page.evaluate(SHOW_AND_MEASURE, stats) if stats is not None else page.evaluate("() => " + MEASURE)
    assert len(cards) == 7
    for card in cards:
        assert card["scroll"] <= card["client"], (size, card)  # nothing cut or spilling out
        assert card["inside"], (size, card)
        assert card["fontPx"] >= 16, (size, card)  # never below the text around it
    for left_card, right_card in zip(cards, cards[1:]):
        if abs(left_card["right"] - right_card["left"]) < 100:  # neighbours on one row do not overlap
            assert left_card["right"] <= right_card["left"], (size, left_card, right_card)
    return cards


def test_wallboard_card_values_fit_their_cards_at_any_value(make_server, sim, browser):
    server = make_server(STATS_INTERVAL=3600)  # only the values this test shows
    hank = new_user(server, "hank")
    token = off_loop(server.create_token, hank, "read")
    page = browser().page()
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{server.url}/wallboard#token={token}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#wb-today")).to_have_text("0")  # the server's figures came
    expect(page.locator("#wb-rate")).to_have_text("–")

    # the values of the report: a full success rate, and the longest of every card
    for stats in ({**LONGEST, "counts": {**LONGEST["counts"], "IN_PROGRESS": 3, "QUEUED": 0},
                   "today": {"total": 12, "success": 12, "failed": 0}, "avg_duration_ms": 4200},
                  LONGEST):
        for width, height in ((1920, 1080), (1366, 768)):
            page.set_viewport_size({"width": width, "height": height})
            cards = assert_values_fit(page, f"{width}x{height}", stats)
            texts = {card["label"]: card["text"] for card in cards}
            assert texts["Success rate"] == "100.0 %", texts
    assert texts["Running"] == "9,999,999" and texts["Avg time"] == "999 h 59 min", texts
    # a window resized after the values came: they follow it (the resize event comes with the next frame)
    after_a_frame = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.evaluate(after_a_frame)
    large = assert_values_fit(page, "1920x1080 after a resize")
    page.set_viewport_size({"width": 1366, "height": 768})
    page.evaluate(after_a_frame)
    small = assert_values_fit(page, "1366x768 after a resize")
    assert small[0]["fontPx"] < large[0]["fontPx"]


DASHBOARD_MEASURE = """(stats) => import('/web/js/socket.js').then((s) => {
  s.dispatch('job-stats', stats);
  return [...document.querySelectorAll('.stat-card')].map((card) => {
    const value = card.querySelector('.value');
    const c = card.getBoundingClientRect(), v = value.getBoundingClientRect();
    return { text: value.textContent, scroll: value.scrollWidth, client: value.clientWidth,
             inside: v.left >= c.left - 0.5 && v.right <= c.right + 0.5 && v.bottom <= c.bottom + 0.5 };
  });
})"""


def test_dashboard_stat_cards_hold_the_longest_values(make_server, sim, browser):
    server = make_server(STATS_INTERVAL=3600)
    ivy = new_user(server, "ivy")
    page = browser().page()
    log_in(page, server, ivy)
    page.click("nav >> text=Stats")
    expect(page.locator("#stat-today")).to_have_text("0")
    for width, height in ((1920, 1080), (1366, 768), (800, 600)):
        page.set_viewport_size({"width": width, "height": height})
        cards = page.evaluate(DASHBOARD_MEASURE, {**LONGEST, "user_id": ivy["id"]})
        assert {card["text"] for card in cards} >= {"100.0 %", "9,999,999", "999 h 59 min"}, cards
        for card in cards:
            assert card["scroll"] <= card["client"] and card["inside"], (width, card)

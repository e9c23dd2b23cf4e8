"""The dashboard page at the query API's / in a real browser, against the real stack: every tile shows the numbers
the dashboard API answered (read from the page, compared number by number; those answers are checked against the
endpoints and raw SQL as in test_api_dashboards); the range, the time zone and a filter reload the tiles with the
new answer; the live counter rises while events flow through the collector, Kafka and the realtime consumer; a
wrong key gets its message; nothing is loaded from another host; a phone-sized screen stacks the tiles.

The lake is test_api_dashboards' (its `lake` fixture, built again for this module). Playwright drives Debian's
chromium; screenshots go to <state dir>/test-artifacts/dashboard_page/.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route

from analytics_core.settings import Settings
from analytics_core.topics import ensure_topics
from api.app import create_app as create_api
from collector.app import create_app as create_collector
from tests.conftest import delete_topics
from tests.integration.helpers import chromium
from tests.integration.test_api_cache_versions import caught_up
from tests.integration.test_api_dashboards import KEYS, WEEK, check_every_tile, lake  # noqa: F401 (a fixture)
from tests.pipeline_env import pipeline_env
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost"}
WRITE_KEY = "wk_dashboards_t1"  # test_api_dashboards' tenant t1
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


@dataclass
class Stack:
    api: str
    collector: str
    settings: Settings


@pytest.fixture(scope="module")
def stack(lake: Settings) -> Iterator[Stack]:  # noqa: F811 (the imported fixture)
    """The API over the lake, and a collector and `analytics realtime` on topics of their own feeding its Redis keys."""
    settings = lake.model_copy(update={"topic_prefix": f"{lake.topic_prefix}{uuid.uuid4().hex[:8]}."})
    ensure_topics(settings)
    analytics = str(Path(sys.executable).with_name("analytics"))
    consumer = subprocess.Popen([analytics, "realtime"], cwd=ROOT, env=pipeline_env(settings))
    try:
        with serve(create_api(settings)) as api, serve(create_collector(settings)) as collector:
            caught_up(api, settings)
            yield Stack(api, collector, settings)
    finally:
        consumer.terminate()
        consumer.wait(30)
        delete_topics(settings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def artifacts(lake: Settings) -> Path:  # noqa: F811
    folder = ROOT / lake.state_dir / "test-artifacts" / "dashboard_page"  # state_dir may be relative
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Opened:
    page: Page
    context: BrowserContext
    outside: list[str]  # requests to other hosts (aborted)
    problems: list[str]  # script errors, failed loads


@pytest.fixture
def opened(browser: Browser, stack: Stack) -> Iterator[Opened]:
    """A new browser context cut off from every host but loopback, on the page, not yet signed in."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, service_workers="block")
    found = Opened(context.new_page(), context, [], [])

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            found.outside.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", loopback_only)
    found.page.on("pageerror", lambda error: found.problems.append(f"script error: {error}"))
    found.page.on(
        "requestfailed",
        lambda failed: None if "/api/v1/live" in failed.url else found.problems.append(f"failed {failed.url}"),
    )
    try:
        yield found
    finally:
        context.close()
    assert found.outside == [], "the page tried to load these from outside hosts"
    assert found.problems == []


# -- helpers ---------------------------------------------------------------------------------------------------


def is_load(response: Any) -> bool:
    return "/api/v1/dashboards/demo?" in response.url and response.request.method == "GET"


def sign_in(page: Page, url: str, key: str, fragment: str = "") -> dict[str, Any]:
    """Open the page, enter the key; the dashboard answer the page received once its tiles are drawn."""
    page.goto(f"{url}/{fragment}")
    page.fill("#key", key)
    with page.expect_response(is_load, timeout=120_000) as loading:
        page.click("#login-form button[type=submit]")
    return settled(page, loading.value)


def settled(page: Page, response: Any) -> dict[str, Any]:
    assert response.status == 200, response.text()
    answer: dict[str, Any] = response.json()
    page.wait_for_function(
        "computed => [...document.querySelectorAll('.tile')].every("
        " t => t.dataset.computedAt === computed && ['ready', 'empty', 'error'].includes(t.dataset.state))",
        arg=answer["computed_at"],
        timeout=60_000,
    )
    return answer


def reload_by(page: Page, action: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Run `action` (a control change); the new dashboard answer once drawn, and the parameters the page asked."""
    with page.expect_response(is_load, timeout=120_000) as loading:
        action()
    answer = settled(page, loading.value)
    return answer, parse_qs(urlsplit(loading.value.url).query)


def shown(page: Page, tile: str) -> dict[str, Any]:
    """What a tile shows, read from the page: its state, its numbers (data-value) by kind."""
    return dict(
        page.evaluate(
            """id => {
              const tile = document.querySelector(`.tile[data-tile="${id}"]`);
              const kind = tile.dataset.kind;
              const out = {state: tile.dataset.state, kind, info: tile.querySelector('.popover').textContent};
              const table = tile.querySelector('details.data table, table.experiment');
              if (table) {
                out.header = [...table.querySelectorAll('thead th')].map(th => th.textContent);
                out.rows = [...table.querySelectorAll('tbody tr')].map(tr => ({
                  dataset: {...tr.dataset},
                  cells: [...tr.children].map(c => ({text: c.textContent, value: c.getAttribute('data-value')
                    ?? c.querySelector('[data-value]')?.getAttribute('data-value') ?? null}))}));
              }
              if (kind === 'number') {
                const v = tile.querySelector('.number .value');
                const c = tile.querySelector('.number .change[data-value]');
                out.value = v ? Number(v.dataset.value) : null;
                out.text = v ? v.textContent : null;
                out.change = c ? Number(c.dataset.value) : null;
              }
              if (kind === 'live') {
                out.live = Object.fromEntries([...tile.querySelectorAll('.metric')].map(
                  m => [m.dataset.metric, Number(m.querySelector('.value').dataset.value)]));
                out.frames = Number(tile.dataset.frames || 0);
              }
              return out;
            }""",
            tile,
        )
    )


def by_id(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tile["id"]: tile for tile in answer["tiles"]}


def check_page_shows(page: Page, answer: dict[str, Any]) -> None:
    """Every tile of the page holds the numbers of `answer`, the dashboard API's answer the page received."""
    for tile_id, tile in by_id(answer).items():
        seen = shown(page, tile_id)
        assert seen["state"] != "error", (tile_id, tile.get("error"), seen)
        check = CHECKS[tile["kind"]]
        check(seen, tile)
        if tile["provenance"]:
            assert "Source: " + ", ".join(tile["provenance"]["sources"]) in seen["info"], (tile_id, seen["info"])


def no_data(answer: dict[str, Any]) -> bool:
    """No rows, or zeros and nulls only: the page shows its empty state."""
    return not any(row["values"][m] for row in answer["rows"] for m in answer["metrics"])


def _series(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    answer = tile["answers"][0]
    if no_data(answer):
        assert seen["state"] == "empty", tile["id"]
        return
    group = answer["group_by"][0] if answer["group_by"] else None
    want: dict[tuple[str, str], float] = {}
    for row in answer["rows"]:
        for metric in answer["metrics"]:
            name = ("other" if row["rest"] else str(row["dimensions"][group])) if group else metric
            want[(row["bucket"], name)] = row["values"][metric]
    names = seen["header"][1:]
    got: dict[tuple[str, str], float | None] = {}
    for row in seen["rows"]:
        bucket = row["cells"][0]["value"]
        for name, cell in zip(names, row["cells"][1:], strict=True):
            value = None if cell["value"] in (None, "") else float(cell["value"])
            if (bucket, name) in want or value:  # the buckets a group has no row in show 0
                got[(bucket, name)] = value
    assert got.keys() == want.keys(), tile["id"]
    assert [k for k, v in want.items() if v is None] == [k for k, v in got.items() if v is None], tile["id"]
    assert {k: v for k, v in got.items() if v is not None} == pytest.approx(
        {k: v for k, v in want.items() if v is not None}
    ), tile["id"]


def _number(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    number = tile["number"]
    if number is None or number["value"] is None:
        assert seen["state"] == "empty"
        return
    assert seen["value"] == pytest.approx(number["value"]), tile["id"]
    if number.get("change") is not None:
        assert seen["change"] == pytest.approx(number["change"]), tile["id"]


def _breakdown(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    answer = tile["answers"][0]
    if no_data(answer):
        assert seen["state"] == "empty", tile["id"]
        return
    dimension, metric = answer["group_by"][0], answer["metrics"][0]
    want = {("other" if r["rest"] else r["dimensions"][dimension]): r["values"][metric] for r in answer["rows"]}
    got = {row["cells"][0]["text"]: float(row["cells"][1]["value"]) for row in seen["rows"]}
    assert got == pytest.approx(want), tile["id"]


def _funnel(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    answer = tile["answers"][0]
    if not answer["rows"]:
        assert seen["state"] == "empty"
        return
    reached = [sum(row["reached"][i] for row in answer["rows"]) for i in range(len(answer["steps"]))]
    assert [int(row["cells"][1]["value"]) for row in seen["rows"]] == reached, tile["id"]
    assert [row["cells"][0]["text"] for row in seen["rows"]] == [s["title"] for s in answer["steps"]]


def _experiment(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    result = tile["answers"][0]
    want = {
        (r["metric"], r["variant"]): (r["control_mean"], r["variant_mean"], r["relative_lift"], r["verdict"] or "")
        for r in result["rows"]
    }
    got = {}
    for row in seen["rows"]:
        cells = row["cells"]
        number = [None if c["value"] in (None, "") else float(c["value"]) for c in cells[1:4]]
        got[(row["dataset"]["metric"], row["dataset"]["variant"])] = (*number, cells[5]["value"])
    assert got.keys() == want.keys()
    for key, (control, variant, lift, verdict) in want.items():
        assert got[key][:3] == pytest.approx((control, variant, lift)), key
        assert got[key][3] == verdict, key


def _live(seen: dict[str, Any], tile: dict[str, Any]) -> None:
    assert set(seen["live"]) == set(tile["answers"][0]["totals"])


CHECKS = {
    "series": _series,
    "number": _number,
    "breakdown": _breakdown,
    "funnel": _funnel,
    "experiment": _experiment,
    "live": _live,
}


def api_answer(stack: Stack, params: dict[str, list[str]]) -> dict[str, Any]:
    """The dashboard API's answer to the parameters the page asked, from another client."""
    answer = httpx.get(
        f"{stack.api}/api/v1/dashboards/demo",
        params=params,
        headers={"Authorization": f"Bearer {KEYS['t1']}"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def same_numbers(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two dashboard answers hold the same numbers (live tiles and cache details aside)."""
    assert a["range"] == b["range"]
    for tile_id, tile in by_id(a).items():
        if tile["kind"] != "live":
            assert tile["answers"] == by_id(b)[tile_id]["answers"], tile_id
            assert tile["number"] == by_id(b)[tile_id]["number"], tile_id


# -- tests -----------------------------------------------------------------------------------------------------


def test_every_tile_shows_the_dashboard_apis_numbers(
    opened: Opened,
    stack: Stack,
    artifacts: Path,
    lake: Settings,  # noqa: F811
) -> None:
    page = opened.page
    answer = sign_in(page, stack.api, KEYS["t1"], f"#dashboard=demo&range={WEEK}&timezone=UTC")
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)
    assert answer["range"]["start"] == "2026-11-09T00:00:00+00:00"
    assert page.get_attribute("#status", "data-start") == answer["range"]["start"]
    check_page_shows(page, answer)
    # The numbers the page drew are the API's: the same as another client gets, and those equal the endpoints and
    # raw SQL over the lake's events (test_api_dashboards' check).
    same_numbers(answer, api_answer(stack, {"range": [WEEK], "timezone": ["UTC"]}))
    check_every_tile(lake, stack.api, "t1", answer)
    shown_tiles = {tile_id: shown(page, tile_id)["state"] for tile_id in by_id(answer)}
    assert shown_tiles == dict.fromkeys(by_id(answer), "ready"), "a tile of this lake's week shows no data"

    # Freshness and source on hover.
    page.hover('.tile[data-tile="revenue"] .info')
    popover = page.locator('.tile[data-tile="revenue"] .popover')
    assert popover.is_visible()
    assert "Source:" in popover.inner_text()
    page.screenshot(path=artifacts / "provenance-hover.png")


def test_range_time_zone_and_filter_reload_the_tiles(opened: Opened, stack: Stack, artifacts: Path) -> None:
    page = opened.page
    first = sign_in(page, stack.api, KEYS["t1"], f"#dashboard=demo&range={WEEK}&timezone=UTC")

    answer, asked = reload_by(page, lambda: page.select_option("#range", "last_30d"))
    assert asked["range"] == ["last_30d"] and asked["timezone"] == ["UTC"]
    assert answer["range"]["expression"] == "last_30d" and answer["range"]["start"] != first["range"]["start"]
    check_page_shows(page, answer)
    same_numbers(answer, api_answer(stack, asked))

    def to_tokyo() -> None:
        page.fill("#timezone", "Asia/Tokyo")
        page.press("#timezone", "Enter")
        page.locator("#timezone").blur()

    answer, asked = reload_by(page, to_tokyo)
    assert asked["timezone"] == ["Asia/Tokyo"]
    assert answer["range"]["timezone"] == "Asia/Tokyo" and answer["range"]["start"].endswith("+09:00")
    assert page.get_attribute("#status", "data-timezone") == "Asia/Tokyo"
    check_page_shows(page, answer)
    same_numbers(answer, api_answer(stack, asked))

    def filter_de() -> None:
        page.select_option("#filter-dimension", "country")
        page.fill("#filter-value", "DE")
        page.click("#filter-apply")

    answer, asked = reload_by(page, filter_de)
    assert asked["filter"] == ["country:eq:DE"]
    assert page.locator('.chip[data-filter="country:eq:DE"]').count() == 1
    check_page_shows(page, answer)
    same_numbers(answer, api_answer(stack, asked))
    countries = [row["cells"][0]["text"] for row in shown(page, "events_by_country")["rows"]]
    assert countries == ["DE"]
    page.screenshot(path=artifacts / "filtered.png", full_page=True)

    # No data: the metric tiles say so; removing the filter brings the numbers back.
    def filter_nowhere() -> None:
        page.fill("#filter-value", "ZZ")
        page.click("#filter-apply")

    answer, asked = reload_by(page, filter_nowhere)
    assert asked["filter"] == ["country:eq:DE", "country:eq:ZZ"]
    assert shown(page, "revenue")["state"] == "empty"
    assert page.locator('.tile[data-tile="revenue"] .state').inner_text() == "No data in this range."
    check_page_shows(page, answer)

    answer, asked = reload_by(page, lambda: page.click('.chip[data-filter="country:eq:ZZ"] button'))
    assert asked["filter"] == ["country:eq:DE"]
    assert shown(page, "revenue")["state"] == "ready"

    # A custom range the API refuses: its message, naming the parameter, and the last numbers stay.
    page.select_option("#range", "custom")
    page.fill("#custom-start", "2026-11-10T00:00")
    page.fill("#custom-end", "2026-11-09T00:00")
    with page.expect_response(is_load) as refused:
        page.click("#custom-apply")
    assert refused.value.status == 400
    banner = page.locator("#banner")
    banner.wait_for(state="visible")
    assert "range" in banner.inner_text() and "after its start" in banner.inner_text()
    assert shown(page, "revenue")["state"] == "ready"


def test_the_live_counter_rises_while_events_flow(opened: Opened, stack: Stack, artifacts: Path) -> None:
    page = opened.page
    sign_in(page, stack.api, KEYS["t1"], "#dashboard=demo&range=last_1h&timezone=UTC")
    page.wait_for_function("document.querySelector('.tile[data-kind=live]').dataset.frames > 0", timeout=30_000)
    before = shown(page, "live")["live"]["events"]

    sent = 0
    with httpx.Client(base_url=stack.collector, auth=(WRITE_KEY, ""), headers={"User-Agent": DESKTOP}) as client:
        deadline = time.monotonic() + 60
        while True:
            now = datetime.now(UTC).isoformat()
            batch = [
                {"type": "page", "name": "Home", "properties": {"path": "/home"}, "userId": f"live-page-{sent + i}",
                 "messageId": uuid.uuid4().hex, "timestamp": now, "context": {"userAgent": DESKTOP}}
                for i in range(5)
            ]  # fmt: skip
            answer = client.post("/v1/batch", json={"batch": batch})
            assert answer.status_code == 200, answer.text
            sent += len(batch)
            time.sleep(0.5)
            now_shown = shown(page, "live")["live"]["events"]
            if now_shown >= before + sent:
                break
            assert time.monotonic() < deadline, f"the live counter went from {before} to {now_shown}; {sent} sent"
    page.screenshot(path=artifacts / "live.png")
    # The stream's frames are the realtime layer's totals: what the API's own live read says now.
    frame = httpx.get(
        f"{stack.api}/api/v1/dashboards/demo",
        params={"range": "last_1h"},
        headers={"Authorization": f"Bearer {KEYS['t1']}"},
        timeout=60,
    ).json()
    assert by_id(frame)["live"]["answers"][0]["totals"]["events"] >= before + sent


def test_a_wrong_key_gets_its_message_and_the_right_one_opens(opened: Opened, stack: Stack, artifacts: Path) -> None:
    page = opened.page
    page.goto(f"{stack.api}/")
    page.fill("#key", "not-a-key")
    page.click("#login-form button[type=submit]")
    message = page.locator("#login-error")
    message.wait_for(state="visible")
    assert "read key was not accepted" in message.inner_text()
    assert page.locator(".tile").count() == 0
    assert page.evaluate("sessionStorage.getItem('analytics.readKey')") is None
    page.screenshot(path=artifacts / "wrong-key.png")

    page.fill("#key", KEYS["t1"])
    with page.expect_response(is_load, timeout=120_000) as loading:
        page.click("#login-form button[type=submit]")
    settled(page, loading.value)
    assert page.evaluate("sessionStorage.getItem('analytics.readKey')") == KEYS["t1"]
    # Kept for the session: a reload opens the dashboards without asking again.
    with page.expect_response(is_load, timeout=120_000) as loading:
        page.reload()
    settled(page, loading.value)
    assert page.locator("#login").is_hidden()


def test_a_phone_sized_screen_stacks_the_tiles(browser: Browser, stack: Stack, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        sign_in(page, stack.api, KEYS["t1"], f"#dashboard=demo&range={WEEK}&timezone=UTC")
        page.screenshot(path=artifacts / "phone.png", full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the screen"
        widths = page.evaluate("[...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect().width)")
        grid = page.evaluate("document.querySelector('#tiles').clientWidth")
        assert min(widths) > grid * 0.85, "tiles are not one to a row"
    finally:
        context.close()

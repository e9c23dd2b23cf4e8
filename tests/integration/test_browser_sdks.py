"""The real browser SDKs in a real browser: analytics.js (@segment/analytics-next) and posthog-js, loaded by a page
of another origin than the collector, send page, track and identify calls through CORS to the collector; the
events reach tracking.events with the browser's user agent, the page's path, the country of the address the
browser sends from (X-Forwarded-For, as a proxy sets it) and the right tenant; the realtime consumer counts them
and the query API's live numbers show exactly that many. A page whose origin the tenant does not allow is refused.

Playwright drives Debian's chromium and npm fetches the SDKs' published packages (scripts/install-system-deps.sh
installs both; the packages are kept under the cache dir, so only the first run downloads them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.sync_api import Browser, Page
from starlette.staticfiles import StaticFiles

from analytics_core.settings import Settings
from analytics_core.topics import ensure_topics
from api.app import create_app as create_api
from collector.app import create_app as create_collector
from collector.main import proxy_options
from realtime.consumer import RealtimeConsumer
from tenants import TenantStore, create_tenant_with_keys
from tests.conftest import delete_topics
from tests.integration.helpers import chromium, read_events
from tests.pipeline_env import isolated
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The releases tested; a new one is a change to test, not something to pick up unnoticed.
SDKS = {"@segment/analytics-next": "1.84.3", "posthog-js": "1.449.2"}
OPEN, SHUT = "browser_open", "browser_shut"
KEYS = {OPEN: ("wk_browser_open", "rk_browser_open"), SHUT: ("wk_browser_shut", "rk_browser_shut")}
DE_IP = "84.128.1.7"  # from the generator's table of blocks that geolocate to a country (generator/geo.py)
# What the page sends: analytics.js page, track, identify and a sendBeacon; posthog-js $pageview, checkout,
# $identify and a capture sent with sendBeacon.
SENT = 8

PAGE = """<!doctype html>
<html><head><title>Cart</title><link rel="icon" href="data:,">
<script src="/sdk/@segment/analytics-next/dist/umd/index.js"></script>
<script src="/sdk/posthog-js/dist/array.full.js"></script>
</head><body><script>
window.sendAll = async ([collector, key, run]) => {
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load({writeKey: key, cdnURL: collector});
  await analytics.page('Cart', {run});
  await analytics.track('checkout', {run, revenue: 19.5, currency: 'EUR'});
  await analytics.identify('user-ajs', {email: 'ajs@example.com', run});
  const beacon = {type: 'track', event: 'beacon', anonymousId: 'anon-beacon', writeKey: key, properties: {run},
                  context: {userAgent: navigator.userAgent, page: {path: location.pathname}}};
  const queued = navigator.sendBeacon(collector + '/t', JSON.stringify(beacon));  // text/plain, no preflight
  posthog.init(key, {api_host: collector, autocapture: false, capture_pageview: false, capture_pageleave: false,
                     disable_session_recording: true, request_batching: false,
                     opt_out_useragent_filter: true});  // under automation navigator.webdriver is true
  posthog.capture('$pageview', {run});
  posthog.capture('checkout', {run});
  posthog.identify('user-ph', {email: 'ph@example.com', run});
  posthog.capture('beacon_ph', {run}, {transport: 'sendBeacon'});
  return queued;
};
window.refused = async ([collector, key]) => {
  let load = 'loaded';
  try { await AnalyticsNext.AnalyticsBrowser.load({writeKey: key, cdnURL: collector}); }
  catch (e) { load = String(e && e.message || e); }
  const body = JSON.stringify({type: 'track', event: 'refused', anonymousId: 'anon-x', writeKey: key});
  const answer = await fetch(collector + '/t', {method: 'POST', headers: {'Content-Type': 'text/plain'}, body});
  return {load, status: answer.status, error: (await answer.json()).error};
};
</script></body></html>"""


@dataclass(frozen=True)
class Site:
    collector: str
    shop: str
    settings: Settings


def sdk_packages(cache_dir: Path) -> Path:
    """node_modules holding the pinned SDK releases, installed with npm into the cache the first time."""
    target = cache_dir / "browser-sdks" / "+".join(f"{name.replace('/', '_')}-{v}" for name, v in SDKS.items())
    if cached(target / "node_modules"):
        return target / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: run scripts/install-system-deps.sh (it installs chromium and npm)")
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    specs = [f"{name}@{version}" for name, version in SDKS.items()]
    command = [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--ignore-scripts", *specs]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"npm install {' '.join(specs)} failed:\n{done.stderr[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # whole or not at all: an interrupted install is never taken for a cached one
    return target / "node_modules"


def cached(modules: Path) -> bool:
    try:
        return all(json.loads((modules / n / "package.json").read_text())["version"] == v for n, v in SDKS.items())
    except FileNotFoundError:
        return False


def shop(modules: Path) -> FastAPI:
    """The test's web site: one page, and the SDKs' published browser bundles, on an origin of its own."""
    app = FastAPI()
    app.mount("/sdk", StaticFiles(directory=modules))

    @app.get("/shop/cart")
    def cart() -> HTMLResponse:
        return HTMLResponse(PAGE)

    return app


@pytest.fixture(scope="module")
def site(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A collector of its own (topics, tenants, Redis keys) trusting loopback's X-Forwarded-For, and the shop."""
    modules = sdk_packages(kafka_settings.cache_dir)
    base = tmp_path_factory.mktemp("browser_sdks")
    settings = isolated(kafka_settings, base, topics=True, api_replica=False)
    ensure_topics(settings)
    store = TenantStore(settings.tenants_db)
    try:
        with serve(shop(modules)) as shop_url:
            create_tenant_with_keys(store, OPEN, *KEYS[OPEN], allowed_origins=(shop_url,))
            create_tenant_with_keys(store, SHUT, *KEYS[SHUT], allowed_origins=("https://elsewhere.example",))
            with serve(create_collector(settings), **proxy_options(settings)) as url:
                yield Site(url, shop_url, settings)
    finally:
        delete_topics(settings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def desktop_user_agent(browser: Browser) -> str:
    """The browser's own user agent without "HeadlessChrome", which the collector rightly counts as a bot."""
    page = browser.new_page()
    try:
        agent: str = page.evaluate("navigator.userAgent")
    finally:
        page.close()
    return agent.replace("HeadlessChrome/", "Chrome/")


def open_cart(browser: Browser, site: Site, agent: str) -> Page:
    context = browser.new_context(user_agent=agent, extra_http_headers={"X-Forwarded-For": DE_IP})
    page = context.new_page()
    page.goto(f"{site.shop}/shop/cart")
    return page


def live_totals(site: Site, read_key: str) -> dict[str, Any]:
    """The first counters frame of the query API's /api/v1/live for the read key's tenant (no warehouse: Redis)."""
    headers = {"Authorization": f"Bearer {read_key}"}
    with serve(create_api(site.settings)) as url, httpx.stream("GET", f"{url}/api/v1/live", headers=headers) as answer:
        assert answer.status_code == 200, answer.read()
        event = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "counters":
                totals: dict[str, Any] = json.loads(line[6:])["totals"]
                return totals
    raise AssertionError("/api/v1/live ended without a counters frame")


def test_browser_sdks_send_through_cors_and_are_counted(site: Site, browser: Browser) -> None:
    run = f"run-{time.time_ns()}"
    agent = desktop_user_agent(browser)

    refused_page = open_cart(browser, site, agent)
    refused = refused_page.evaluate("refused", [site.collector, KEYS[SHUT][0]])
    refused_page.context.close()
    # Both refusals were readable by the page (CORS) and name its origin: analytics.js' settings, and an event.
    assert refused["status"] == 403 and site.shop in refused["error"] and "allowed_origins" in refused["error"]
    assert site.shop in refused["load"] and "allowed_origins" in refused["load"]

    page = open_cart(browser, site, agent)
    assert page.evaluate("sendAll", [site.collector, KEYS[OPEN][0], run]) is True  # the beacon was queued
    events = read_events(site.settings, lambda e: True, SENT, timeout=30)
    page.context.close()

    # Exactly what was sent, from the allowed page only: the refused page's event is not in the topic.
    assert sorted((library(e), e["event_type"]) for e in events) == [
        ("", "beacon"),  # sent by hand with sendBeacon: no library
        ("analytics.js", "checkout"),
        ("analytics.js", "identify"),
        ("analytics.js", "page_view"),
        ("web", "beacon_ph"),  # posthog-js calls itself "web"
        ("web", "checkout"),
        ("web", "identify"),
        ("web", "page_view"),
    ]
    assert {e["tenant_id"] for e in events} == {OPEN}
    assert all(run in e["properties"] for e in events)
    assert all((e["user_agent"], e["device"], e["is_bot"]) == (agent, "desktop", False) for e in events)
    assert all((e["country"], e["page"]) == ("DE", "/shop/cart") for e in events)
    assert {e["user_id"] for e in events if e["event_type"] == "identify"} == {"user-ajs", "user-ph"}
    purchase = next(e for e in events if (library(e), e["event_type"]) == ("analytics.js", "checkout"))
    assert (purchase["revenue"], purchase["currency"]) == (19.5, "EUR")

    stats = RealtimeConsumer(site.settings).run(idle_exit_s=1.5, handle_signals=False)
    assert stats.applied == SENT
    totals = live_totals(site, KEYS[OPEN][1])
    assert (totals["events"], totals["traffic_events"]) == (SENT, SENT), totals


def library(event: dict[str, Any]) -> str:
    return (event["library"] or "").split("/")[0]

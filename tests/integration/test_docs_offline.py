"""Each service's /docs renders in a real browser that cannot reach any host but the loopback one.

Chromium (Debian's; Playwright's own download is not needed) opens /docs of the collector, the schema registry
and the query API, each served on a loopback port with its real lifespan; every request to another host is
aborted and recorded. Swagger UI must render from the vendored assets (analytics_core/docs_pages.py) and list
the service's operations, with no request leaving the machine, no failed load and no script error. A full-page
screenshot of each lands in <state_dir>/test-artifacts/docs_offline/ (.state/ by default, git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Response, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from analytics_core.settings import Settings
from api.app import create_app as create_api
from schema_registry import create_app as create_registry
from tests.integration.conftest import RunningCollector
from tests.integration.helpers import chromium
from tests.pipeline_env import isolated
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

LOOPBACK = {"127.0.0.1", "localhost"}
# service → (its title on the page, operations Swagger UI must list)
EXPECTED = {
    "collector": ("analytics collector", ["/v1/batch", "/batch/"]),
    "registry": ("analytics schema registry", ["/subjects", "/schemas/ids/{schema_id}"]),
    "api": ("analytics query API", ["/api/v1/query", "/api/v1/live"]),
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def artifacts(stack_settings: Settings) -> Path:
    folder = ROOT / stack_settings.state_dir / "test-artifacts" / "docs_offline"  # state_dir may be relative
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def registry_url(kafka_settings: Settings) -> Iterator[str]:
    with serve(create_registry(kafka_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def api_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over an empty warehouse of its own: it starts and documents itself (queries would answer 503)."""
    with serve(create_api(isolated(stack_settings, tmp_path_factory.mktemp("docs_api")))) as url:
        yield url


def _base_url(service: str, request: pytest.FixtureRequest) -> str:
    """Started on first use: the collector is the session's (tests/integration/conftest.py)."""
    if service == "collector":
        running: RunningCollector = request.getfixturevalue("collector")
        return running.url
    return str(request.getfixturevalue(f"{service}_url"))


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_docs_render_without_outside_hosts(
    service: str, browser: Browser, artifacts: Path, request: pytest.FixtureRequest
) -> None:
    base = _base_url(service, request)
    title, operations = EXPECTED[service]
    attempted: list[str] = []  # requests to other hosts, aborted
    problems: list[str] = []  # failed loads, error answers, script errors

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort("internetdisconnected")

    def on_request(sent: Request) -> None:  # every request the page makes, routed or not (data: URLs aside)
        url = urlsplit(sent.url)
        if url.scheme != "data" and url.hostname not in LOOPBACK:
            attempted.append(sent.url)

    def on_response(answer: Response) -> None:
        if answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    context = browser.new_context(service_workers="block", viewport={"width": 1280, "height": 900})
    try:
        context.route("**/*", loopback_only)
        context.on("request", on_request)
        page = context.new_page()
        page.on("response", on_response)
        page.on("requestfailed", lambda failed: problems.append(f"failed {failed.url}: {failed.failure}"))
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        answer = page.goto(f"{base}/docs", wait_until="load")
        assert answer is not None and answer.status == 200
        listed = _paths_listed(page, operations)
        rendered_title = page.locator("#swagger-ui .info .title").all_inner_texts()
        page.screenshot(path=artifacts / f"{service}.png", full_page=True)
    finally:
        context.close()

    assert sorted(set(attempted)) == [], "the page tried to load these from outside hosts"
    assert problems == []
    assert listed == operations, "Swagger UI did not render the operations: see the screenshot in " + str(artifacts)
    assert any(title in text for text in rendered_title), rendered_title


def _paths_listed(page: Page, operations: list[str], timeout_s: float = 30.0) -> list[str]:
    """Those of `operations` Swagger UI rendered within `timeout_s`, as the page shows them."""
    found = []
    for path in operations:
        element = page.locator(f'#swagger-ui .opblock-summary-path[data-path="{path}"]').first
        try:
            element.wait_for(state="visible", timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            timeout_s = 0.001  # the page did not render: do not wait again for the others
            continue
        found.append(element.inner_text().replace("\u200b", "").strip())  # Swagger UI breaks paths with ZWSPs
    return found

"""The dashboard page at the query API's /: served with its assets from this host only (api/web.py), under a
Content-Security-Policy that allows nothing else, each asset's URL changing with its content.

The app is called in-process without its lifespan: the page and its assets need no Kafka, Redis or warehouse.
tests/integration/test_dashboard_page.py drives the page in a browser against the real stack.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from analytics_core.settings import Settings
from api.main import served_app
from api.web import ECHARTS, WEB, echarts_version
from tests.unit.test_docs_pages import CONTENT_TYPES, off_host, references


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(served_app(Settings(_env_file=None)))  # type: ignore[call-arg]


def test_the_page_loads_its_script_styles_and_charts_from_this_host(client: TestClient) -> None:
    answer = client.get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    urls = references(answer.text)
    assert [url for url in urls if off_host(url) and not url.startswith("data:")] == []
    paths = {url.split("?")[0] for url in urls if not url.startswith("data:")}
    assert {"web/dashboard.js", "web/dashboard.css", "web/vendor/echarts/echarts.min.js"} <= paths
    for url in urls:
        if url.startswith("data:") or not url.startswith("web/"):
            continue
        asset = client.get("/" + url)
        assert asset.status_code == 200, url
        assert CONTENT_TYPES["." + url.split("?")[0].rpartition(".")[2]] in asset.headers["content-type"], url
    assert client.get("/web/vendor/echarts/echarts.min.js").content == (ECHARTS / "echarts.min.js").read_bytes()


def test_the_policy_allows_this_origin_only(client: TestClient) -> None:
    headers = client.get("/").headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["connect-src"] == "'self'"  # the API and the live stream of this origin
    assert policy["frame-ancestors"] == "'none'"
    assert headers["cache-control"] == "no-cache"


def test_the_page_has_no_inline_script_and_its_own_files_name_no_other_host() -> None:
    page = (WEB / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []  # the policy would block it
    for name in ("dashboard.js", "dashboard.css"):
        assert re.findall(r"https?://", (WEB / name).read_text()) == [], name


def test_asset_urls_carry_their_contents_digest(client: TestClient) -> None:
    """A new dashboard.js or dashboard.css is a new URL: a browser never runs a cached old copy with a new page."""
    digest = hashlib.sha256((WEB / "dashboard.js").read_bytes() + (WEB / "dashboard.css").read_bytes())
    page = client.get("/").text
    assert f"web/dashboard.js?v={digest.hexdigest()[:12]}" in page
    assert f"web/dashboard.css?v={digest.hexdigest()[:12]}" in page
    assert f"web/vendor/echarts/echarts.min.js?v={echarts_version()}" in page


def test_the_page_and_its_assets_stay_out_of_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert not [path for path in document["paths"] if path == "/" or path.startswith("/web")]

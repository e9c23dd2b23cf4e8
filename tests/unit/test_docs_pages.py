"""The services' docs pages work offline: the vendored Swagger UI is the pinned release, byte for byte, and no page
a service serves loads anything from another host (analytics_core/docs_pages.py).

The apps are called in-process without their lifespan: the pages and assets need no Kafka, Redis or warehouse.
tests/integration/test_docs_offline.py renders the pages in a browser cut off from outside hosts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from analytics_core.docs_pages import SWAGGER_UI, install_docs
from analytics_core.settings import Settings
from api.web import ECHARTS

HOST = "testserver"  # TestClient's
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


def _collector(settings: Settings) -> FastAPI:
    from collector.app import create_app

    return create_app(settings)


def _registry(settings: Settings) -> FastAPI:
    from schema_registry import create_app

    return create_app(settings)


def _api(settings: Settings) -> FastAPI:
    from api.main import served_app

    return served_app(settings)


SERVICES: dict[str, Callable[[Settings], FastAPI]] = {"collector": _collector, "registry": _registry, "api": _api}


@pytest.fixture(params=sorted(SERVICES))
def client(request: pytest.FixtureRequest) -> TestClient:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return TestClient(SERVICES[request.param](settings))


class _References(HTMLParser):
    """Every src and href of a page's tags."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(page: str) -> set[str]:
    """The URLs a page names: in its tags' src and href, and quoted in its inline script (Swagger UI's `url`)."""
    parser = _References()
    parser.feed(page)
    quoted = re.findall(r"""["']((?:[a-z][a-z0-9+.-]*:)?/[^"'\s]*)["']""", page)
    return {*parser.urls, *quoted}


def off_host(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc) and parts.netloc != HOST


# Each vendored package, and the text its main file carries with the version PIN names.
VENDORED = {
    "swagger-ui": (SWAGGER_UI, "swagger-ui-bundle.js", 'PACKAGE_VERSION:"{version}"'),
    "echarts": (ECHARTS, "echarts.min.js", 't.version="{version}"'),
}


@pytest.mark.parametrize("package", sorted(VENDORED))
def test_the_vendored_files_are_the_pinned_release(package: str) -> None:
    """What scripts/vendor-assets.sh wrote from the pinned tarball: the files of SHA256SUMS, nothing else, unchanged."""
    folder, main, marker = VENDORED[package]
    listed: dict[str, str] = {}  # file → sha256, from `sha256sum` lines
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    present = {path.name for path in folder.iterdir()}
    assert present == {*listed, "PIN", "SHA256SUMS"}, f"run scripts/vendor-assets.sh {package} to vendor it again"
    changed = [
        name for name, digest in listed.items() if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest
    ]
    assert changed == [], f"run scripts/vendor-assets.sh {package} to vendor the pinned version again"
    version = (folder / "PIN").read_text().split()[0].rpartition("@")[2]
    assert marker.format(version=version) in (folder / main).read_text()
    assert {"LICENSE", main} <= set(listed)


def test_docs_loads_everything_from_its_own_host(client: TestClient) -> None:
    answer = client.get("/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    urls = references(answer.text)
    assert [url for url in urls if off_host(url)] == []
    assert any(url.split("?")[0].endswith("/swagger-ui-bundle.js") for url in urls)
    for url in urls:
        asset = client.get(url)
        suffix = "." + urlsplit(url).path.rpartition(".")[2]
        assert (url, asset.status_code) == (url, 200)
        assert CONTENT_TYPES[suffix] in asset.headers["content-type"], url
        if suffix == ".css":  # what the stylesheet loads in turn: inline data only
            loaded = re.findall(r"""url\(\s*["']?([^"')]+)""", asset.text) + re.findall(
                r"@import\s+([^;]+)", asset.text
            )
            assert [u for u in loaded if not u.startswith("data:")] == []


def test_the_pages_stay_out_of_the_openapi_document(client: TestClient) -> None:
    """FastAPI's CDN pages are gone; the HTML pages are /docs and the query API's dashboard page at /; the fuzzed
    document is what it was."""
    for gone in ("/redoc", "/docs/oauth2-redirect"):
        assert client.get(gone).status_code == 404, gone
    app = client.app
    assert isinstance(app, FastAPI)
    document = app.openapi()
    assert not any(path.startswith(("/docs", "/web")) for path in document["paths"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                assert "text/html" not in response.get("content", {}), f"{method.upper()} {path} {status}"
    unlisted = [
        route.path
        for route in app.routes
        if isinstance(route, APIRoute | Route)
        and not route.include_in_schema
        and "GET" in (route.methods or ())
        and "{" not in route.path
    ]
    pages = [path for path in unlisted if client.get(path).headers["content-type"].startswith("text/html")]
    assert sorted(pages) == (["/", "/docs"] if app.title == "analytics query API" else ["/docs"])


def test_docs_behind_a_path_prefix() -> None:
    """Behind a proxy that strips /collector, the page names its assets and document under that prefix."""
    app = _collector(Settings(_env_file=None))  # type: ignore[call-arg]
    page = TestClient(app, root_path="/collector").get("/docs").text
    assert {url.split("?")[0] for url in references(page)} == {
        "/collector/openapi.json",
        "/collector/docs/assets/swagger-ui-bundle.js",
        "/collector/docs/assets/swagger-ui.css",
        "/collector/docs/assets/favicon-32x32.png",
    }


def test_install_docs_refuses_fastapis_cdn_pages() -> None:
    with pytest.raises(ValueError, match="docs_url=None and redoc_url=None"):
        install_docs(FastAPI(title="t"))

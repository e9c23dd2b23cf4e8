"""The dashboard page: `GET /` serves api/web/index.html, its script and styles under /web, and the vendored
Apache ECharts (analytics_core/static/vendor/echarts, pinned in PIN there; scripts/vendor-assets.sh vendors it
again) under /web/vendor/echarts. Nothing is loaded from another host: the page works offline, and its
Content-Security-Policy lets it load and connect to this origin only.

The page asks the API what any client asks (GET /api/v1/dashboards, /api/v1/dashboards/{id}, /api/v1/metrics,
/api/v1/live) with the read key the user enters, kept in the browser's session storage. docs/DASHBOARDS.md,
"The page", says what it shows.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from analytics_core.docs_pages import VENDOR, pinned_version

WEB = Path(__file__).parent / "web"
ECHARTS = VENDOR / "echarts"
PAGE_PATH = "/"
WEB_PATH = "/web"
ECHARTS_PATH = "/web/vendor/echarts"
# Scripts, styles, images and connections from this origin only; ECharts sets inline styles on its elements.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@cache
def echarts_version() -> str:
    return pinned_version(ECHARTS)


@cache
def page() -> str:
    """index.html with each asset's URL carrying a digest of its content, so a browser never runs an old copy."""
    digest = hashlib.sha256()
    for name in ("dashboard.js", "dashboard.css"):
        digest.update((WEB / name).read_bytes())
    return (
        (WEB / "index.html")
        .read_text()
        .replace("{{assets}}", digest.hexdigest()[:12])
        .replace("{{echarts}}", echarts_version())
    )


def install_web(app: FastAPI) -> FastAPI:
    """Serve the dashboard page at / and its assets under /web (kept out of the OpenAPI document)."""
    app.mount(ECHARTS_PATH, StaticFiles(directory=ECHARTS), name="web-echarts")
    app.mount(WEB_PATH, StaticFiles(directory=WEB), name="web")

    @app.get(PAGE_PATH, include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(
            page(),
            headers={
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    return app

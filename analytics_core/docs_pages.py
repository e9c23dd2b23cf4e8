"""The services' /docs page (Swagger UI) from assets installed with the project, so it works offline.

FastAPI's own /docs and /redoc pages load Swagger UI and ReDoc from a CDN and stay blank without internet. So
each service builds its FastAPI with `docs_url=None, redoc_url=None` and calls `install_docs(app)`: /docs is
FastAPI's Swagger UI page with the copy of npm's swagger-ui-dist vendored in static/vendor/swagger-ui (the
version pinned in PIN there; scripts/vendor-assets.sh vendors it again), served under /docs/assets. There is no
/redoc (one docs page is enough) and no /docs/oauth2-redirect (no service uses OAuth2). The routes stay out of
the OpenAPI document, which the fuzz tests hold the services to.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

VENDOR = Path(__file__).parent / "static" / "vendor"  # what scripts/vendor-assets.sh vendors, one folder a package
SWAGGER_UI = VENDOR / "swagger-ui"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
# Added to FastAPI's defaults: no online-validator badge, an image Swagger UI would load from validator.swagger.io.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def pinned_version(folder: Path) -> str:
    """A vendored package's version, from the PIN scripts/vendor-assets.sh wrote (`echarts@6.1.0 sha512-...`)."""
    package = (folder / "PIN").read_text().split()[0]
    return package.rpartition("@")[2]


@cache
def swagger_ui_version() -> str:
    return pinned_version(SWAGGER_UI)


def install_docs(app: FastAPI) -> FastAPI:
    """Serve /docs with the vendored Swagger UI; `app` must be built with docs_url=None and redoc_url=None."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            f"{app.title}: build the FastAPI app with docs_url=None and redoc_url=None; FastAPI's own docs pages "
            "load their scripts from a CDN and are blank offline"
        )
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError(f"{app.title}: the docs page shows the OpenAPI document; keep openapi_url set")
    # ?v=: a browser that cached another version's bundle fetches the new one (the files carry no version).
    version = f"?v={swagger_ui_version()}"
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's path prefix, as FastAPI's own
        assets = root + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js{version}",
            swagger_css_url=f"{assets}/swagger-ui.css{version}",
            swagger_favicon_url=f"{assets}/favicon-32x32.png{version}",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_UI_PARAMETERS},
        )

    return app

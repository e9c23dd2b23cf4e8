"""uvicorn entry point: `api.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

import orjson
from fastapi import FastAPI

from analytics_core.runtime import tune_gc
from analytics_core.serving import BodyTimeout
from analytics_core.settings import Settings, get_settings
from api.app import create_app


def served_app(settings: Settings) -> FastAPI:
    """The query API as `analytics api` serves it: the app, and a bound on the time a request body may take
    (408 with the API's error body; analytics_core/serving.py). The head limits are uvicorn's part (api/cli.py)."""
    app = create_app(settings)
    app.add_middleware(BodyTimeout, seconds=settings.http_body_timeout_s, error_body=_error_body)
    return app


def _error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message})


def build_app() -> FastAPI:
    app = served_app(get_settings())
    # As in the collector: an answer of thousands of rows allocates many containers that live until
    # it is sent; without this, collections walking them showed as 30-50 ms pauses.
    tune_gc()
    return app

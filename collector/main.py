"""uvicorn entry point: `collector.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

from fastapi import FastAPI

from analytics_core.runtime import tune_gc
from analytics_core.settings import get_settings
from collector.app import create_app


def build_app() -> FastAPI:
    app = create_app(get_settings())
    tune_gc()  # fewer gen-0 collections while requests are in flight (analytics_core/runtime.py)
    return app

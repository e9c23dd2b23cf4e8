"""uvicorn entry point: `api.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from analytics_core.settings import get_settings
from api.app import create_app
from collector.main import GC_THRESHOLDS


def build_app() -> FastAPI:
    app = create_app(get_settings())
    # As in the collector: an answer of thousands of rows allocates many containers that live until
    # it is sent, and collections that walk them show as 30-50 ms pauses after large answers.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app

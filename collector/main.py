"""uvicorn entry point: `collector.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from analytics_core.settings import get_settings
from collector.app import create_app

# A request allocates thousands of containers that live until its answer (~30 requests in flight), so
# the default gen-0 threshold (700) ran ~8 collections a request that only promoted live objects:
# ~15 % of the server's CPU (docs/BENCHMARKS.md, collector). Garbage here is freed by refcounting.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Freeze what start-up loaded and collect gen 0 less often (the collector and the query API)."""
    # The modules, compiled schemas and regexes loaded so far live as long as the process: freezing
    # them keeps the (rare) full collections from walking them again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def build_app() -> FastAPI:
    app = create_app(get_settings())
    tune_gc()
    return app

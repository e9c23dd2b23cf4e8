"""uvicorn entry point: `collector.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from analytics_core.runtime import tune_gc
from analytics_core.settings import Settings, get_settings
from collector.app import create_app


def build_app() -> FastAPI:
    app = create_app(get_settings())
    tune_gc()  # fewer gen-0 collections while requests are in flight (analytics_core/runtime.py)
    return app


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options: the client address (and scheme) from X-Forwarded-For (-Proto) of trusted proxies only.

    uvicorn would otherwise read FORWARDED_ALLOW_IPS from the environment; the setting is
    ANALYTICS_COLLECTOR_TRUSTED_PROXIES, documented with the others."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.collector_trusted_proxies}

"""uvicorn entry point: `collector.main:build_app` (a factory, so each worker builds its own clients)."""

from __future__ import annotations

from fastapi import FastAPI

from analytics_core.settings import get_settings
from collector.app import create_app


def build_app() -> FastAPI:
    return create_app(get_settings())

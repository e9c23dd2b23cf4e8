"""`analytics api`: run the query API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from analytics_core.settings import get_settings


def serve_api(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port. Default: ANALYTICS_API_PORT (8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes. Default: ANALYTICS_API_WORKERS.", min=1)
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level; logs are JSON lines on stderr.")] = "info",
) -> None:
    """Run the query API: /api/v1/metrics, /api/v1/query, /api/v1/live (SSE), funnels, experiments, dashboards,
    /healthz, /readyz, /metrics, /docs, and the dashboard page at /."""
    import uvicorn

    from analytics_core.logs import log_config
    from analytics_core.serving import server_options

    settings = get_settings()
    uvicorn.run(
        "api.main:build_app",
        factory=True,
        host=host,
        port=port or settings.api_port,
        workers=workers or settings.api_workers,
        log_level=log_level,
        log_config=log_config(log_level),
        access_log=False,
        **server_options(settings),  # head time and size limits, keep-alive (analytics_core/serving.py)
    )

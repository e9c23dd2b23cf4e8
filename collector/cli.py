"""`analytics collector`: run the ingest API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from analytics_core.settings import get_settings


def serve_collector(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port. Default: ANALYTICS_COLLECTOR_PORT (8080).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes. Default: ANALYTICS_COLLECTOR_WORKERS.", min=1)
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level; logs are JSON lines on stderr.")] = "info",
) -> None:
    """Run the event collector (Segment, analytics.js and PostHog ingest, /healthz, /readyz, /metrics)."""
    import uvicorn

    from analytics_core.logs import log_config
    from analytics_core.serving import server_options
    from collector.main import proxy_options

    settings = get_settings()
    uvicorn.run(
        "collector.main:build_app",
        factory=True,
        host=host,
        port=port or settings.collector_port,
        workers=workers or settings.collector_workers,
        log_level=log_level,
        log_config=log_config(log_level),
        access_log=False,
        **server_options(settings),  # head time and size limits, keep-alive (analytics_core/serving.py)
        **proxy_options(settings),  # the client address behind a trusted proxy
    )

"""`analytics registry`: serve the Confluent-compatible schema registry backed by the schemas topic."""

from __future__ import annotations

from typing import Annotated

import typer


def serve_registry(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (Confluent's default is 8081).")] = 8081,
) -> None:
    """Serve the schema registry REST API (subjects, versions, ids, compatibility) until interrupted."""
    import uvicorn

    from analytics_core.settings import get_settings
    from analytics_core.topics import ensure_topics
    from schema_registry.app import create_app

    settings = get_settings()
    # The registry's state is the schemas topic; make sure it exists before the first request.
    ensure_topics(settings)
    typer.echo(f"schema registry on http://{host}:{port} (topic {settings.topic_prefix}registry.schemas)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")

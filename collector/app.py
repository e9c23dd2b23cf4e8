"""The collector's FastAPI app: lifespan, middleware and the routers of collector/routes/."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from analytics_core.docs_pages import DOCS_PATH, install_docs
from analytics_core.serving import BodyTimeout, relative_slash_redirects
from analytics_core.settings import Settings
from collector import openapi
from collector.cors import Cors
from collector.routes import amplitude, browser, mixpanel, ops, posthog, segment, snowplow
from collector.state import CollectorState

log = logging.getLogger("collector")


def create_app(settings: Settings) -> FastAPI:
    """A collector app; clients are built at startup (lifespan), not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(CollectorState.build, settings)
        app.state.collector = state
        log.info(
            "collector ready",
            extra={
                "kafka": settings.kafka_bootstrap,
                "topic": state.topics.events,
                "schema_id": state.serialize.schema_id,
            },
        )
        try:
            yield
        finally:
            await app.state.collector.close()
            # Drop the clients with the state: a producer left alive keeps reconnecting (and logging)
            # to a broker that may be gone, until the process exits.
            app.state.collector = None

    app = FastAPI(
        title="analytics collector",
        summary="Segment- and PostHog-compatible event ingestion into Kafka, from servers and browsers.",
        lifespan=lifespan,
        docs_url=None,  # /docs from the vendored Swagger UI (install_docs), not FastAPI's CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings  # collector/deps.py's SettingsDep
    relative_slash_redirects(app)
    openapi.install(app)
    app.add_middleware(
        BodyTimeout,
        seconds=settings.http_body_timeout_s,
        on_timeout=lambda: app.state.collector.metrics.rejected.labels("408").inc(),
    )
    # Outermost, so every answer gets its CORS headers, the 408 above included (collector/cors.py).
    app.add_middleware(Cors, exempt=frozenset(_operational_paths(app)))
    app.include_router(segment.router)
    app.include_router(posthog.router)
    app.include_router(browser.router)
    app.include_router(mixpanel.router)
    app.include_router(amplitude.router)
    app.include_router(snowplow.router)
    app.include_router(ops.router)
    return app


def _operational_paths(app: FastAPI) -> list[str]:
    """Paths no browser page sends to: health, metrics and the API docs (they get no CORS headers)."""
    docs = [app.openapi_url, DOCS_PATH]  # the docs' assets are under /docs/assets, a mount of their own
    return [path for path in docs if path] + [str(getattr(r, "path", "")) for r in ops.router.routes]

"""The collector's FastAPI app: Segment tracking API, PostHog /batch/, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from analytics_core.clients import kafka_admin
from analytics_core.serving import BodyTimeout, relative_slash_redirects
from analytics_core.settings import Settings
from collector import adapters, openapi
from collector.body import BodyError, parse_json, read_body
from collector.ingest import Adapter, IngestError, prepare, produce
from collector.state import CollectorState

log = logging.getLogger("collector")
SUCCESS: dict[str, object] = {"code": 200, "status": 1, "error": None, "results": {}}
SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


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
        summary="Segment- and PostHog-compatible event ingestion into Kafka.",
        lifespan=lifespan,
    )
    relative_slash_redirects(app)
    openapi.install(app)
    app.add_middleware(
        BodyTimeout,
        seconds=settings.http_body_timeout_s,
        on_timeout=lambda: app.state.collector.metrics.rejected.labels("408").inc(),
    )

    async def handle(request: Request, adapter: Adapter) -> Response:
        state: CollectorState = request.app.state.collector
        peer = request.client.host if request.client else None
        # An address blocked for sending unknown keys is refused before its body is read (a dict lookup).
        blocked_for = state.auth_throttle.retry_after(peer)
        if blocked_for is not None:
            return _error(state, 429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
        try:
            body = await read_body(
                request.stream(), request.headers.get("content-encoding"), settings.collector_max_batch_bytes
            )
            document = parse_json(body)
            prepared = await prepare(state, document, adapter, request.headers.get("authorization"), peer)
            await produce(state, prepared)
        except BodyError as exc:
            return _error(state, exc.status, str(exc))
        except IngestError as exc:
            return _error(state, exc.status, exc.message, exc.retry_after)
        return JSONResponse(SUCCESS)

    @app.post(
        "/v1/batch", tags=["segment"], summary="A batch of Segment messages.", openapi_extra=openapi.SEGMENT_BATCH
    )
    async def segment_batch(request: Request) -> Response:
        return await handle(request, adapters.segment_batch)

    for message_type in SEGMENT_TYPES:
        app.add_api_route(
            f"/v1/{message_type}",
            _single_route(handle, message_type),
            methods=["POST"],
            tags=["segment"],
            summary=f"One Segment {message_type} message.",
            openapi_extra=openapi.single_operation(message_type),
            name=f"segment_{message_type}",
        )

    @app.post("/batch/", tags=["posthog"], summary="A PostHog capture batch.", openapi_extra=openapi.POSTHOG_BATCH)
    async def posthog_batch(request: Request) -> Response:
        return await handle(request, adapters.posthog_batch)

    @app.get("/healthz", tags=["operations"], summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Kafka is reachable, so events can be accepted.",
        response_class=Response,
        responses=openapi.READYZ_RESPONSES,
    )
    async def readyz() -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(_kafka_reachable, settings), 5.0)
        except Exception as exc:  # any failure means not ready; the reason goes into the answer
            return JSONResponse({"status": "unavailable", "kafka": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics.",
        response_class=Response,
        responses=openapi.METRICS_RESPONSES,
    )
    async def metrics(request: Request) -> Response:
        state: CollectorState = request.app.state.collector
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


Handler = Callable[[Request, Adapter], Awaitable[Response]]


def _single_route(handle: Handler, message_type: str) -> Callable[[Request], Awaitable[Response]]:
    adapter = partial(adapters.segment_single, message_type)

    async def route(request: Request) -> Response:
        return await handle(request, adapter)

    return route


def _kafka_reachable(settings: Settings) -> None:
    kafka_admin(settings).list_topics(timeout=4.0)


def _error(state: CollectorState, status: int, message: str, retry_after: int | None = None) -> Response:
    state.metrics.rejected.labels(str(status)).inc()
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    body = {"code": status, "status": 0, "error": message, "results": {}}
    return JSONResponse(body, status_code=status, headers=headers)

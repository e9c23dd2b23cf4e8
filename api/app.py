"""The query API's FastAPI app: lifespan, middleware, exception handlers, the routers (api/routes/), the
OpenAPI document as it answers (api/openapi.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics_core.catalogue import get_catalogue
from analytics_core.docs_pages import install_docs
from analytics_core.serving import invalid_json, relative_slash_redirects, undecodable_json
from analytics_core.settings import Settings
from api.openapi import describe
from api.responses import error, field_name
from api.routes import dashboards, experiments, live, ops, query
from api.state import ApiState, build_state
from api.web import install_web

log = logging.getLogger("api")
MAX_QUERY_BODY_BYTES = 64 * 1024
ENDPOINTS = frozenset({"/api/v1/metrics", "/api/v1/query", "/api/v1/live"})  # metric labels; the rest is "other"


def create_app(settings: Settings) -> FastAPI:
    """A query API app; clients are built at startup (lifespan), not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = await run_in_threadpool(build_state, settings)
        log.info("query api ready", extra={"warehouse": str(settings.warehouse_path), "redis": settings.redis_url})
        try:
            yield
        finally:
            state: ApiState = app.state.api
            if state.engine is not None:
                state.engine.close()
            await state.live_hub.close()
            state.redis.close()
            await state.redis_async.aclose()

    app = relative_slash_redirects(  # Starlette's own copies the Host header into Location (analytics_core/serving.py)
        FastAPI(
            title="analytics query API",
            summary="Metrics from the warehouse rollups merged with the realtime layer; live numbers over SSE.",
            lifespan=lifespan,
            docs_url=None,  # /docs from the vendored Swagger UI (install_docs), not FastAPI's CDN
            redoc_url=None,
        )
    )
    install_docs(app)
    install_web(app)  # the dashboard page at /

    app.add_middleware(BodyLimit, limit=MAX_QUERY_BODY_BYTES)
    app.add_middleware(RequestMetrics)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(StarletteHTTPException)(http_error)  # FastAPI's own (a body it cannot read), the router's
    app.include_router(query.router)
    app.include_router(live.router)
    app.include_router(ops.router)
    app.include_router(experiments.router)
    app.include_router(dashboards.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(FastAPI.openapi(app), settings, get_catalogue())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """400 naming the field (as the engine does: filters[0].values) and the rule (pydantic's error type).

    A body that is not JSON names `body`, and the line and column where it breaks: FastAPI's json_invalid
    error holds the parser's character position as its `loc` (("body", 40), which reads as a field named
    "40") and its reason in `ctx.error`; the text the parser read is the exception's `body`.
    """
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": "invalid"}
    rule = str(first.get("type", "invalid"))
    if rule == "json_invalid":
        loc = first.get("loc", ())
        pos = loc[-1] if loc and isinstance(loc[-1], int) else 0
        text = exc.body if isinstance(exc.body, str) else await request.body()  # Starlette keeps the body read
        reason = (first.get("ctx") or {}).get("error") or first.get("msg") or "not JSON"
        return error(400, invalid_json(text, pos, str(reason)), field="body", rule=rule)
    field = field_name(first.get("loc", ()))
    return error(400, f"{field}: {first.get('msg')}", field=field, rule=rule)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 400:  # FastAPI's "There was an error parsing the body": not text in its encoding, say
        cause = exc.__cause__  # json.loads decodes the bytes first: a UnicodeDecodeError has no JSON position
        message = undecodable_json(cause) if isinstance(cause, UnicodeDecodeError) else f"body: {exc.detail}"
        return error(400, message, field="body", rule="json_invalid", headers=headers)
    return error(exc.status_code, str(exc.detail), headers=headers)


class RequestMetrics:
    """Counts every answer in `api_requests` by endpoint (ENDPOINTS, else "other") and status, when the
    response starts (a live stream as it opens)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: ApiState | None = getattr(scope["app"].state, "api", None)
                if state is not None:
                    path = Request(scope).url.path
                    endpoint = path if path in ENDPOINTS else "other"
                    state.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


class BodyLimit:
    """413 for a request body above `limit` bytes, by its Content-Length or, when chunked, as it is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                too_big = JSONResponse({"error": f"body of {int(value)} bytes is above the limit of {self.limit}"}, 413)
                await too_big(scope, receive, send)
                return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"body is above the limit of {self.limit} bytes")
            return message

        await self.app(scope, counting, send)

"""The query API's FastAPI app: catalogue, queries (planned, merged with realtime, cached), live SSE, operations."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics_core.catalogue import GRANULARITIES, Catalogue, get_catalogue
from analytics_core.clients import redis_async_client, redis_client
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.serving import relative_slash_redirects
from analytics_core.settings import Settings
from api.cache import QueryCache, render, template
from api.engine import QueryEngine, QueryError, WarehouseUnavailable
from api.live import LiveReader
from api.live_hub import LiveHub, LiveLimitError, LiveResponse
from api.metrics import ApiMetrics, RealtimeCollector
from api.models import CatalogueAnswer, QueryRequest, QueryResult, dump
from api.openapi import ERROR_CONTENT, ERRORS, READY, SSE_EVENT, describe
from api.ratelimit import QueryRateLimiter
from api.validation import check
from tenants import KeyCache, Tenant, TenantStore

log = logging.getLogger("api")
MAX_QUERY_BODY_BYTES = 64 * 1024
ENDPOINTS = frozenset({"/api/v1/metrics", "/api/v1/query", "/api/v1/live"})  # metric labels; the rest is "other"


@dataclass
class ApiState:
    settings: Settings
    catalogue: Catalogue
    tenants: KeyCache
    redis: redis.Redis
    redis_async: AsyncRedis
    cache: QueryCache
    live: LiveReader
    live_hub: LiveHub = field(init=False)  # what every live stream shares: subscription, reads, limits
    metrics: ApiMetrics
    engine: QueryEngine | None = None
    limiter: QueryRateLimiter | None = None  # queries per read key (Redis); None: no limit

    def query_engine(self) -> QueryEngine:
        """The engine, built on first use: the API starts (and answers 503) before the warehouse exists."""
        if self.engine is None:
            try:
                self.engine = QueryEngine(self.settings, redis=self.redis, catalogue=self.catalogue)
            except WarehouseUnavailable:
                raise
            except Exception as exc:  # a missing or locked lake: tell the client, keep serving
                raise WarehouseUnavailable(f"warehouse not reachable: {exc}") from exc
        return self.engine


def _build_state(settings: Settings) -> ApiState:
    catalogue = get_catalogue()
    keys = RealtimeKeys.from_settings(settings)
    sync_redis = redis_client(settings, socket_timeout=2.0, socket_connect_timeout=1.0)
    async_redis = redis_async_client(settings, socket_timeout=2.0, socket_connect_timeout=1.0)
    metrics = ApiMetrics()
    metrics.registry.register(RealtimeCollector(sync_redis, keys))
    state = ApiState(
        settings=settings,
        catalogue=catalogue,
        tenants=KeyCache(TenantStore(settings.tenants_db)),
        redis=sync_redis,
        redis_async=async_redis,
        cache=QueryCache(async_redis, settings.redis_key_prefix),
        live=LiveReader(catalogue, keys, settings.live_window_s),
        metrics=metrics,
    )
    state.live_hub = LiveHub.for_api(settings, state.live, state.tenants)
    if settings.api_rate_limit_queries:
        state.limiter = QueryRateLimiter(
            async_redis, settings.redis_key_prefix, settings.api_rate_limit_queries, settings.api_rate_limit_window_s
        )
    try:
        state.query_engine()
    except WarehouseUnavailable as exc:
        log.warning("starting without the warehouse; queries answer 503 until it is there: %s", exc)
    return state


def create_app(settings: Settings) -> FastAPI:
    """A query API app; clients are built at startup (lifespan), not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = await run_in_threadpool(_build_state, settings)
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
        )
    )

    app.add_middleware(BodyLimit, limit=MAX_QUERY_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """400 naming the field (as the engine does: filters[0].values) and the rule (pydantic's error type)."""
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": "invalid"}
        rule = str(first.get("type", "invalid"))
        field = "body" if rule == "json_invalid" else _field_name(first.get("loc", ()))
        return _error(request, 400, f"{field}: {first.get('msg')}", field=field, rule=rule)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own (a body it cannot read) and the router's too
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 400:  # FastAPI's "There was an error parsing the body" (not UTF-8, say)
            return _error(request, 400, f"body: {exc.detail}", field="body", rule="json_invalid", headers=headers)
        return _error(request, exc.status_code, str(exc.detail), headers=headers)

    async def tenant(request: Request) -> Tenant:
        """The tenant of the read key in `Authorization: Bearer <key>`; the only source of the tenant.

        Unknown keys are counted per client address (tenants/throttle.py): past the limit, every request from
        that address answers 429 with Retry-After for a while, whatever key it carries."""
        from tenants.throttle import AuthThrottle

        state: ApiState = request.app.state.api
        throttle: AuthThrottle | None = getattr(request.app.state, "auth_throttle", None)
        if throttle is None:  # built once, on the first request: the Redis client exists only after startup
            throttle = request.app.state.auth_throttle = AuthThrottle.from_settings(settings, "api", state.redis_async)
        peer = request.client.host if request.client else None
        blocked_for = throttle.retry_after(peer)
        if blocked_for is None:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            key = key.strip() if scheme.lower() == "bearer" else ""
            found = state.tenants.tenant_for_read_key(key) if key else None
            if found is not None:
                return found
            blocked_for = await throttle.failed(peer) if key else None  # only a key sent is a guess
        if blocked_for is not None:
            refusal = throttle.refusal(blocked_for, "read key")
            raise HTTPException(429, refusal, headers={"Retry-After": str(blocked_for)})
        raise HTTPException(
            401,
            "a valid read key is required: Authorization: Bearer <read key>",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.get(
        "/api/v1/metrics",
        tags=["query"],
        summary="The metric catalogue: metrics, dimensions, grains, limits.",
        response_model=CatalogueAnswer,
        responses={401: ERRORS[401]},
    )
    def catalogue(request: Request, _: Tenant = Depends(tenant)) -> dict[str, Any]:
        state: ApiState = request.app.state.api
        cat = state.catalogue
        return {
            "metrics": [
                {
                    "name": name,
                    "kind": m.kind,
                    "description": m.description,
                    "additive": m.additive,
                    "approximate": m.approximate or m.kind == "ratio",
                    "bots_included": not m.humans_only,
                }
                for name, m in cat.metrics.items()
            ],
            "dimensions": [
                {"name": name, "description": d.description, "in_rollups": d.rollup}
                for name, d in cat.dimensions.items()
            ],
            "granularities": [*GRANULARITIES, "auto"],
            "filters": ["eq", "in", "not_in"],
            "limits": {
                "max_rows": settings.api_max_rows,
                "max_buckets": settings.api_max_buckets,
                "max_range_days": settings.api_max_range_days,
                "max_filter_values": settings.api_max_filter_values,
                "max_raw_range_days": settings.api_max_raw_range_days,
                "max_cells": settings.api_max_cells,
                "rate_limit_queries": settings.api_rate_limit_queries,
                "rate_limit_window_s": settings.api_rate_limit_window_s,
            },
        }

    @app.post(
        "/api/v1/query",
        tags=["query"],
        summary="Metrics over a range, bucketed in a time zone, grouped and filtered, with provenance.",
        response_model=QueryResult,
        responses={status: ERRORS[status] for status in (400, 401, 413, 429, 503)},
    )
    async def query(request: Request, body: QueryRequest, who: Tenant = Depends(tenant)) -> Response:
        state: ApiState = request.app.state.api
        started = time.perf_counter()
        if state.limiter is not None:
            key = request.headers.get("authorization", "").partition(" ")[2].strip()  # checked by `tenant`
            verdict = await state.limiter.check(who.tenant_id, key)
            if not verdict.allowed:
                return _error(
                    request,
                    429,
                    f"this read key asked more than {settings.api_rate_limit_queries} queries in"
                    f" {settings.api_rate_limit_window_s:g} s; retry after {verdict.retry_after_s} s",
                    headers={"Retry-After": str(verdict.retry_after_s)},
                )
        try:  # every rule the parameters alone decide, before the cache key is even hashed
            check(who.tenant_id, body, state.catalogue, settings)
        except QueryError as exc:
            return _error(request, 400, str(exc), field=exc.field, rule=exc.rule)
        cached = await state.cache.get(who.tenant_id, body)
        if cached is not None:  # served from the event loop: no thread hop, no JSON parsing
            stored, age, ttl = cached
            elapsed = time.perf_counter() - started
            state.metrics.cache_hits.inc()
            state.metrics.query_seconds.labels("cache").observe(elapsed)
            return _ok(request, render(stored, True, age, ttl, elapsed * 1000))
        state.metrics.cache_misses.inc()
        try:
            result = await run_in_threadpool(_run_query, state, who.tenant_id, body)
        except QueryError as exc:
            return _error(request, 400, str(exc), field=exc.field, rule=exc.rule)
        except WarehouseUnavailable as exc:
            return _error(
                request,
                503,
                f"warehouse unavailable, try again: {exc}",
                headers={"Retry-After": str(settings.api_retry_after_s)},
            )
        prov = result.provenance
        # Raw answers never include realtime numbers; the others lack them only when Redis failed.
        degraded = prov.realtime_unavailable is not None and not any(p.source == "raw" for p in prov.parts)
        if degraded:
            state.metrics.realtime_missing.inc()
        ttl = _ttl(settings, result)
        stored = template(dump(result))
        if not degraded:  # an answer missing realtime numbers only because Redis was down is not kept
            await state.cache.put(who.tenant_id, body, stored, ttl)
        elapsed = time.perf_counter() - started
        source = prov.parts[0].source if prov.parts else "none"
        state.metrics.query_seconds.labels(source).observe(elapsed)
        return _ok(request, render(stored, False, 0.0, ttl, elapsed * 1000))

    @app.get(
        "/api/v1/live",
        tags=["query"],
        summary="Server-Sent Events: live counters on every update and every few seconds; corrections.",
        # Response, not LiveResponse: FastAPI would give every status the stream's media type.
        response_class=Response,
        status_code=200,
        responses={
            200: {
                "description": "The stream of SSE frames (docs/API.md, Live numbers).",
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            },
            429: {
                **ERRORS[429],
                "content": ERROR_CONTENT,
                "description": "This read key has its limit of live streams open (per process).",
            },
            503: {
                **ERRORS[503],
                "content": ERROR_CONTENT,
                "description": "This API process serves its limit of live streams.",
            },
        },
    )
    async def live(request: Request, who: Tenant = Depends(tenant)) -> Response:
        state: ApiState = request.app.state.api
        key = request.headers.get("authorization", "").partition(" ")[2].strip()  # checked by `tenant`
        try:
            opened = state.live_hub.open(who.tenant_id, key)  # a slot, freed when the stream ends
        except LiveLimitError as exc:
            return _error(request, exc.status, str(exc), headers={"Retry-After": str(settings.api_retry_after_s)})
        state.metrics.requests.labels("/api/v1/live", "200").inc()
        return LiveResponse(opened, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz", tags=["operations"], summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The warehouse answers; says whether realtime (Redis) does.",
        responses={
            200: {"description": "Ready: the warehouse answers.", "content": {"application/json": {"schema": READY}}},
            503: {"description": "Not ready.", "content": {"application/json": {"schema": READY}}},
        },
    )
    def readyz(request: Request) -> Response:
        state: ApiState = request.app.state.api
        checks: dict[str, str] = {}
        try:
            watermark = state.query_engine().watermark("__readiness__")
            checks["warehouse"] = "ok" if watermark is None else watermark.isoformat()
        except Exception as exc:  # any failure means not ready; the reason goes into the answer
            checks["warehouse"] = f"unavailable: {exc}"
        engine = state.engine
        replica = engine.replica_status() if engine is not None else None
        if replica is not None:  # queries read the lake until the in-memory replica has loaded
            checks["replica"] = f"snapshot {replica.snapshot_id}" if replica.ready else "loading"
        try:
            state.redis.ping()
            checks["realtime"] = "ok"
        except redis.RedisError as exc:
            checks["realtime"] = f"unavailable (answers come from the warehouse alone): {exc}"
        ready = not checks["warehouse"].startswith("unavailable")
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", **checks}, status_code=200 if ready else 503
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format).",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics(request: Request) -> Response:
        state: ApiState = request.app.state.api
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(FastAPI.openapi(app), settings, get_catalogue())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _run_query(state: ApiState, tenant_id: str, body: QueryRequest) -> QueryResult:
    return state.query_engine().run(tenant_id, body)


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


def _ttl(settings: Settings, result: QueryResult) -> int:
    """Short for answers reaching past the watermark (they change as events arrive), long for closed ranges."""
    prov = result.provenance
    wm = prov.watermark
    open_range = prov.realtime or wm is None or any(part.end > wm for part in prov.parts)
    return settings.api_cache_ttl_s if open_range else settings.api_cache_closed_ttl_s


def _ok(request: Request, body: bytes) -> Response:
    state: ApiState = request.app.state.api
    state.metrics.requests.labels("/api/v1/query", "200").inc()
    return Response(body, media_type="application/json")


def _error(
    request: Request,
    status: int,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    state: ApiState | None = getattr(request.app.state, "api", None)
    if state is not None:
        path = request.url.path if request.url.path in ENDPOINTS else "other"
        state.metrics.requests.labels(path, str(status)).inc()
    body: dict[str, Any] = {"error": _printable(message)}
    if field is not None:
        body["field"] = _printable(field)
        body["rule"] = _printable(rule) if rule is not None else None
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    return JSONResponse(body, status_code=status, headers=headers)


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate from the request (JSON "\\ud800") written as \\ud800."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _field_name(loc: Any) -> str:
    """A pydantic error location as the engine names fields: ("body", "filters", 0, "values") → filters[0].values."""
    out = ""
    for i, part in enumerate(loc):
        if i == 0 and part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "body"

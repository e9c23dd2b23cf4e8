"""The query API's FastAPI app: catalogue, queries (planned, merged with realtime, cached), live SSE, operations."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics_core.catalogue import GRANULARITIES, Catalogue, get_catalogue
from analytics_core.clients import redis_async_client, redis_client
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.cache import QueryCache, render, template
from api.engine import QueryEngine, QueryError, WarehouseUnavailable
from api.live import LiveReader, stream
from api.metrics import ApiMetrics, RealtimeCollector
from api.models import QueryRequest, QueryResult, dump
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
    metrics: ApiMetrics
    engine: QueryEngine | None = None

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
            state.redis.close()
            await state.redis_async.aclose()

    app = FastAPI(
        title="analytics query API",
        summary="Metrics from the warehouse rollups merged with the realtime layer; live numbers over SSE.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit, limit=MAX_QUERY_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(request, 400, f"{field}: {first.get('msg')}", field=field, rule=str(first.get("msg")))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None)

    async def tenant(request: Request) -> Tenant:
        """The tenant of the read key in `Authorization: Bearer <key>`; the only source of the tenant."""
        state: ApiState = request.app.state.api
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        found = state.tenants.tenant_for_read_key(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if found is None:
            raise HTTPException(
                401,
                "a valid read key is required: Authorization: Bearer <read key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    @app.get("/api/v1/metrics", tags=["query"], summary="The metric catalogue: metrics, dimensions, grains, limits.")
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
            },
        }

    @app.post(
        "/api/v1/query",
        tags=["query"],
        summary="Metrics over a range, bucketed in a time zone, grouped and filtered, with provenance.",
        response_model=QueryResult,
    )
    async def query(request: Request, body: QueryRequest, who: Tenant = Depends(tenant)) -> Response:
        state: ApiState = request.app.state.api
        started = time.perf_counter()
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
    )
    async def live(request: Request, who: Tenant = Depends(tenant)) -> StreamingResponse:
        state: ApiState = request.app.state.api
        state.metrics.requests.labels("/api/v1/live", "200").inc()
        frames = stream(state.live, state.redis_async, who.tenant_id, settings.api_live_interval_s)
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.get("/healthz", tags=["operations"], summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The warehouse answers; says whether realtime (Redis) does.")
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

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics.")
    def metrics(request: Request) -> Response:
        state: ApiState = request.app.state.api
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
        body["rule"] = rule
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    return JSONResponse(body, status_code=status, headers=headers)

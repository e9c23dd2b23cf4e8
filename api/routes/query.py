"""The catalogue and queries: planned, merged with realtime, cached.

A cached answer is served only while the data it was computed from is still what the warehouse holds
(api/engine/versions.py): the engine's Versions, an in-memory lookup (the replica's, or the catalog's
read at most once a second without it), judge the entry's stamp; a stale entry is computed again and
overwritten. Answers without a stamp (the catalog could not be read) are not cached.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from analytics_core.catalogue import GRANULARITIES
from analytics_core.settings import Settings
from api.cache import Cached, render, template
from api.deps import SettingsDep, StateDep, TenantDep
from api.engine import QueryError, Stamp, Versions, WarehouseUnavailable, check
from api.models import CatalogueAnswer, QueryRequest, QueryResult, dump
from api.openapi import ERRORS
from api.responses import error, ok
from api.state import ApiState

router = APIRouter(prefix="/api/v1", tags=["query"])


@router.get(
    "/metrics",
    summary="The metric catalogue: metrics, dimensions, grains, limits.",
    response_model=CatalogueAnswer,
    responses={401: ERRORS[401]},
)
def catalogue(state: StateDep, settings: SettingsDep, _: TenantDep) -> dict[str, Any]:
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
            {"name": name, "description": d.description, "in_rollups": d.rollup} for name, d in cat.dimensions.items()
        ],
        "granularities": [*GRANULARITIES, "total", "auto"],
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


@router.post(
    "/query",
    summary="Metrics over a range, bucketed in a time zone, grouped and filtered, with provenance.",
    response_model=QueryResult,
    responses={status: ERRORS[status] for status in (400, 401, 413, 429, 503)},
)
async def query(
    request: Request, body: QueryRequest, who: TenantDep, state: StateDep, settings: SettingsDep
) -> Response:
    started = time.perf_counter()
    refused = await over_limit(request, who.tenant_id, state, settings)
    if refused is not None:
        return refused
    try:  # every rule the parameters alone decide, before the cache key is even hashed
        check(who.tenant_id, body, state.catalogue, settings)
    except QueryError as exc:
        return error(400, str(exc), field=exc.field, rule=exc.rule)
    cached = await state.cache.get(who.tenant_id, body)
    # A hit is served from the event loop: no JSON parsing of the answer, no thread hop.
    if cached is not None and await usable(state, who.tenant_id, cached):
        elapsed = time.perf_counter() - started
        state.metrics.query_seconds.labels("cache").observe(elapsed)
        return ok(render(cached.template, True, cached.age_s, cached.ttl_s, elapsed * 1000))
    if cached is None:
        state.metrics.cache_misses.inc()
    try:
        result, stamp = await run_in_threadpool(_run_query, state, who.tenant_id, body)
    except QueryError as exc:
        return error(400, str(exc), field=exc.field, rule=exc.rule)
    except WarehouseUnavailable as exc:
        return error(
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
    # Not kept: an answer missing realtime numbers only because Redis was down, or not known to be current.
    if not degraded and stamp is not None:
        await state.cache.put(who.tenant_id, body, stored, ttl, stamp.encode())
    elapsed = time.perf_counter() - started
    source = prov.parts[0].source if prov.parts else "none"
    state.metrics.query_seconds.labels(source).observe(elapsed)
    return ok(render(stored, False, 0.0, ttl, elapsed * 1000))


def _run_query(state: ApiState, tenant_id: str, body: QueryRequest) -> tuple[QueryResult, Stamp | None]:
    return state.query_engine().run_stamped(tenant_id, body)


async def over_limit(request: Request, tenant_id: str, state: ApiState, settings: Settings) -> Response | None:
    """The 429 answer when this read key asked more queries than its rate limit allows (funnels and
    experiments count as queries too); None when it may go on."""
    if state.limiter is None:
        return None
    key = request.headers.get("authorization", "").partition(" ")[2].strip()  # checked by `tenant`
    verdict = await state.limiter.check(tenant_id, key)
    if verdict.allowed:
        return None
    return error(
        429,
        f"this read key asked more than {settings.api_rate_limit_queries} queries in"
        f" {settings.api_rate_limit_window_s:g} s; retry after {verdict.retry_after_s} s",
        headers={"Retry-After": str(verdict.retry_after_s)},
    )


async def versions_now(state: ApiState) -> Versions | None:
    """What the warehouse holds now, as the engine knows it: in memory, or read from the catalog in a thread
    (without the replica, at most once per VERSIONS_TTL_S). None: not known (no engine yet, the catalog
    unreadable), and no cached answer can be judged current."""
    engine = state.engine
    if engine is None:
        return None
    versions = engine.known_versions()
    if versions is not None:
        return versions
    try:
        return await run_in_threadpool(engine.versions)
    except WarehouseUnavailable:
        return None


async def usable(state: ApiState, tenant_id: str, cached: Cached) -> bool:
    """Whether a cache entry may be served: what the warehouse holds now is still what it was computed from
    (versions_now: without the replica, a catalog read at most once a second). Counted as a hit, or as a
    miss (and as stale when the data changed since: computed again, the entry overwritten)."""
    versions = await versions_now(state)
    if versions is not None and current(versions, tenant_id, cached.stamp):
        state.metrics.cache_hits.inc()
        return True
    if versions is not None:
        state.metrics.cache_stale.inc()
    state.metrics.cache_misses.inc()
    return False


def current(versions: Versions, tenant_id: str, stamp: bytes) -> bool:
    try:
        return versions.current(tenant_id, Stamp.decode(stamp))
    except ValueError:  # not a stamp this code wrote: a miss, overwritten
        return False


def _ttl(settings: Settings, result: QueryResult) -> int:
    """Short for answers reaching past the watermark (they change as events arrive), long for closed ranges."""
    prov = result.provenance
    wm = prov.watermark
    open_range = prov.realtime or wm is None or any(part.end > wm for part in prov.parts)
    return settings.api_cache_ttl_s if open_range else settings.api_cache_closed_ttl_s

"""Dashboard loads (GET /api/v1/dashboards/demo) on the query bench's lake (a year of events; 100M at scale large).

The lake is bench_query's (ANALYTICS_BENCH_QUERY_DIR keeps it between runs); it is only read here. Its
rollups and funnel table must hold the project's current metric and funnel definitions (else the engines
answer those tiles from raw events, which this bench refuses to time: bring the lake up to date with
`analytics dbt build` first). Two measurements:

- dashboard_load: the demo dashboard through a real `analytics api` over HTTP, cache cold: a closed 7-day range
  in UTC ending a day before the data ends, every repetition shifted back a day (a new cache key). Baseline,
  same run, alternating: the same tiles asked as separate requests of the endpoints the dashboard's engines
  serve (each tile's `asked`, one after the other), which the dashboard's loads never cached. The experiment
  tile is the one tile the same for every range: both read it from GET /api/v1/experiments/{key}'s cache entry
  after the first repetition, as a dashboard does (docs/DASHBOARDS.md, Cache).
- dashboard_cache_hit_rate: simulated viewers, in this process on the API's own code path (api.routes.dashboards
  .load, with the real Redis cache and engines) under a simulated clock: VIEWERS people open one of a few popular
  views of the demo dashboard (relative ranges, in several zones, one with a filter), each at a random moment of
  the first REFRESH_S, then reload it every REFRESH_S, for SIMULATED_S; loads run in time order with the
  simulated `now`, so relative ranges and TTLs follow that clock, not the wall clock. The clock starts inside
  the data (a day before its end), where every number comes from the warehouse: nothing here changes the lake,
  so no entry goes stale; the misses are the ranges' minutes and the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from analytics_core.dashboards import get_dashboards
from analytics_core.settings import Settings
from api.routes.dashboards import load
from api.state import build_state
from bench.bench_query import (
    EVENTS,
    EVENTS_ENV,
    READ_KEY,
    TENANT,
    USERS,
    check_redis,
    delete_redis_keys,
    lake_directory,
    lake_settings,
    percentile,
    prepare_lake,
    start_api,
)
from bench.harness import Record, Scale, record

BOARD = "demo"
LOAD_REPS = 30
CACHED_REPS = 100
SPAN = timedelta(days=7)
VIEWERS = 200
REFRESH_S = 30
SIMULATED_S = 300
# Popular views of the demo dashboard, by weight: (range, timezone, filters).
VIEWS: list[tuple[float, tuple[str, str, tuple[str, ...]]]] = [
    (0.4, ("last_7d", "UTC", ())),
    (0.25, ("last_24h", "Europe/Berlin", ())),
    (0.15, ("today", "America/New_York", ())),
    (0.1, ("last_30d", "UTC", ("country:eq:US",))),
    (0.1, ("this_month", "Asia/Kolkata", ())),
]
ENDPOINTS = {"POST /api/v1/query": "/api/v1/query", "POST /api/v1/funnels/query": "/api/v1/funnels/query"}


def run(settings: Settings, scale: Scale) -> list[Record]:
    """dashboard_load_p95 (cold) against the same tiles as separate requests; dashboard_cache_hit_rate."""
    n = int(os.environ.get(EVENTS_ENV) or EVENTS[scale])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    check_redis(settings)
    with contextlib.ExitStack() as stack:
        directory = lake_directory(stack)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dashboards-")))
        bench = lake_settings(settings, directory, f"bench.dashboards.{stamp}.")
        data_end = prepare_lake(bench, directory, n, USERS[scale])
        try:
            api, url = start_api(bench, logs)
            with (
                api,
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=300) as client,
            ):
                loads, separate, cached = _loads(client, data_end - timedelta(days=1))
            hits, total, sim_wall = asyncio.run(_simulate(bench, data_end - timedelta(hours=12)))
        finally:
            delete_redis_keys(bench, f"{bench.redis_key_prefix}*")
    ms = 1000.0
    print(
        f"dashboard load (cold): p50 {percentile(loads, 50) * ms:.1f} ms, p95 {percentile(loads, 95) * ms:.1f} ms;"
        f" the same tiles as separate requests: p50 {percentile(separate, 50) * ms:.1f} ms,"
        f" p95 {percentile(separate, 95) * ms:.1f} ms; cached p95 {percentile(cached, 95) * ms:.1f} ms"
    )
    print(f"simulated viewers: {hits} hits of {total} loads ({hits / total:.3f}) in {sim_wall:.0f} s of wall time")
    return [
        record("dashboard_events", n, "events"),
        record("dashboard_tiles_separate_p95", percentile(separate, 95) * ms, "ms"),
        record("dashboard_load_median", statistics.median(loads) * ms, "ms"),
        record(
            "dashboard_load_p95",
            percentile(loads, 95) * ms,
            "ms",
            baseline="dashboard_tiles_separate_p95",
            target="<= 150",
        ),
        record("dashboard_cached_p95", percentile(cached, 95) * ms, "ms"),
        record("dashboard_sim_loads", total, "loads"),
        record("dashboard_cache_hit_rate", hits / total, "ratio", target=">= 0.9"),
    ]


def _get(client: httpx.Client, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    answer = client.get(f"/api/v1/dashboards/{BOARD}", params=params)
    elapsed = time.perf_counter() - t0
    if answer.status_code != 200:
        raise RuntimeError(f"the dashboard answered {answer.status_code}: {answer.text[:500]}")
    return elapsed, answer.json()


def _check(answer: dict[str, Any]) -> None:
    """Every tile answered, from rollups or its table: what the lake must hold for the timings to mean anything."""
    for tile in answer["tiles"]:
        if tile["error"] is not None:
            raise RuntimeError(f"tile {tile['id']}: {tile['error']}")
        prov = tile["provenance"]
        if "raw" in prov["sources"] or "raw_events" in prov["sources"]:
            found = tile["answers"][0]
            why = found["provenance"]["realtime_unavailable"] if "provenance" in found else found.get("note")
            raise RuntimeError(
                f"tile {tile['id']} was answered from raw events ({why}): the lake's rollups or funnel table"
                " predate the current definitions; run `analytics dbt build` on it (or a copy) first"
            )


def _separately(client: httpx.Client, answer: dict[str, Any]) -> float:
    """Seconds to ask every tile's requests of its endpoint, one after the other; their numbers must be the tiles'."""
    t0 = time.perf_counter()
    for tile in answer["tiles"]:
        for asked, given in zip(tile["asked"], tile["answers"] or [], strict=False):
            if tile["endpoint"] in ENDPOINTS:
                found = client.post(ENDPOINTS[tile["endpoint"]], json=asked)
            else:
                found = client.get(f"/api/v1/experiments/{asked['experiment']}")
            if found.status_code != 200 or found.json().get("rows") != given.get("rows"):
                raise RuntimeError(f"tile {tile['id']}: its endpoint answers otherwise ({found.status_code})")
    return time.perf_counter() - t0


def _loads(client: httpx.Client, end: datetime) -> tuple[list[float], list[float], list[float]]:
    def params(k: int) -> dict[str, str]:
        stop = end - timedelta(days=k)
        return {"range": f"{(stop - SPAN).isoformat()}/{stop.isoformat()}", "timezone": "UTC"}

    _check(_get(client, params(LOAD_REPS + 1))[1])  # warm-up: a range the timed loads do not use
    loads: list[float] = []
    separate: list[float] = []
    for k in range(LOAD_REPS):
        elapsed, answer = _get(client, params(k))
        if answer["cache"]["hit"]:
            raise RuntimeError("a dashboard load of a new range was answered from the cache")
        _check(answer)
        loads.append(elapsed)
        separate.append(_separately(client, answer))
    cached = []
    for _ in range(CACHED_REPS):
        elapsed, answer = _get(client, params(0))
        if not answer["cache"]["hit"]:
            raise RuntimeError("a repeated dashboard load missed the cache")
        cached.append(elapsed)
    return loads, separate, cached


async def _simulate(settings: Settings, start: datetime) -> tuple[int, int, float]:
    """(hits, loads, wall seconds) of the simulated viewers, the clock starting at `start`."""
    state = build_state(settings)
    try:
        engine = state.query_engine()
        await asyncio.to_thread(engine.wait_replica, 900.0)
        tenant = state.tenants.tenant_for_read_key(READ_KEY)
        if tenant is None or tenant.tenant_id != TENANT:
            raise RuntimeError(f"the lake's tenants database has no read key {READ_KEY}")
        board = get_dashboards()[BOARD]
        rng = random.Random(7)
        weights = [w for w, _ in VIEWS]
        loads = []
        for _ in range(VIEWERS):
            view = rng.choices([v for _, v in VIEWS], weights)[0]
            first = rng.uniform(0, REFRESH_S)
            loads += [(first + k * REFRESH_S, view) for k in range(int((SIMULATED_S - first) // REFRESH_S) + 1)]
        loads.sort(key=lambda item: item[0])
        origin = start.timestamp()
        hits = 0
        wall = time.perf_counter()
        for offset, (expression, zone, filters) in loads:
            answer = await load(state, tenant.tenant_id, board, expression, zone, list(filters), origin + offset)
            hits += bool(answer["cache"]["hit"])
        return hits, len(loads), time.perf_counter() - wall
    finally:
        if state.engine is not None:
            state.engine.close()
        await state.live_hub.close()
        state.redis.close()
        await state.redis_async.aclose()

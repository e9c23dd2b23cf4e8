"""Dashboards: the definitions in dashboards/ (analytics_core/dashboards.py), and every tile of one in one answer.

A load resolves its range in its time zone (api/engine/dashboard_params.py), checks every tile's reads by the
rules their endpoints apply (api/engine/dashboards.py, plan), then answers from the cache or computes the tiles
on the engines behind POST /api/v1/query, POST /api/v1/funnels/query and GET /api/v1/experiments/{key}, at most
TILE_READS reads at once (each on a worker thread with a cursor of its own: QueryEngine reads are thread-safe).

The answer is cached in Redis under `api:{tenant}:d:<dashboard id>:<hash>`, the hash of the resolved range, time
zone, filters, and the definitions it was computed with (the dashboard's, the funnels' and experiments', the
catalogue's); with the stamps of every read (api/engine/versions.py), so it is served only while every table it
read is unchanged and no watermark moved within its ranges (api/routes/query.py, usable's rule). TTL: 60 s when
the range reaches now (or a tile's numbers do), else the closed-range TTL. Live tiles are never cached: each load
reads the realtime layer's totals afresh. `/metrics` counts hits, misses and stale entries per dashboard.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import redis
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from analytics_core.catalogue import get_catalogue
from analytics_core.dashboards import RELATIVE_RANGES, Dashboard, ExperimentTile, LiveTile, get_dashboards
from analytics_core.funnels import get_definitions, get_table_hashes
from api.cache import catalogue_hash
from api.deps import SettingsDep, StateDep, TenantDep
from api.engine import QueryError, WarehouseUnavailable, known_zones
from api.engine import dashboards as tiles
from api.engine.answer import UNIQUE_RELATIVE_ERROR
from api.engine.dashboard_params import MAX_FILTER_LENGTH, MAX_FILTERS, RANGE_PATTERN, View, view
from api.engine.funnels import TableNotReady
from api.models import DashboardAnswer, DashboardList
from api.openapi import ERRORS
from api.responses import error, ok
from api.routes.experiments import experiment_question
from api.routes.query import current, over_limit, usable, versions_now
from api.state import ApiState


@asynccontextmanager
async def _checked(_: Any) -> AsyncIterator[None]:
    """The dashboards are read and checked as the API starts: a mistake stops it, naming the file, field and rule."""
    get_dashboards()
    yield


router = APIRouter(prefix="/api/v1", tags=["dashboards"], lifespan=_checked)
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
TILE_READS = 4  # reads of one load computed at once (2 cores: DuckDB's own threads do the rest)


def _zones_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(known_zones())  # the names of the zone database, and nothing else


def _filters_schema(schema: dict[str, Any]) -> None:
    dimensions = "|".join(sorted(get_catalogue().dimensions))
    pattern = f"^({dimensions}):(eq|in|not_in):.*$"
    schema.update(maxItems=MAX_FILTERS, items={"type": "string", "pattern": pattern, "maxLength": MAX_FILTER_LENGTH})


class Refused(Exception):
    """A load that cannot be answered: the status and the error body's parts."""

    def __init__(self, status: int, message: str, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.rule = status, message, field, rule


def info(board: Dashboard) -> dict[str, Any]:
    return {
        "id": board.id,
        "version": board.version,
        "title": board.title,
        "description": board.description,
        "range": board.range,
        "timezone": board.timezone,
        "definition_hash": board.definition_hash,
        "tiles": [{"id": t.id, "kind": t.kind, "title": t.title, "width": t.width} for t in board.tiles],
    }


@router.get(
    "/dashboards",
    summary="The defined dashboards: id, title, version, default range and time zone, their tiles.",
    response_model=DashboardList,
    responses={401: ERRORS[401]},
)
def dashboards(_: TenantDep) -> dict[str, Any]:
    return {"dashboards": [info(board) for board in get_dashboards().values()]}


@router.get(
    "/dashboards/{id}",
    summary="Every tile of a dashboard for a range, time zone and filters, each with its provenance; cached.",
    response_model=DashboardAnswer,
    responses={
        **{status: ERRORS[status] for status in (400, 401, 429, 503)},
        404: {**ERRORS[404], "description": "No such dashboard is defined (GET /api/v1/dashboards lists them)."},
    },
)
async def dashboard(
    request: Request,
    who: TenantDep,
    state: StateDep,
    settings: SettingsDep,
    id: str = Path(pattern=KEY_PATTERN, max_length=63, description="The dashboard's id.", examples=["demo"]),
    range_: str = Query(  # None when not given (the schema is the given value's)
        None,
        alias="range",
        description=f"{', '.join(RELATIVE_RANGES)} (whole units in `timezone`, the current one last), or"
        " <start>/<end> in ISO 8601 (a date or a date-time; without an offset read in `timezone`; `+` written %2B)."
        " Default: the dashboard's.",
        json_schema_extra={"pattern": RANGE_PATTERN},
    ),
    timezone: str = Query(
        None,
        description="IANA time zone the range and the buckets are in. Default: the dashboard's.",
        json_schema_extra=_zones_schema,
    ),
    filter_: list[str] = Query(
        [],
        alias="filter",
        description=f"Repeatable, at most {MAX_FILTERS}: dimension:op:values, op eq (one value: the rest of the"
        " text), in or not_in (comma-separated values), e.g. country:eq:DE, device:in:mobile,tablet. Added to"
        " every metric tile's own filters.",
        json_schema_extra=_filters_schema,
    ),
) -> Response:
    refused = await over_limit(request, who.tenant_id, state, settings)
    if refused is not None:
        return refused
    board = get_dashboards().get(id)
    if board is None:
        return error(404, f"no dashboard {id!r} is defined (GET /api/v1/dashboards lists them)", "id", "defined")
    try:
        answer = await load(
            state,
            who.tenant_id,
            board,
            board.range if range_ is None else range_,  # given empty: refused, never read as the default
            board.timezone if timezone is None else timezone,
            filter_,
        )
    except Refused as exc:
        headers = {"Retry-After": str(settings.api_retry_after_s)} if exc.status == 503 else None
        return error(exc.status, exc.message, exc.field, exc.rule, headers)
    return ok(orjson.dumps(answer))


async def load(
    state: ApiState,
    tenant_id: str,
    board: Dashboard,
    expression: str,
    timezone: str,
    filters: list[str],
    now: float | None = None,
) -> dict[str, Any]:
    """The answer to one load (Refused when it cannot be given); `now`: the clock (a simulated one in the bench)."""
    started = time.perf_counter()
    clock = time.time() if now is None else now
    settings = state.settings
    try:
        seen = view(expression, timezone, filters, list(state.catalogue.dimensions), clock, settings)
    except QueryError as exc:
        raise Refused(400, str(exc), exc.field, exc.rule) from None
    try:
        engine = state.query_engine()
    except WarehouseUnavailable as exc:
        raise Refused(503, f"warehouse unavailable, try again: {exc}") from None
    plans = tiles.plan(board, seen, tenant_id, state.catalogue, settings)  # every read checked before any is made
    live = [p for p in plans if p.endpoint == tiles.LIVE]
    live_reads = asyncio.gather(*(_live(state, tenant_id, board.tiles[p.index], clock) for p in live))
    question = {**_definitions(board, state), **seen.question()}
    kind = f"d:{board.id}"
    answer = await _cached(state, tenant_id, board.id, question, kind, clock)
    if answer is None:
        answer, ttl, stamps = await _compute(state, engine, tenant_id, board, seen, plans, clock)
        if stamps is not None:
            await state.cache.put(tenant_id, question, orjson.dumps(answer), ttl, stamps, kind)
        answer["cache"] = {"hit": False, "age_s": 0.0, "ttl_s": ttl}
    for p, (found, tile_error) in zip(live, await live_reads, strict=True):
        answer["tiles"][p.index] = tiles.tile(board, p, None, tile_error) if tile_error else found
    for t in answer["tiles"]:
        if t["provenance"] is not None and t["kind"] != "live":
            t["provenance"]["cache"] = answer["cache"]
    answer["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    state.metrics.dashboard_seconds.labels(board.id, "hit" if answer["cache"]["hit"] else "miss").observe(
        time.perf_counter() - started
    )
    return answer


@lru_cache(maxsize=1)
def _funnels_hash() -> str:
    defined = get_definitions().model_dump_json().encode() + orjson.dumps(
        get_table_hashes(), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(defined).hexdigest()[:16]


def _definitions(board: Dashboard, state: ApiState) -> dict[str, Any]:
    """What the answer was defined by: the dashboard as loaded, the funnels and experiments, the catalogue."""
    return {
        "dashboard": board.id,
        "version": board.version,
        "definition": board.definition_hash,
        "funnels": _funnels_hash(),
        "catalogue": catalogue_hash(state.catalogue),
    }


async def _cached(
    state: ApiState, tenant_id: str, board_id: str, question: dict[str, Any], kind: str, clock: float
) -> dict[str, Any] | None:
    """The stored answer while it is younger than its TTL and every read's stamp is current; else None (a miss)."""
    metrics = state.metrics
    cached = await state.cache.get(tenant_id, question, kind)
    try:
        answer = None if cached is None else orjson.loads(cached.template)
        stamps = [] if cached is None else [orjson.dumps(s) for s in orjson.loads(cached.stamp)]
    except (orjson.JSONDecodeError, TypeError):  # not an entry this code stored: computed again, overwritten
        answer = None
    if cached is None or answer is None:
        metrics.dashboard_misses.labels(board_id).inc()
        return None
    age = clock - datetime.fromisoformat(answer["computed_at"]).timestamp()
    if age > cached.ttl_s:  # Redis expires it in real time; a simulated clock (the bench) expires it here
        metrics.dashboard_misses.labels(board_id).inc()
        return None
    versions = await versions_now(state)
    if versions is None or not all(current(versions, tenant_id, s) for s in stamps):
        if versions is not None:
            metrics.dashboard_stale.labels(board_id).inc()
        metrics.dashboard_misses.labels(board_id).inc()
        return None
    metrics.dashboard_hits.labels(board_id).inc()
    answer["cache"] = {"hit": True, "age_s": round(max(age, 0.0), 3), "ttl_s": cached.ttl_s}
    return answer


async def _compute(
    state: ApiState,
    engine: Any,
    tenant_id: str,
    board: Dashboard,
    seen: View,
    plans: list[tiles.TilePlan],
    clock: float,
) -> tuple[dict[str, Any], int, bytes | None]:
    """Every tile computed (at most TILE_READS reads at once): the answer, its TTL, its stamps (None: not kept)."""
    settings = state.settings
    versions = await versions_now(state)  # before reading: funnel and experiment data is at least this new
    when = datetime.fromtimestamp(clock, UTC)
    slots = asyncio.Semaphore(TILE_READS)

    async def one(p: tiles.TilePlan, k: int) -> tiles.Outcome | dict[str, Any]:
        tile = board.tiles[p.index]
        async with slots:
            shared = await _experiment(state, tenant_id, tile) if isinstance(tile, ExperimentTile) else None
            if shared is not None:
                return shared
            try:
                found = await run_in_threadpool(tiles.read, engine, board, p, k, tenant_id, versions, when, settings)
            except QueryError as exc:  # found only when read: e.g. more cells than the cap
                return tiles.refusal(exc, tile.id, len(seen.filters))
            except (WarehouseUnavailable, TableNotReady) as exc:
                return tiles.unavailable(exc)
            if isinstance(tile, ExperimentTile) and found.stamp is not None:
                ttl = settings.api_cache_closed_ttl_s  # as the experiments route keeps it
                entry = orjson.dumps({**found.answer, "cache": {"hit": False, "age_s": 0.0, "ttl_s": ttl}})
                await state.cache.put(tenant_id, _experiment_question(tile), entry, ttl, found.stamp, "x")
            return found

    reads = [(p, k) for p in plans if p.error is None and p.endpoint != tiles.LIVE for k in range(len(p.asked))]
    # The funnel and experiment tables are read from the lake (tens of ms, its catalog included), the rollups from
    # the in-memory replica: the lake's reads start first, so the others run beside them.
    reads.sort(key=lambda read: read[0].endpoint == tiles.QUERY)
    found = await asyncio.gather(*(one(p, k) for p, k in reads))
    by_tile: dict[int, list[Any]] = {}
    for (p, _), outcome in zip(reads, found, strict=True):
        by_tile.setdefault(p.index, []).append(outcome)
    answer_tiles, stamps = [], []
    keep, short = versions is not None, seen.period.open
    for p in plans:
        got = by_tile.get(p.index, [])
        failed = next((o for o in got if isinstance(o, dict)), None)
        outcomes = [o for o in got if isinstance(o, tiles.Outcome)]
        answer_tiles.append(tiles.tile(board, p, None if failed or p.endpoint == tiles.LIVE else outcomes, failed))
        keep = keep and not (failed and failed["status"] == 503)
        for o in outcomes:
            keep = keep and o.stamp is not None and not o.degraded
            short = short or o.open
            if o.stamp is not None:
                stamps.append(o.stamp)
    period, zone = seen.period, seen.zone
    answer = {
        "dashboard": info(board),
        "range": {
            "expression": period.expression,
            "start": datetime.fromtimestamp(period.start, zone).isoformat(),
            "end": datetime.fromtimestamp(period.end, zone).isoformat(),
            "counted_until": datetime.fromtimestamp(period.cut, zone).isoformat(),
            "open": period.open,
            "timezone": seen.timezone,
        },
        "filters": [{"dimension": c.dimension, "op": c.op, "values": list(c.values)} for c in seen.filters],
        "tiles": answer_tiles,
        "computed_at": when.isoformat(),
        "cache": None,
        "elapsed_ms": None,
    }
    ttl = settings.api_cache_ttl_s if short else settings.api_cache_closed_ttl_s
    return answer, ttl, (b"[" + b",".join(stamps) + b"]") if keep else None


def _experiment_question(tile: ExperimentTile) -> dict[str, Any]:
    return experiment_question(tile.experiment, get_definitions().experiments[tile.experiment])


async def _experiment(state: ApiState, tenant_id: str, tile: ExperimentTile) -> tiles.Outcome | None:
    """The experiment's answer from GET /api/v1/experiments/{key}'s cache entry (one answer for every range), while
    it is current (usable: counted as that endpoint's hits and misses); None: to be read."""
    cached = await state.cache.get(tenant_id, _experiment_question(tile), "x")
    if cached is None:
        state.metrics.cache_misses.inc()
        return None
    try:
        answer = orjson.loads(cached.template)
    except orjson.JSONDecodeError:  # not an entry this code stored: read again and overwritten
        return None
    if not await usable(state, tenant_id, cached):
        return None
    answer.pop("cache", None)
    return tiles.Outcome(answer, cached.stamp, False)


async def _live(
    state: ApiState, tenant_id: str, tile: Any, clock: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A live tile read now: its metrics' totals over the realtime layer's window; or its error."""
    assert isinstance(tile, LiveTile)
    try:
        snap = await state.live.snapshot(state.redis_async, tenant_id, clock)
    except (redis.RedisError, OSError) as exc:
        return None, {
            "status": 503,
            "error": f"the realtime layer cannot be read now: {exc}",
            "field": None,
            "rule": None,
        }
    values = {**snap["totals"], **snap["users"]}
    names = tile.metrics
    found = {
        "at": snap["at"],
        "window_s": snap["window_s"],
        "window_start": snap["window_start"],
        "totals": {m: values.get(m) for m in names},
        "approximate": {m: a for m, a in snap["approximate"].items() if m in names},
        "minutes": [{"minute": row["minute"], **{m: row[m] for m in names if m in row}} for row in snap["minutes"]],
    }
    estimated = {
        m: {"method": "hyperloglog", "relative_error": UNIQUE_RELATIVE_ERROR}
        for m, a in found["approximate"].items()
        if a == "hyperloglog"
    }
    out = {
        "id": tile.id, "kind": "live", "title": tile.title, "description": tile.description, "width": tile.width,
        "endpoint": tiles.LIVE, "asked": [], "answers": [found], "number": None, "error": None,
        "provenance": {"sources": ["realtime"], "watermark": None, "as_of": snap["at"], "realtime": True,
                       "approximate": estimated, "incomplete": [],
                       "notes": ["the realtime layer's last minutes, whatever the range; no filters apply"],
                       "cache": {"hit": False, "age_s": 0.0, "ttl_s": 0}},
    }  # fmt: skip
    return out, None

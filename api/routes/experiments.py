"""Funnels and experiments: definitions, funnel queries, an experiment's results (docs/FUNNELS.md, EXPERIMENTS.md).

Definitions come from dbt_project.yml (analytics_core/funnels.py), the same for every tenant;
answers are the tenant's own: its rows of the tables the hourly job builds, or its staged events
for ad-hoc funnels (api/engine/funnels.py).

Answers are cached like /query's (api/cache.py): keyed by tenant and the question (a defined funnel's or
experiment's definition included), stamped with the lake snapshot and the tables they read, and served
only while those tables have not changed since (api/engine/versions.py). Experiment answers and funnel
answers from the daily table keep for the closed-range TTL; a funnel counted from the staged events
whose windows may still be open (pending users change with the clock) for the open-range TTL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from analytics_core.funnels import Experiment, Funnel, get_definitions, get_table_hashes
from api.deps import SettingsDep, StateDep, TenantDep
from api.engine import QueryError, Stamp, WarehouseUnavailable
from api.engine import funnels as funnel_paths
from api.engine.experiments import definition, results
from api.engine.versions import EVENTS_TABLE, EXPERIMENT_TABLES, FUNNEL_TABLE
from api.models import ExperimentList, ExperimentResult, FunnelAnswer, FunnelList, FunnelQuery
from api.openapi import ERRORS
from api.responses import error, ok
from api.routes.query import over_limit, usable, versions_now
from api.state import ApiState

router = APIRouter(prefix="/api/v1", tags=["funnels and experiments"])
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


@router.get(
    "/funnels",
    summary="The defined funnels: steps, window, order, exclusions, breakdowns.",
    response_model=FunnelList,
    responses={401: ERRORS[401]},
)
def funnels(_: TenantDep) -> dict[str, Any]:
    return {
        "funnels": [
            {
                "key": key,
                "title": f.title or key,
                "description": f.description,
                "steps": _steps(f),
                "window_s": f.window,
                "order": f.order,
                "exclusions": [e.canonical() for e in f.exclusions],
                "hold_constant": f.hold_constant,
                "breakdowns": list(f.breakdowns),
            }
            for key, f in get_definitions().funnels.items()
        ]
    }


def _steps(funnel: Funnel) -> list[dict[str, Any]]:
    return [
        {"event_type": s.event_type, "where": {k: list(v) for k, v in s.where.items()}, "title": s.label}
        for s in funnel.steps
    ]


@router.get(
    "/experiments",
    summary="The defined experiments: variants and their planned split, span, metrics.",
    response_model=ExperimentList,
    responses={401: ERRORS[401]},
)
def experiments(_: TenantDep) -> dict[str, Any]:
    return {"experiments": [definition(key, e) for key, e in get_definitions().experiments.items()]}


@router.get(
    "/experiments/{key}",
    summary="An experiment's results: users per variant, the significance table, the SRM check, the verdict.",
    response_model=ExperimentResult,
    responses={status: ERRORS[status] for status in (400, 401, 404, 429, 503)},
)
async def experiment(
    request: Request,
    who: TenantDep,
    state: StateDep,
    settings: SettingsDep,
    key: str = Path(pattern=KEY_PATTERN, max_length=63),
) -> Any:
    started = time.perf_counter()
    refused = await over_limit(request, who.tenant_id, state, settings)
    if refused is not None:
        return refused
    defined = get_definitions().experiments.get(key)
    if defined is None:
        return error(404, f"no experiment {key!r} is defined (GET /api/v1/experiments lists them)", "key", "defined")
    question = experiment_question(key, defined)
    hit = await _cached(state, who.tenant_id, question, "x", started)
    if hit is not None:
        return hit
    versions = await versions_now(state)  # before reading: the data read is at least this new
    try:
        engine = state.query_engine()
        answer = await run_in_threadpool(results, engine.read_lake, who.tenant_id, key, defined)
    except WarehouseUnavailable as exc:
        return error(
            503,
            f"the experiment's tables cannot be read now (not built yet, or the warehouse is busy): {exc}",
            headers={"Retry-After": str(settings.api_retry_after_s)},
        )
    stamp = None if versions is None else versions.table_stamp(EXPERIMENT_TABLES)
    return await _store(
        state, who.tenant_id, question, "x", ExperimentResult, answer, stamp, settings.api_cache_closed_ttl_s, started
    )


def experiment_question(key: str, defined: Experiment) -> dict[str, Any]:
    """What an experiment's answer is cached under (kind `x`): its key and the definition it was counted with."""
    return {"experiment": key, "definition": defined.model_dump(mode="json")}


@router.post(
    "/funnels/query",
    summary="A defined or ad-hoc funnel over a range: per cohort day or in total, optionally by a dimension.",
    response_model=FunnelAnswer,
    responses={status: ERRORS[status] for status in (400, 401, 404, 413, 429, 503)},
)
async def funnel_query(
    request: Request, body: FunnelQuery, who: TenantDep, state: StateDep, settings: SettingsDep
) -> Any:
    started = time.perf_counter()
    refused = await over_limit(request, who.tenant_id, state, settings)
    if refused is not None:
        return refused
    if (body.funnel is None) == (body.definition is None):
        return error(400, "give either `funnel` (a defined funnel's key) or `definition`", "funnel", "one_of")
    funnel = body.definition
    if body.funnel is not None:
        funnel = get_definitions().funnels.get(body.funnel)
        if funnel is None:
            return error(
                404, f"no funnel {body.funnel!r} is defined (GET /api/v1/funnels lists them)", "funnel", "defined"
            )
    assert funnel is not None
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (body.start, body.end))
    by_day = body.granularity == "day"
    table = funnel_paths.uses_table(body.funnel, funnel, start, end, body.breakdown, by_day)
    try:  # the table's longer limit only where it may answer
        funnel_paths.check_range(start, end, not table, settings.api_max_range_days, settings.api_max_raw_range_days)
    except QueryError as exc:
        return error(400, str(exc), exc.field, exc.rule)
    cap = settings.api_max_rows
    table_hash = get_table_hashes().get(body.funnel) if body.funnel is not None else None
    # The definition counted, and the table's hash (which path may answer), are part of the question.
    question = {
        "query": body.model_dump(mode="json"),
        "definition": funnel.model_dump(mode="json"),
        "table": table_hash,
    }
    hit = await _cached(state, who.tenant_id, question, "f", started)
    if hit is not None:
        return hit
    versions = await versions_now(state)  # before reading: the data read is at least this new
    try:
        engine = state.query_engine()
        found = await run_in_threadpool(
            funnel_paths.answer, engine.read_lake, engine.alias, who.tenant_id, body.funnel, funnel, start, end,
            body.breakdown, by_day, cap, table_hash, settings.api_max_raw_range_days,
        )  # fmt: skip
    except (WarehouseUnavailable, funnel_paths.TableNotReady) as exc:
        return error(
            503,
            f"the funnel cannot be read now (tables not built yet, or the warehouse is busy): {exc}",
            headers={"Retry-After": str(settings.api_retry_after_s)},
        )
    rows = found["rows"]
    answer = {
        "funnel": body.funnel,
        "source": found["source"],
        "note": found["note"],
        "steps": _steps(funnel),
        "start": start,
        "end": end,
        "granularity": body.granularity,
        "breakdown": body.breakdown,
        "rows": rows[:cap],
        "truncated": len(rows) > cap,
        "as_of": found["as_of"],
    }
    from_table = found["source"] == FUNNEL_TABLE
    stamp = None if versions is None else versions.table_stamp([FUNNEL_TABLE if from_table else EVENTS_TABLE])
    ttl = (
        settings.api_cache_closed_ttl_s
        if from_table or _closed(end, funnel, found["as_of"])
        else settings.api_cache_ttl_s
    )
    return await _store(state, who.tenant_id, question, "f", FunnelAnswer, answer, stamp, ttl, started)


def _closed(end: datetime, funnel: Funnel, as_of: datetime | None) -> bool:
    """Whether every window of the range had ended when the answer was counted: no user can be pending."""
    return as_of is not None and end + timedelta(seconds=funnel.window) <= as_of


async def _cached(
    state: ApiState, tenant_id: str, question: dict[str, Any], kind: str, started: float
) -> Response | None:
    """The cached answer to `question`, while the tables it was read from have not changed since; else None."""
    cached = await state.cache.get(tenant_id, question, kind)
    try:
        answer = None if cached is None else orjson.loads(cached.template)
    except orjson.JSONDecodeError:  # not an answer this code stored: computed again and overwritten
        answer = None
    if cached is None or answer is None:
        state.metrics.cache_misses.inc()
        return None
    if not await usable(state, tenant_id, cached):
        return None
    answer["cache"] = {"hit": True, "age_s": round(cached.age_s, 3), "ttl_s": cached.ttl_s}
    answer["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return ok(orjson.dumps(answer))


async def _store(
    state: ApiState,
    tenant_id: str,
    question: dict[str, Any],
    kind: str,
    model: type[BaseModel],
    answer: dict[str, Any],
    stamp: Stamp | None,
    ttl_s: int,
    started: float,
) -> Response:
    """The answer as JSON, kept in the cache under `question` when its stamp is known."""
    answer = model.model_validate(answer).model_dump(mode="json")
    answer["cache"] = {"hit": False, "age_s": 0.0, "ttl_s": ttl_s}
    if stamp is not None:  # a hit writes its own cache info and elapsed time over the stored ones
        await state.cache.put(tenant_id, question, orjson.dumps(answer), ttl_s, stamp.encode(), kind)
    answer["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return ok(orjson.dumps(answer))

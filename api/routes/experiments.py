"""Funnels and experiments: definitions, funnel queries, an experiment's results (docs/FUNNELS.md, EXPERIMENTS.md).

Definitions come from dbt_project.yml (analytics_core/funnels.py), the same for every tenant;
answers are the tenant's own: its rows of the tables the hourly job builds, or its staged events
for ad-hoc funnels (api/engine/funnels.py). They are read on each request, not cached.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from analytics_core.funnels import Funnel, get_definitions, get_table_hashes
from api.deps import SettingsDep, StateDep, TenantDep
from api.engine import QueryError, WarehouseUnavailable
from api.engine import funnels as funnel_paths
from api.engine.experiments import definition, results
from api.models import ExperimentList, ExperimentResult, FunnelAnswer, FunnelList, FunnelQuery
from api.openapi import ERRORS
from api.responses import error
from api.routes.query import over_limit

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
    try:
        engine = state.query_engine()
        answer = await run_in_threadpool(results, engine.read_lake, who.tenant_id, key, defined)
    except WarehouseUnavailable as exc:
        return error(
            503,
            f"the experiment's tables cannot be read now (not built yet, or the warehouse is busy): {exc}",
            headers={"Retry-After": str(settings.api_retry_after_s)},
        )
    answer["elapsed_ms"] = (time.perf_counter() - started) * 1000
    return answer


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
    return {
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
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    }

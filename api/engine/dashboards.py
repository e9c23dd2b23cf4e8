"""A dashboard's tiles, each asked of the engine behind its endpoint, so a tile and its endpoint cannot disagree.

Every tile becomes one or two reads, each the request its endpoint takes (`asked`), answered the way that
endpoint answers it: a series, number or breakdown tile is a QueryRequest answered by QueryEngine.run_stamped
(POST /api/v1/query; a number tile asks the previous period too), a funnel tile a defined funnel per cohort day
answered by api/engine/funnels.py (POST /api/v1/funnels/query), an experiment tile its results from
api/engine/experiments.py (GET /api/v1/experiments/{key}). plan() builds and checks every read from the
parameters alone (the query API's own check()), before anything is read; read() runs one; tile() puts a tile's
answers together with its provenance. The live tile is the route's (an async Redis read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_core.catalogue import Catalogue
from analytics_core.dashboards import BreakdownTile, Dashboard, ExperimentTile, FunnelTile, NumberTile, SeriesTile
from analytics_core.funnels import get_definitions, get_table_hashes
from analytics_core.settings import Settings
from api.engine import funnels as funnel_paths
from api.engine import timebuckets
from api.engine.dashboard_params import View
from api.engine.errors import QueryError
from api.engine.experiments import results
from api.engine.query_engine import QueryEngine
from api.engine.validation import check
from api.engine.versions import EVENTS_TABLE, EXPERIMENT_TABLES, FUNNEL_TABLE, Versions
from api.models import ExperimentResult, FunnelAnswer, QueryRequest, QueryResult, dump

QUERY, FUNNEL, EXPERIMENT, LIVE = (
    "POST /api/v1/query",
    "POST /api/v1/funnels/query",
    "GET /api/v1/experiments/{key}",
    "GET /api/v1/live",
)
NO_FILTERS = "the dashboard's filters do not apply: {endpoint} takes no dimension filters"


@dataclass
class Outcome:
    """One read's answer (as its endpoint answers, without cache and elapsed_ms) and what it was computed from."""

    answer: dict[str, Any]
    stamp: bytes | None  # api/engine/versions.py Stamp, encoded; None: not known, so not cacheable
    open: bool  # may change before the closed-range TTL (it reaches past the watermark, or pending users)
    degraded: bool = False  # without the realtime numbers it should have (Redis down)


@dataclass
class TilePlan:
    """A tile's reads, as the requests their endpoint takes, or why it cannot be answered with these parameters."""

    index: int
    endpoint: str
    asked: list[dict[str, Any]] = field(default_factory=list)
    requests: list[QueryRequest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None


def _iso(t: int, zone: Any) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


def _query_body(tile: SeriesTile | NumberTile | BreakdownTile, view: View, start: int, end: int) -> dict[str, Any]:
    filters = [{"dimension": c.dimension, "op": c.op, "values": list(c.values)} for c in view.filters]
    filters += [{"dimension": f.dimension, "op": f.op, "values": list(f.values)} for f in tile.filters]
    body: dict[str, Any] = {
        "metrics": [tile.metric] if isinstance(tile, NumberTile | BreakdownTile) else list(tile.metrics),
        "start": _iso(start, view.zone),
        "end": _iso(end, view.zone),
        "timezone": view.timezone,
        "filters": filters,
    }
    if isinstance(tile, SeriesTile):
        grain = tile.granularity
        # auto: the query API's rule, judged on the whole period, so a chart keeps its buckets all day
        period = view.period
        body["granularity"] = timebuckets.auto_granularity(period.end - period.start) if grain == "auto" else grain
        body["group_by"] = [tile.stack_by] if tile.stack_by else []
        body["top_n"] = tile.top
    elif isinstance(tile, BreakdownTile):
        body.update(granularity="total", group_by=[tile.dimension], top_n=tile.top)
    else:
        body.update(granularity="total", group_by=[])
    return body


def _funnel_range(view: View) -> tuple[datetime, datetime]:
    """The period widened to whole UTC days: cohort days are UTC, and whole days are read from the daily table."""
    start = datetime.fromtimestamp(view.period.start, UTC).replace(hour=0, minute=0, second=0)
    end = datetime.fromtimestamp(view.period.end, UTC)
    if end.time() != datetime.min.time():
        end = end.replace(hour=0, minute=0, second=0) + timedelta(days=1)
    return start, end


def plan(board: Dashboard, view: View, tenant_id: str, catalogue: Catalogue, settings: Settings) -> list[TilePlan]:
    """Every tile's reads, checked by the rules their endpoints apply before reading (nothing is read here)."""
    plans = []
    for i, tile in enumerate(board.tiles):
        if isinstance(tile, SeriesTile | NumberTile | BreakdownTile):
            p = TilePlan(i, QUERY)
            period = view.period
            spans = [(period.start, period.cut)]
            if isinstance(tile, NumberTile) and tile.compare == "previous_period":
                spans.append(period.previous(view.zone))
            try:
                for start, end in spans:
                    body = _query_body(tile, view, start, end)
                    request = QueryRequest.model_validate(body)
                    check(tenant_id, request, catalogue, settings)
                    p.asked.append(body)
                    p.requests.append(request)
            except QueryError as exc:
                p.error = refusal(exc, tile.id, len(view.filters))
        elif isinstance(tile, FunnelTile):
            p = TilePlan(i, FUNNEL, notes=[NO_FILTERS.format(endpoint=FUNNEL)] if view.filters else [])
            first, last = _funnel_range(view)
            if (first.timestamp(), last.timestamp()) != (view.period.start, view.period.end):
                p.notes.append(
                    f"cohort days are UTC days: the range is widened to [{first.isoformat()}, {last.isoformat()})"
                )
            funnel = get_definitions().funnels[tile.funnel]
            p.asked.append(
                {
                    "funnel": tile.funnel,
                    "start": first.isoformat(),
                    "end": last.isoformat(),
                    "granularity": "day",
                    "breakdown": tile.breakdown,
                }
            )
            table = funnel_paths.uses_table(tile.funnel, funnel, first, last, tile.breakdown, True)
            try:
                funnel_paths.check_range(
                    first, last, not table, settings.api_max_range_days, settings.api_max_raw_range_days
                )
            except QueryError as exc:
                p.error = refusal(exc, tile.id, 0)
        elif isinstance(tile, ExperimentTile):
            p = TilePlan(i, EXPERIMENT, asked=[{"experiment": tile.experiment}])
            p.notes.append("the results cover the experiment's own span: the dashboard's range does not apply")
            if view.filters:
                p.notes.append(NO_FILTERS.format(endpoint=EXPERIMENT))
        else:
            p = TilePlan(i, LIVE, notes=["the realtime layer's last minutes, whatever the range; no filters apply"])
        plans.append(p)
    return plans


def refusal(exc: QueryError, tile_id: str, view_filters: int) -> dict[str, Any]:
    """A tile's 400, naming the load's parameter that caused it (`range`, `filter[i]`) or the tile's own field."""
    found = re.match(r"filters\[(\d+)\](.*)", exc.field)
    if found:
        i = int(found.group(1))
        name = f"filter[{i}]" if i < view_filters else f"tiles.{tile_id}.filters[{i - view_filters}]{found.group(2)}"
    elif exc.field == "timezone":
        name = "timezone"
    else:  # the range's rules: end, granularity (buckets), group_by (cells), limit
        name = "range"
    return {"status": 400, "error": f"{name}: {exc.message} (rule: {exc.rule})", "field": name, "rule": exc.rule}


def unavailable(exc: Exception) -> dict[str, Any]:
    return {
        "status": 503,
        "error": f"the warehouse cannot answer this tile now, retry: {exc}",
        "field": None,
        "rule": None,
    }


def read(
    engine: QueryEngine,
    board: Dashboard,
    p: TilePlan,
    k: int,
    tenant_id: str,
    versions: Versions | None,
    now: datetime | None,
    settings: Settings,
) -> Outcome:
    """Read k of a tile's plan, by its endpoint's engine; QueryError, WarehouseUnavailable or TableNotReady."""
    tile = board.tiles[p.index]
    if isinstance(tile, FunnelTile):
        return _funnel(engine, tile, p.asked[0], tenant_id, versions, settings)
    if isinstance(tile, ExperimentTile):
        defined = get_definitions().experiments[tile.experiment]
        answer = results(engine.read_lake, tenant_id, tile.experiment, defined)
        out = ExperimentResult.model_validate(answer).model_dump(mode="json", exclude={"cache", "elapsed_ms"})
        tables = versions.table_stamp(EXPERIMENT_TABLES).encode() if versions is not None else None
        return Outcome(out, tables, False)
    result, stamp = engine.run_stamped(tenant_id, p.requests[k], now)
    prov = result.provenance
    degraded = prov.realtime_unavailable is not None and not any(part.source == "raw" for part in prov.parts)
    answer = dump(result)
    answer["provenance"].pop("cache")
    answer["provenance"].pop("elapsed_ms")
    return Outcome(answer, stamp.encode() if stamp is not None else None, _reaches_past_watermark(result), degraded)


def _reaches_past_watermark(result: QueryResult) -> bool:
    """The query route's rule for its short TTL (api/routes/query.py, _ttl): numbers that change as events arrive."""
    prov = result.provenance
    wm = prov.watermark
    return prov.realtime or wm is None or any(part.end > wm for part in prov.parts)


def _funnel(
    engine: QueryEngine,
    tile: FunnelTile,
    asked: dict[str, Any],
    tenant_id: str,
    versions: Versions | None,
    settings: Settings,
) -> Outcome:
    """As POST /api/v1/funnels/query answers a defined funnel per cohort day (api/routes/experiments.py)."""
    funnel = get_definitions().funnels[tile.funnel]
    start, end = datetime.fromisoformat(asked["start"]), datetime.fromisoformat(asked["end"])
    cap, table_hash = settings.api_max_rows, get_table_hashes().get(tile.funnel)
    found = funnel_paths.answer(
        engine.read_lake, engine.alias, tenant_id, tile.funnel, funnel, start, end, tile.breakdown, True, cap,
        table_hash, settings.api_max_raw_range_days,
    )  # fmt: skip
    answer = {
        "funnel": tile.funnel,
        "source": found["source"],
        "note": found["note"],
        "steps": [
            {"event_type": s.event_type, "where": {k: list(v) for k, v in s.where.items()}, "title": s.label}
            for s in funnel.steps
        ],
        "start": start,
        "end": end,
        "granularity": "day",
        "breakdown": tile.breakdown,
        "rows": found["rows"][:cap],
        "truncated": len(found["rows"]) > cap,
        "as_of": found["as_of"],
    }
    out = FunnelAnswer.model_validate(answer).model_dump(mode="json", exclude={"cache", "elapsed_ms"})
    from_table = found["source"] == FUNNEL_TABLE
    stamp = versions.table_stamp([FUNNEL_TABLE if from_table else EVENTS_TABLE]).encode() if versions else None
    as_of = found["as_of"]
    closed = from_table or (as_of is not None and end + timedelta(seconds=funnel.window) <= as_of)
    return Outcome(out, stamp, not closed)


def tile(board: Dashboard, p: TilePlan, outcomes: list[Outcome] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    """A tile's part of the answer: its definition, the requests asked, their answers, the digest, the provenance."""
    t = board.tiles[p.index]
    out: dict[str, Any] = {
        "id": t.id, "kind": t.kind, "title": t.title, "description": t.description, "width": t.width,
        "endpoint": p.endpoint, "asked": p.asked, "answers": None, "number": None, "provenance": None,
        "error": error or p.error,
    }  # fmt: skip
    if outcomes is None or out["error"] is not None or p.endpoint == LIVE:  # live tiles: the route reads them
        return out
    answers = [o.answer for o in outcomes]
    out["answers"] = answers
    if p.endpoint == QUERY:
        if isinstance(t, NumberTile):
            out["number"] = _number(t, p, answers)
        out["provenance"] = _query_provenance(answers, p.notes)
    elif p.endpoint == FUNNEL:
        found = answers[0]
        notes = [*p.notes, *([found["note"]] if found["note"] else [])]
        out["provenance"] = {"sources": [found["source"]], "watermark": None, "as_of": found["as_of"],
                             "realtime": False, "approximate": {}, "incomplete": [], "notes": notes}  # fmt: skip
    else:
        out["provenance"] = {"sources": list(EXPERIMENT_TABLES), "watermark": None, "as_of": answers[0]["built_at"],
                             "realtime": False, "approximate": {}, "incomplete": [], "notes": p.notes}  # fmt: skip
    return out


def _query_provenance(answers: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    first = answers[0]["provenance"]
    approximate: dict[str, Any] = {}
    for answer in answers:
        approximate.update(answer["provenance"]["approximate"])
    return {
        "sources": sorted({part["source"] for a in answers for part in a["provenance"]["parts"]}),
        "watermark": first["watermark"],
        "as_of": None,
        "realtime": any(a["provenance"]["realtime"] for a in answers),
        "approximate": approximate,
        "incomplete": [c for a in answers for c in a["provenance"]["incomplete"]],
        "notes": notes,
    }


def _number(t: NumberTile, p: TilePlan, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The value over the range, the previous period's, and the relative change (null when it cannot be told)."""

    def total(answer: dict[str, Any]) -> float | None:
        rows = answer["rows"]
        return rows[0]["values"][t.metric] if rows else None

    value = total(answers[0])
    out: dict[str, Any] = {"metric": t.metric, "value": value, "start": answers[0]["start"], "end": answers[0]["end"]}
    if len(answers) > 1:
        previous = total(answers[1])
        change = (value - previous) / previous if value is not None and previous else None
        out.update(previous=previous, change=change, previous_start=answers[1]["start"], previous_end=answers[1]["end"])
    return out

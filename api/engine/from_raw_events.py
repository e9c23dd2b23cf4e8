"""Strategy: a query answered exactly from the staged events: raw-only dimensions, cuts no rollup keeps, old minutes.

answer_from_raw runs the SQL of sql/raw_events.py (and first its top-N ranking); no realtime numbers are merged.
"""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_core.catalogue import Catalogue
from api.engine.answer import OTHER, Answer, Group, group_order
from api.engine.from_rollups import Fetch
from api.engine.planner import Plan
from api.engine.sql import raw_events
from api.engine.validation import Query


def _top(query: Query, catalogue: Catalogue, alias: str, fetch: Fetch) -> list[Group] | None:
    """The top-N groups by the first metric over the whole range (exact); None when all groups fit."""
    first = catalogue.metrics[query.metrics[0]]
    parts = [p for p in (first.numerator, first.denominator) if p] if first.kind == "ratio" else [query.metrics[0]]
    width = len(query.group_by)
    scores: dict[Group, float] = {}
    for row in fetch(*raw_events.raw_sql(query, catalogue, alias, parts, None)):
        group, values = tuple(row[2 : 2 + width]), row[2 + width :]  # row[1], rest: false without a top
        if first.kind == "ratio":
            scores[group] = values[0] / values[1] if values[1] else -1.0
        else:
            scores[group] = float(values[0])
    assert query.top_n is not None
    if len(scores) <= query.top_n:
        return None
    return sorted(scores, key=lambda g: (-scores[g], group_order(g)))[: query.top_n]  # None: no value


def answer_from_raw(query: Query, plan: Plan, catalogue: Catalogue, alias: str, fetch: Fetch) -> Answer:
    answer = Answer()
    top = _top(query, catalogue, alias, fetch) if query.top_n else None
    metrics = query.base_metrics
    sql, params = raw_events.raw_sql(query, catalogue, alias, metrics, query.buckets.segments(), top)
    width = len(query.group_by)
    for row in fetch(sql, params):
        bucket, rest, values = row[0], row[1], row[2 + width :]
        group: Group = OTHER if rest else tuple(row[2 : 2 + width])  # else None in it: events without the value
        for metric, value in zip(metrics, values, strict=True):
            answer.add(bucket, group, metric, float(value))
    answer.part(query, "raw", query.buckets.start, query.buckets.end, query.buckets.count, [])
    answer.realtime_unavailable = (
        f"answered from raw events ({plan.raw_reason}); no realtime numbers are merged into an answer from raw events"
    )
    if plan.watermark is not None and query.buckets.end > plan.watermark:
        since = datetime.fromtimestamp(plan.watermark, UTC).isoformat()
        answer.caveats.append(f"raw events are complete up to {since}; later events may be missing")
    return answer

"""The raw-events strategy's SQL (from_raw_events.py): one SQL over the staged (deduplicated) raw events.

Counts, sums and COUNT(DISTINCT user_key) with each metric's condition (people only, event types),
bucketed by arithmetic on the event time (parts.bucket_index) and grouped by any catalogue
dimension; a dimension without a value groups as ''. For what no rollup answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from analytics_core.catalogue import Catalogue, Metric
from api.engine.sql.parts import Params, bucket_index, conditions, placeholders, top_flag, utc
from api.engine.timebuckets import Segment
from api.engine.validation import Query

EVENTS_TABLE = "stg_tracking__events"
MISSING = ""  # the group value of events without the dimension (no page, no experiment)


def _condition(metric: Metric, params: Params) -> str:
    parts = []
    if metric.humans_only:
        parts.append("NOT is_bot")
    if metric.event_types:
        parts.append(f"event_type IN ({placeholders(metric.event_types, params)})")
    return " AND ".join(parts) or "true"


def _aggregate(metric: Metric, params: Params) -> str:
    condition = _condition(metric, params)
    if metric.kind == "count":
        return f"count(*) FILTER (WHERE {condition})"
    if metric.kind == "sum":
        return f"coalesce(sum({metric.column}) FILTER (WHERE {condition}), 0)"
    return f"count(DISTINCT {metric.column}) FILTER (WHERE {condition})"


def raw_sql(
    query: Query,
    catalogue: Catalogue,
    alias: str,
    metrics: Sequence[str],
    segments: Sequence[Segment] | None,
    top: Sequence[tuple[str | None, ...]] | None = None,
) -> tuple[str, Params]:
    """SQL of (bucket, group values..., one column per metric) rows over the query's range.

    segments None: the whole range as bucket 0 (top-N ranking). `top`: groups outside it become OTHER (NULL).
    """
    dims = sorted(query.dimensions)
    expr = {d: f"coalesce({d}, '{MISSING}')" for d in dims}
    needed = {"is_bot", "event_type"} | {c for m in metrics if (c := catalogue.metrics[m].column)}
    inner_params: Params = []
    bucket = bucket_index("event_at", segments, inner_params)
    groups = [f"{expr[d]} AS g{i}" for i, d in enumerate(query.group_by)]
    inner_params += [query.tenant_id, utc(query.buckets.start), utc(query.buckets.end)]
    where = ["tenant_id = ?", "event_at >= ?", "event_at < ?"]
    where += conditions(query.filters, expr, inner_params)
    inner = (
        f"SELECT {', '.join([f'{bucket} AS b', *groups, *sorted(needed)])}"
        f" FROM {alias}.main.{EVENTS_TABLE} WHERE {' AND '.join(where)}"
    )

    params: Params = []
    names = [f"g{i}" for i in range(len(query.group_by))]
    if top is not None and names:
        outer_groups = []
        for name in names:
            flag = top_flag(names, top, params)
            outer_groups.append(f"CASE WHEN {flag} THEN {name} END")  # else NULL: OTHER
    else:
        outer_groups = names
    aggregates = [f"{_aggregate(catalogue.metrics[m], params)} AS m{i}" for i, m in enumerate(metrics)]
    select = ", ".join(["b", *outer_groups, *aggregates])
    group = ", ".join(str(i + 1) for i in range(1 + len(names)))
    return f"SELECT {select} FROM ({inner}) GROUP BY {group}", params + inner_params

"""The raw-events strategy's SQL (from_raw_events.py): one SQL over the staged (deduplicated) raw events.

Counts, sums and COUNT(DISTINCT user_key) with each metric's condition (people only, event types, with
`purchase` read as the tenant's purchase event types),
bucketed by arithmetic on the event time (parts.bucket_index) and grouped by any catalogue
dimension. For what no rollup answers: whole queries (from_raw_events.py), and the raw pieces of a
rollup answer (`intervals`: part of a minute at a range edge, minutes past their retention), whose
unique metrics come back as lists of user-key hashes (DuckDB hash(), as the rollup sketches hold
them) to unite with the rollups' sketches.

Events without a value for a group-by dimension (no page, no experiment) group as NULL, their own
group, kept apart from the top-N rest (NULL values too) by the rest flag column `r`. Filters compare
'' for a missing value, as they always have: `eq ''` selects those events, `not_in` keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence

from analytics_core.catalogue import Catalogue, Metric
from api.engine.sql.parts import Params, bucket_index, conditions, placeholders, top_flag, utc
from api.engine.timebuckets import Segment
from api.engine.validation import Query

EVENTS_TABLE = "stg_tracking__events"
MISSING = ""  # what a filter compares for events without the dimension (no page, no experiment)


def _condition(metric: Metric, event_types: tuple[str, ...], params: Params) -> str:
    parts = []
    if metric.humans_only:
        parts.append("NOT is_bot")
    if event_types:
        parts.append(f"event_type IN ({placeholders(event_types, params)})")
    return " AND ".join(parts) or "true"


def _aggregate(metric: Metric, event_types: tuple[str, ...], params: Params, hashes: bool) -> str:
    condition = _condition(metric, event_types, params)
    if metric.kind == "count":
        return f"count(*) FILTER (WHERE {condition})"
    if metric.kind == "sum":
        return f"coalesce(sum({metric.column}) FILTER (WHERE {condition}), 0)"
    if hashes:
        return f"list(DISTINCT hash({metric.column})) FILTER (WHERE {condition})"
    return f"count(DISTINCT {metric.column}) FILTER (WHERE {condition})"


def raw_sql(
    query: Query,
    catalogue: Catalogue,
    alias: str,
    metrics: Sequence[str],
    segments: Sequence[Segment] | None,
    top: Sequence[tuple[str | None, ...]] | None = None,
    intervals: Sequence[tuple[int, int]] | None = None,
    hashes: bool = False,
) -> tuple[str, Params]:
    """SQL of (bucket, rest, group values..., one column per metric) rows over the query's range.

    `rest` is true on the rows of the top-N rest (OTHER), whose group values are NULL; elsewhere a NULL
    group value is a missing one. segments None: the whole range as bucket 0 (top-N ranking). `top`:
    groups outside it become the rest (None in a top group matches a missing value). `intervals`
    ([start, end) UTC epoch seconds): only the events of these stretches. `hashes`: unique metrics as
    lists of distinct user-key hashes, to unite with sketches.
    """
    dims = sorted(query.dimensions)
    expr = {d: d for d in dims}
    needed = {"is_bot", "event_type"} | {c for m in metrics if (c := catalogue.metrics[m].column)}
    inner_params: Params = []
    bucket = bucket_index("event_at", segments, inner_params)
    groups = [f"{d} AS g{i}" for i, d in enumerate(query.group_by)]  # NULL stays NULL: a group of its own
    spans = intervals if intervals is not None else [(query.buckets.start, query.buckets.end)]
    inner_params += [query.tenant_id, utc(min(a for a, _ in spans)), utc(max(b for _, b in spans))]
    where = ["tenant_id = ?", "event_at >= ?", "event_at < ?"]
    if intervals is not None:
        where.append("(" + " OR ".join("(event_at >= ? AND event_at < ?)" for _ in intervals) + ")")
        inner_params += [utc(t) for span in intervals for t in span]
    where += conditions(query.filters, expr, inner_params, missing=MISSING)
    inner = (
        f"SELECT {', '.join([f'{bucket} AS b', *groups, *sorted(needed)])}"
        f" FROM {alias}.main.{EVENTS_TABLE} WHERE {' AND '.join(where)}"
    )

    params: Params = []
    flag_params: Params = []
    names = [f"g{i}" for i in range(len(query.group_by))]
    if top is not None and names:
        # list_contains compares lists with NULL equal to NULL: a top group (None,) is the missing value's.
        source = f"(SELECT *, {top_flag(names, top, flag_params)} AS in_top FROM ({inner}))"
        rest = "NOT in_top"
        outer_groups = [f"CASE WHEN in_top THEN {name} END" for name in names]  # else NULL, and rest true
    else:
        source, rest, outer_groups = f"({inner})", "false", names
    aggregates = []
    for i, name in enumerate(metrics):
        metric = catalogue.metrics[name]
        event_types = catalogue.metric_event_types(metric, query.tenant_id)
        aggregates.append(f"{_aggregate(metric, event_types, params, hashes)} AS m{i}")
    select = ", ".join(["b", f"{rest} AS r", *outer_groups, *aggregates])
    group = ", ".join(str(i + 1) for i in range(2 + len(names)))
    return f"SELECT {select} FROM {source} GROUP BY {group}", params + flag_params + inner_params

"""A QueryRequest checked against the catalogue and the server's limits, resolved to UTC buckets."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from analytics_core.catalogue import Catalogue, Metric
from analytics_core.settings import Settings
from api.engine import timebuckets
from api.engine.errors import QueryError
from api.engine.timebuckets import Buckets
from api.models import QueryRequest

# Column names come from the catalogue, never from a request; still, only plain names reach SQL.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Condition:
    dimension: str
    op: str  # eq, in, not_in (eq is an `in` of one value)
    values: tuple[str, ...]

    @property
    def negated(self) -> bool:
        return self.op == "not_in"

    def accepts(self, value: str) -> bool:
        return (value in self.values) != self.negated


@dataclass(frozen=True)
class Query:
    tenant_id: str
    metrics: tuple[str, ...]  # as asked
    base_metrics: tuple[str, ...]  # the count, sum and unique metrics the answer needs (ratio parts too)
    group_by: tuple[str, ...]
    filters: tuple[Condition, ...]
    timezone: str
    buckets: Buckets
    limit: int
    top_n: int | None
    span_s: float = 0.0  # end - start as asked (before the range is widened to whole buckets)

    @property
    def dimensions(self) -> set[str]:
        """Every dimension the query groups or filters by."""
        return set(self.group_by) | {f.dimension for f in self.filters}


def _unique(field: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise QueryError(field, "unique", f"{name!r} is listed twice")
        seen.add(name)


def _check_metrics(names: list[str], catalogue: Catalogue) -> tuple[str, ...]:
    _unique("metrics", names)
    base: list[str] = []
    for i, name in enumerate(names):
        metric = catalogue.metrics.get(name)
        if metric is None:
            known = ", ".join(catalogue.metrics)
            raise QueryError(f"metrics[{i}]", "catalogue_metric", f"unknown metric {name!r}; known: {known}")
        parts = [metric.numerator, metric.denominator] if metric.kind == "ratio" else [name]
        base += [p for p in parts if p and p not in base]
    for name in base:
        _check_columns(name, catalogue.metrics[name])
    return tuple(base)


def _check_columns(name: str, metric: Metric) -> None:
    if metric.column and not IDENTIFIER.match(metric.column):
        raise ValueError(f"catalogue metric {name}: column {metric.column!r} is not a plain column name")


def _check_dimension(field: str, name: str, catalogue: Catalogue) -> None:
    if name not in catalogue.dimensions:
        known = ", ".join(catalogue.dimensions)
        raise QueryError(field, "catalogue_dimension", f"unknown dimension {name!r}; known: {known}")
    if not IDENTIFIER.match(name):
        raise ValueError(f"catalogue dimension {name!r} is not a plain column name")


@dataclass(frozen=True)
class Checked:
    """A request that passed every rule its parameters alone can be judged by (Checked.query builds the buckets)."""

    tenant_id: str
    request: QueryRequest
    base_metrics: tuple[str, ...]
    filters: tuple[Condition, ...]
    zone: ZoneInfo
    start: float
    end: float
    grain: timebuckets.BucketGrain
    limit: int

    def query(self, max_buckets: int) -> Query:
        request = self.request
        return Query(
            tenant_id=self.tenant_id,
            metrics=tuple(request.metrics),
            base_metrics=self.base_metrics,
            group_by=tuple(request.group_by),
            filters=self.filters,
            timezone=request.timezone,
            buckets=timebuckets.make_buckets(
                self.start, self.end, self.grain, self.zone, max_buckets, self.request.align
            ),
            limit=self.limit,
            top_n=request.top_n,
            span_s=self.end - self.start,
        )


def _check_filter_values(request: QueryRequest, settings: Settings) -> None:
    total = sum(len(f.values) for f in request.filters)
    if total > settings.api_max_filter_values:
        raise QueryError(
            "filters",
            "max_filter_values",
            f"{total} filter values in all, at most {settings.api_max_filter_values}",
        )
    for i, f in enumerate(request.filters):
        for j, value in enumerate(f.values):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800" in the JSON): no UTF-8 string
                    raise QueryError(f"filters[{i}].values[{j}]", "utf8", "not a valid Unicode string") from exc


def raw_only_reason(dimensions: set[str], base_metrics: tuple[str, ...], catalogue: Catalogue) -> str | None:
    """Why no rollup can answer queries by these dimensions (they go to raw events), or None."""
    raw_only = sorted(d for d in dimensions if not catalogue.dimensions[d].rollup)
    if raw_only:
        return f"{', '.join(raw_only)}: only in raw events"
    unique = any(catalogue.metrics[m].kind == "unique" for m in base_metrics)
    if catalogue.covering_set(dimensions, unique=unique) is None:
        what = "unique users" if unique else "rollups"
        return f"no stored dimension set keeps {what} by {', '.join(sorted(dimensions))}"
    return None


def check_raw_range(span_s: float, reason: str, settings: Settings) -> None:
    """QueryError when a range answered from raw events (for `reason`) is longer than the server allows."""
    days = settings.api_max_raw_range_days
    if span_s > days * 86400:
        raise QueryError(
            "end",
            "max_raw_range_days",
            f"this query is answered from raw events ({reason}): its range may span at most {days} days",
        )


def check(tenant_id: str, request: QueryRequest, catalogue: Catalogue, settings: Settings) -> Checked:
    """Every rule the request's parameters can be judged by, at a cost of their size (no buckets, no SQL).

    Run before the cache is asked: a request refused here never reaches a hash, a bucket list or SQL.
    """
    if not tenant_id:
        raise ValueError("tenant id missing: it comes from the authenticated key")
    base = _check_metrics(request.metrics, catalogue)
    _unique("group_by", request.group_by)
    for i, name in enumerate(request.group_by):
        _check_dimension(f"group_by[{i}]", name, catalogue)
    _check_filter_values(request, settings)
    filters: list[Condition] = []
    for i, f in enumerate(request.filters):
        _check_dimension(f"filters[{i}].dimension", f.dimension, catalogue)
        if f.op == "eq" and len(f.values) != 1:
            raise QueryError(
                f"filters[{i}].values", "eq_one_value", f"op eq takes exactly one value, got {len(f.values)}"
            )
        filters.append(Condition(f.dimension, f.op, tuple(dict.fromkeys(f.values))))
    if request.top_n is not None and not request.group_by:
        raise QueryError("top_n", "needs_group_by", "top_n ranks groups: give group_by too")
    limit = request.limit if request.limit is not None else settings.api_max_rows
    if limit > settings.api_max_rows:
        raise QueryError(
            "limit", "max_rows", f"limit {limit} is above the server's cap of {settings.api_max_rows} rows"
        )

    tz = timebuckets.zone(request.timezone)
    start, end = timebuckets.instant(request.start, tz, "start"), timebuckets.instant(request.end, tz, "end")
    # Times are kept to the second (the answer's start and end say so): a fraction of one is dropped.
    start, end = math.floor(start), math.floor(end)
    if start >= end:
        raise QueryError("end", "after_start", "end must be after start")
    if end - start > settings.api_max_range_days * 86400:
        raise QueryError("end", "max_range_days", f"the range may span at most {settings.api_max_range_days} days")
    grain = request.granularity if request.granularity != "auto" else timebuckets.auto_granularity(end - start)
    timebuckets.check_bucket_count(start, end, grain, tz, settings.api_max_buckets)
    dimensions = set(request.group_by) | {f.dimension for f in request.filters}
    reason = raw_only_reason(dimensions, base, catalogue)
    if reason is not None:
        check_raw_range(end - start, reason, settings)
    return Checked(tenant_id, request, base, tuple(filters), tz, start, end, grain, limit)


def validate(tenant_id: str, request: QueryRequest, catalogue: Catalogue, settings: Settings) -> Query:
    """The request as a Query, or QueryError naming the first field that breaks a rule."""
    return check(tenant_id, request, catalogue, settings).query(settings.api_max_buckets)

"""A QueryRequest checked against the catalogue and the server's limits, resolved to UTC buckets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from analytics_core.catalogue import Catalogue, Metric
from analytics_core.settings import Settings
from api import timebuckets
from api.errors import QueryError
from api.models import QueryRequest
from api.timebuckets import Buckets

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


def validate(tenant_id: str, request: QueryRequest, catalogue: Catalogue, settings: Settings) -> Query:
    """The request as a Query, or QueryError naming the first field that breaks a rule."""
    if not tenant_id:
        raise ValueError("tenant id missing: it comes from the authenticated key")
    base = _check_metrics(request.metrics, catalogue)
    _unique("group_by", request.group_by)
    for i, name in enumerate(request.group_by):
        _check_dimension(f"group_by[{i}]", name, catalogue)
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
    start, end = timebuckets.instant(request.start, tz), timebuckets.instant(request.end, tz)
    if start >= end:
        raise QueryError("end", "after_start", "end must be after start")
    if end - start > settings.api_max_range_days * 86400:
        raise QueryError("end", "max_range_days", f"the range may span at most {settings.api_max_range_days} days")
    grain = request.granularity if request.granularity != "auto" else timebuckets.auto_granularity(end - start)
    buckets = timebuckets.make_buckets(start, end, grain, tz, settings.api_max_buckets)
    return Query(
        tenant_id=tenant_id,
        metrics=tuple(request.metrics),
        base_metrics=base,
        group_by=tuple(request.group_by),
        filters=tuple(filters),
        timezone=request.timezone,
        buckets=buckets,
        limit=limit,
        top_n=request.top_n,
    )

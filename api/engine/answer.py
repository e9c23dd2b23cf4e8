"""The numbers of a query as they are gathered from its sources, and the QueryResult built from them.

Answer collects the cells (bucket, group) and their provenance, and which metrics are estimates (unique
counts past 8,192 users); OTHER is the group of the top-N rest.

A group is a tuple of the group-by values, None for a dimension the events have no value for (raw
events: no page, no experiment); the rest is OTHER, the empty tuple, which no real group is (they
hold a value or None per group-by dimension). In the answer both have null dimension values: the
rest row is told apart by `rest: true` (api/models.py, Row).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from analytics_core import hll
from analytics_core.catalogue import Catalogue, Metric
from api.engine.validation import Query
from api.models import Approximation, Part, Provenance, QueryResult, Row, Source

Group = tuple[str | None, ...]  # group-by values, None where the events have none; OTHER for the top-N rest

# The group outside the top N. Not a tuple of None: that is the group of events without a value (a raw
# read), which can be in the top N itself. The SQL gives its rows NULL values (and a flag on raw reads,
# where NULL is also a missing value); the answer null values and `rest: true`.
OTHER: Group = ()

# Unique counts from sketches (analytics_core/hll.py; the rollups' and the realtime layer's are one format):
# exact while a count's sketch is sparse (at most 8,192 users), else a HyperLogLog of 2^16 registers:
# standard error 0.41 %, bound ~2.5 sigma.
UNIQUE_RELATIVE_ERROR = round(2.5 * hll.STANDARD_ERROR, 3)  # 0.01
ValuesReader = Callable[[dict[str, float]], dict[str, float | None]]


@dataclass
class Answer:
    cells: dict[tuple[int, Group], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    parts: list[Part] = field(default_factory=list)
    approximate: dict[str, float] = field(default_factory=dict)  # base metric -> bound of its relative error
    realtime: bool = False
    realtime_unavailable: str | None = None
    caveats: list[str] = field(default_factory=list)

    def estimated(self, metric: str, relative_error: float) -> None:
        """Mark a base metric's numbers as estimates within this relative error (the largest one given wins)."""
        self.approximate[metric] = max(relative_error, self.approximate.get(metric, 0.0))

    def add(self, bucket: int, group: Group, metric: str, value: float) -> None:
        cell = self.cells[(bucket, group)]
        cell[metric] = cell.get(metric, 0.0) + value

    def add_cell(self, bucket: int, group: Group, values: dict[str, float]) -> None:
        """Add several metrics' values to a cell; the dict becomes the cell if it is new (do not reuse it)."""
        key = (bucket, group)
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = values
            return
        for metric, value in values.items():
            cell[metric] = cell.get(metric, 0.0) + value

    def sort_parts(self) -> None:
        """Parts by instant: datetimes of one zone compare by wall time, fold ignored, so on a fall-back day
        01:15 EDT would sort after 01:00 EST, 45 minutes later."""
        self.parts.sort(key=lambda p: (p.start.timestamp(), p.end.timestamp()))

    def part(self, query: Query, source: Source, start: float, end: float, buckets: int, metrics: list[str]) -> None:
        tz = query.buckets.zone
        self.parts.append(
            Part(
                source=source,
                start=datetime.fromtimestamp(start, tz),
                end=datetime.fromtimestamp(end, tz),
                buckets=buckets,
                metrics=metrics,
            )
        )


def _reader(name: str, metric: Metric) -> Callable[[dict[str, float]], float | None]:
    """How a row's value of the metric is read from its cell."""
    if metric.kind == "ratio":
        numerator, denominator = metric.numerator or "", metric.denominator or ""

        def ratio(cell: dict[str, float]) -> float | None:
            below = cell.get(denominator, 0.0)
            return cell.get(numerator, 0.0) / below if below else None

        return ratio
    if metric.kind == "unique":
        return lambda cell: float(round(cell.get(name, 0.0)))
    if metric.kind == "sum":
        return lambda cell: round(cell.get(name, 0.0), 6)
    return lambda cell: cell.get(name, 0.0)


def _values_reader(readers: list[tuple[str, Callable[[dict[str, float]], float | None]]]) -> ValuesReader:
    """A row's values from its cell, unrolled for the usual one or two metrics (thousands of rows)."""
    if len(readers) == 1:
        ((n0, r0),) = readers
        return lambda cell: {n0: r0(cell)}
    if len(readers) == 2:
        (n0, r0), (n1, r1) = readers
        return lambda cell: {n0: r0(cell), n1: r1(cell)}
    return lambda cell: {name: read(cell) for name, read in readers}


def group_order(group: Group) -> tuple[tuple[bool, str], ...]:
    """A group's place among groups: by its values, a missing value (None) after every real one."""
    return tuple((value is None, value or "") for value in group)


def build_result(
    query: Query, catalogue: Catalogue, answer: Answer, watermark: float | None, elapsed_ms: float
) -> QueryResult:
    # One datetime per bucket, shared by the bucket's rows: api.models.dump writes each once, by identity.
    labels = query.buckets.labels()
    if query.group_by:
        keys = [k for k, cell in answer.cells.items() if any(cell.values())]
        if any(not group or None in group for _, group in keys):  # the rest last in its bucket, None after values
            keys.sort(key=lambda k: (k[0], k[1] == OTHER, group_order(k[1])))
        else:
            keys.sort()  # the same order, without a key tuple per row
    else:
        keys = [(i, ()) for i in range(query.buckets.count)]
    metrics = [(name, catalogue.metrics[name]) for name in query.metrics]
    values = _values_reader([(name, _reader(name, metric)) for name, metric in metrics])
    cells, group_by = answer.cells, query.group_by
    empty: dict[str, float] = {}
    if not group_by:
        rows = [Row(labels[b], {}, values(cells.get((b, g), empty))) for b, g in keys[: query.limit]]
    elif len(group_by) == 1:  # the common shape, without a zip per row
        (only,) = group_by
        rows = [
            Row(labels[b], {only: g[0]}, values(cells.get((b, g), empty)))
            if g
            else Row(labels[b], {only: None}, values(cells.get((b, g), empty)), True)
            for b, g in keys[: query.limit]
        ]
    else:
        rows = [
            Row(labels[b], dict(zip(group_by, g, strict=True)), values(cells.get((b, g), empty)))
            if g
            else Row(labels[b], dict.fromkeys(group_by), values(cells.get((b, g), empty)), True)
            for b, g in keys[: query.limit]
        ]
    buckets = query.buckets
    if buckets.first_partial or buckets.last_partial:
        last = buckets.count - 1
        for row, (b, _) in zip(rows, keys, strict=False):
            row.partial = (b == 0 and buckets.first_partial) or (b == last and buckets.last_partial)
    approximate = {}
    for name, metric in metrics:
        parts = [metric.numerator, metric.denominator] if metric.kind == "ratio" else [name]
        errors = [answer.approximate[p] for p in parts if p in answer.approximate]
        if errors:  # a ratio's error: at most the sum of its parts'
            approximate[name] = Approximation(method="hyperloglog", relative_error=round(sum(errors), 6))
    provenance = Provenance(
        parts=answer.parts,
        watermark=datetime.fromtimestamp(watermark, UTC) if watermark is not None else None,
        realtime=answer.realtime,
        realtime_unavailable=answer.realtime_unavailable,
        approximate=approximate,
        incomplete=answer.caveats,
        elapsed_ms=round(elapsed_ms, 3),
    )
    return QueryResult.model_construct(  # the parts are built right here: no validation of thousands of rows
        metrics=list(query.metrics),
        granularity=query.buckets.grain,
        timezone=query.timezone,
        start=datetime.fromtimestamp(query.buckets.start, query.buckets.zone),
        end=datetime.fromtimestamp(query.buckets.end, query.buckets.zone),
        group_by=list(query.group_by),
        rows=rows,
        truncated=len(keys) > query.limit,
        provenance=provenance,
    )

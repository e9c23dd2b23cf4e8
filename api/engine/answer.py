"""The numbers of a query as they are gathered from its sources, and the QueryResult built from them.

Answer collects the cells (bucket, group) and their provenance; OTHER is the group of the top-N rest;
merged_estimates unions unique-user sketches (HyperLogLog registers) read from the rollups.

A group is a tuple of the group-by values, None for a dimension the events have no value for (raw
events: no page, no experiment); the rest is OTHER, the empty tuple, which no real group is (they
hold a value or None per group-by dimension). In the answer both have null dimension values: the
rest row is told apart by `rest: true` (api/models.py, Row).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_core import sketches
from analytics_core.catalogue import Catalogue, Metric
from api.engine.validation import Query
from api.models import Approximation, Part, Provenance, QueryResult, Row, Source

Group = tuple[str | None, ...]  # group-by values, None where the events have none; OTHER for the top-N rest

# The group outside the top N. Not a tuple of None: that is the group of events without a value (a raw
# read), which can be in the top N itself. The SQL gives its rows NULL values (and a flag on raw reads,
# where NULL is also a missing value); the answer null values and `rest: true`.
OTHER: Group = ()

UNIQUE_RELATIVE_ERROR = 0.02  # HyperLogLog with 2^14 registers: standard error 0.81 %, bound ~2.5 sigma
ValuesReader = Callable[[dict[str, float]], dict[str, float | None]]


def merged_estimate(filled: int, harmonic: float) -> float:
    """Distinct count of a merged sketch from its non-empty register count and sum of 2^-rank.

    The same estimator as analytics_core.sketches.estimate, fed by the merged registers' count and
    harmonic sum instead of the register list; a unit test keeps the two equal.
    """
    m = sketches.REGISTERS
    total = _empty_term(filled) + harmonic
    return sketches.ALPHA_INF * m * m / total


@functools.lru_cache(maxsize=sketches.REGISTERS + 1)
def _empty_term(filled: int) -> float:
    m = sketches.REGISTERS
    return m * sketches.sigma((m - filled) / m)


# 2^-rank of a register's rank; an empty register (rank 0) is counted by sigma instead.
_RANK_WEIGHT = np.where(np.arange(64) > 0, 2.0 ** -np.arange(64, dtype=np.float64), 0.0)
MERGE_GROUPS = 64  # unions held densely at once: 64 x 2^14 one-byte registers (1 MB; their weights 8 MB)


def merged_estimates(owners: np.ndarray, count: int, sketches_column: pa.ChunkedArray | pa.Array) -> list[float]:
    """The estimate of each of `count` unions of sketches: row i's sketch (if any) goes to union owners[i].

    Sketches are lists of `index * 64 + rank`. The unions are dense arrays of 2^14 one-byte
    registers, MERGE_GROUPS at a time, raised to their sketches' ranks by one numpy maximum.at.
    """
    lists = sketches_column.combine_chunks() if isinstance(sketches_column, pa.ChunkedArray) else sketches_column
    owners = np.asarray(owners, dtype=np.int32)
    if count > MERGE_GROUPS and np.any(owners[1:] < owners[:-1]):  # each batch of unions one stretch of registers
        order = np.argsort(owners, kind="stable")
        owners, lists = owners[order], lists.take(pa.array(order))
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    packed = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    union = np.repeat(owners, lengths)
    if count > MERGE_GROUPS:
        cuts = np.searchsorted(union, np.arange(0, count + MERGE_GROUPS, MERGE_GROUPS))
    else:
        cuts = np.array([0, len(union)])
    out: list[float] = []
    for batch, first in enumerate(range(0, count, MERGE_GROUPS)):
        size = min(count, first + MERGE_GROUPS) - first
        part = packed[cuts[batch] : cuts[batch + 1]]
        slot = ((union[cuts[batch] : cuts[batch + 1]] - first) << sketches.PRECISION) | (part >> 6)
        dense = np.zeros((size, sketches.REGISTERS), dtype=np.uint8)
        np.maximum.at(dense.reshape(-1), slot, (part & 63).astype(np.uint8))
        filled = np.count_nonzero(dense, axis=1)
        harmonic = _RANK_WEIGHT[dense].sum(axis=1)
        out += [merged_estimate(int(f), float(h)) for f, h in zip(filled, harmonic, strict=True)]
    return out


@dataclass
class Answer:
    cells: dict[tuple[int, Group], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    parts: list[Part] = field(default_factory=list)
    approximate: set[str] = field(default_factory=set)  # base metrics that are estimates
    realtime: bool = False
    realtime_unavailable: str | None = None
    caveats: list[str] = field(default_factory=list)

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
    approximate = {}
    for name, metric in metrics:
        parts = [metric.numerator, metric.denominator] if metric.kind == "ratio" else [name]
        estimated = [p for p in parts if p in answer.approximate]
        if estimated:
            approximate[name] = Approximation(
                method="hyperloglog", relative_error=UNIQUE_RELATIVE_ERROR * len(estimated)
            )
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
        group_by=list(query.group_by),
        rows=rows,
        truncated=len(keys) > query.limit,
        provenance=provenance,
    )

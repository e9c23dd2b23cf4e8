"""The rollup strategy's SQL (from_rollups.py): one SQL over the grain tables a plan needs, bucketed and grouped.

Additive values are summed per query bucket and group. Unique metrics: a group whose bucket is one
rollup row keeps that row's estimate (the sketch is not even read); several rows (the hours of a
New York day, countries folded into a filter or into OTHER) come back as their sketches (BLOBs of
analytics_core/hll.py's format), fetched as Arrow, and are merged and estimated in Python
(analytics_core/sketches.merged_estimates: sparse sketches as sets of hashes, exact; dense ones
register by register in numpy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_core import hll, sketches
from analytics_core.catalogue import GRANULARITIES, Granularity
from analytics_core.realtime_keys import GRAIN_SECONDS
from api.engine.planner import Piece, PieceGrain
from api.engine.sql.parts import Params, bucket_index, conditions, placeholders, top_flag, utc
from api.engine.timebuckets import Segment
from api.engine.validation import Condition

TABLES: dict[Granularity, str] = {g: f"fct_metrics_{g}" for g in GRANULARITIES}


def runs(pieces: Sequence[Piece], grain: PieceGrain) -> list[tuple[int, int]]:
    """The pieces of one grain as merged [start, end) intervals."""
    out: list[tuple[int, int]] = []
    for p in sorted((p for p in pieces if p.grain == grain), key=lambda p: p.start):
        if out and out[-1][1] == p.start:
            out[-1] = (out[-1][0], p.end)
        else:
            out.append((p.start, p.end))
    return out


def _kept(column: str, in_memory: bool) -> str:
    # On the lake only window_start is left for DuckLake to prune files with: every other pushed-down
    # filter column costs a column-statistics query on the catalog per table and query (~4 ms each),
    # more than scanning a rollup's rows; `|| ''` keeps a filter out of the scan. The in-memory
    # replica has no catalog: there every filter goes into the scan, to skip row groups by min/max.
    return column if in_memory else f"({column} || '')"


def _windows(intervals: list[tuple[int, int]], params: Params) -> str:
    parts = []
    for start, end in intervals:
        params.extend([utc(start), utc(end)])
        parts.append("(window_start >= ? AND window_start < ?)")
    return " OR ".join(parts)


@dataclass(frozen=True)
class RollupRead:
    """What one query reads from the rollups."""

    tenant_id: str
    set_name: str  # the covering dimension set's `dimension_set` value
    group_by: tuple[str, ...]
    filters: tuple[Condition, ...]
    additive: tuple[str, ...]
    unique: tuple[str, ...]
    additive_pieces: Sequence[Piece]
    unique_pieces: Sequence[Piece]
    one_row_per_group: bool  # each dimension of the set is grouped by or filtered to a single value
    # Unique rows of the buckets whose sketches are unioned with Redis's: read as sketches, kept unmerged
    # with them (cells' `kept`), never estimated here.
    sketch_pieces: Sequence[Piece] = ()
    in_memory: bool = False  # the tables are the engine's in-memory replica (api/engine/replica/), not the lake's


# An arm of a grain table's WHERE: these metrics, in these pieces, with an extra condition (SQL, params).
Arm = tuple[tuple[str, ...], Sequence[Piece], str | None, Params]


def _arm_conditions(
    arms: list[Arm], grain: Granularity, params: Params, bounds: list[tuple[int, int]], in_memory: bool
) -> str:
    parts = []
    for metrics, pieces, extra, extra_params in arms:
        intervals = runs(pieces, grain)
        if metrics and intervals:
            named = placeholders(metrics, params)
            condition = f"{_kept('metric', in_memory)} IN ({named}) AND ({_windows(intervals, params)})"
            if extra:
                condition += f" AND {extra}"
                params += extra_params
            parts.append(f"({condition})")
            bounds += intervals
    return " OR ".join(parts)


def _grain_select(
    read: RollupRead, alias: str, grain: Granularity, valued: list[Arm], merged: list[Arm], params: Params
) -> str | None:
    """One scan of a grain table: rows whose value is read, and rows whose sketch is merged."""
    bounds: list[tuple[int, int]] = []
    value_params: Params = []
    merge_params: Params = []
    by_value = _arm_conditions(valued, grain, value_params, bounds, read.in_memory)
    by_sketch = _arm_conditions(merged, grain, merge_params, bounds, read.in_memory)
    if not bounds:
        return None
    columns = ["window_start", "metric", "value", "sketch" if by_sketch else "NULL::BLOB AS sketch"]
    columns += read.group_by
    if by_value and by_sketch:
        flag, flag_params, condition = f"({by_sketch})", merge_params, f"({by_value}) OR ({by_sketch})"
    else:
        flag, flag_params, condition = ("true", [], by_sketch) if by_sketch else ("false", [], by_value)
    params += flag_params
    params += [read.tenant_id, read.set_name, utc(min(s for s, _ in bounds)), utc(max(e for _, e in bounds))]
    params += value_params + merge_params
    where = [
        f"{_kept('tenant_id', read.in_memory)} = ?",
        f"{_kept('dimension_set', read.in_memory)} = ?",
        "window_start >= ? AND window_start < ?",  # the one filter pushed into the scan
        f"({condition})",
    ]
    where += conditions(
        read.filters, {d: _kept(d, read.in_memory) for d in {f.dimension for f in read.filters}}, params
    )
    # The sketch column is only read where sketches are merged: it is most of a rollup's bytes.
    inner = (
        f"SELECT {', '.join(columns)}, {flag} AS merge FROM {alias}.main.{TABLES[grain]} WHERE {' AND '.join(where)}"
    )
    return (
        f"SELECT window_start, metric, CASE WHEN merge THEN NULL ELSE value END AS value,"
        f" CASE WHEN merge THEN sketch END AS sketch, merge{''.join(', ' + d for d in read.group_by)}"
        f" FROM ({inner})"
    )


def _one_window(pieces: Sequence[Piece], one_bucket: bool) -> tuple[list[Piece], list[Piece]]:
    """The pieces that are their bucket's only rollup window, and the others."""
    per_bucket = Counter(0 if one_bucket else p.bucket for p in pieces)
    alone = [
        p
        for p in pieces
        if per_bucket[0 if one_bucket else p.bucket] == 1
        and p.grain != "raw"
        and p.end - p.start == GRAIN_SECONDS[p.grain]
    ]
    chosen = set(alone)
    return alone, [p for p in pieces if p not in chosen]


def _arms(
    read: RollupRead, top: Sequence[tuple[str | None, ...]] | None, one_bucket: bool
) -> tuple[list[Arm], list[Arm]]:
    """Arms of the rows whose value is read (additive; lone unique rows) and of the sketches to merge.

    A unique metric's row is the answer when it is the only row of its query bucket and group: one
    window tiles the bucket, one row per group, and no top-N folding into OTHER.
    """
    valued: list[Arm] = [(read.additive, read.additive_pieces, None, [])]
    if not read.unique:
        return valued, []
    if not read.one_row_per_group:
        return valued, [(read.unique, [*read.unique_pieces, *read.sketch_pieces], None, [])]
    alone, rest = _one_window(read.unique_pieces, one_bucket)
    merged: list[Arm] = [(read.unique, [*rest, *read.sketch_pieces], None, [])]
    if top is None:
        valued.append((read.unique, alone, None, []))
    else:
        in_top: Params = []
        flag = top_flag(list(read.group_by), top, in_top)
        valued.append((read.unique, alone, flag, in_top))
        merged.append((read.unique, alone, f"NOT {flag}", list(in_top)))
    return valued, merged


def rollup_sql(
    read: RollupRead,
    alias: str,
    segments: Sequence[Segment] | None,
    top: Sequence[tuple[str | None, ...]] | None = None,
) -> tuple[str, Params] | None:
    """SQL of (bucket, group values..., metric, value columns..., sketch) rows; None: nothing to read.

    Rows with `metric` NULL carry the sums of the valued_metrics (additive, and unique metrics whose
    bucket is a single rollup row); rows naming a metric carry one sketch to merge into that bucket,
    group and metric. segments None: the whole range as bucket 0 (top-N ranking). `top`: groups
    outside it become OTHER (NULL). Read the rows with `values`.
    """
    valued, merged = _arms(read, top, one_bucket=not segments)
    groups = [f"g{i}" for i in range(len(read.group_by))]
    key = ", ".join(["b", *groups])
    names = valued_metrics(read)
    sums = "".join(f", sum(value) FILTER (WHERE metric = ?) AS m{i}" for i in range(len(names)))
    nulls = ", NULL::DOUBLE" * len(names)
    summed = f"SELECT {key}, NULL::VARCHAR AS metric{sums}, NULL::BLOB AS sketch FROM"
    merging = f"SELECT {key}, metric{nulls}, sketch FROM"

    def keyed(value_arms: list[Arm], merge_arms: list[Arm]) -> tuple[str, Params] | None:
        """The rows of these arms from every grain table, with their query bucket and groups."""
        scans: Params = []
        selects = [
            select
            for grain in GRANULARITIES
            if (select := _grain_select(read, alias, grain, value_arms, merge_arms, scans))
        ]
        if not selects:
            return None
        params: Params = []  # of the columns, which come before the scans in the text
        bucket = bucket_index("window_start", segments, params)
        if top is not None and read.group_by:
            flag = top_flag(list(read.group_by), top, params)
            src_groups = [
                f"CASE WHEN {flag} THEN {d} END AS {g}"  # else NULL: OTHER
                for d, g in zip(read.group_by, groups, strict=True)
            ]
        else:
            src_groups = [f"{d} AS {g}" for d, g in zip(read.group_by, groups, strict=True)]
        columns = ", ".join([f"{bucket} AS b", *src_groups, "metric", "value", "sketch", "merge"])
        return f"SELECT {columns} FROM ({' UNION ALL '.join(selects)})", params + scans

    if read.in_memory:
        # The sums and the sketches each read by a scan of their own: an in-memory scan costs less
        # than materialising every row with its sketch for both to read.
        by_value, by_sketch = keyed(valued, []), keyed([], merged)
        parts, params = [], []
        if by_value:
            parts.append(f"{summed} ({by_value[0]}) GROUP BY {key}")
            params += [*names, *by_value[1]]
        if by_sketch:
            parts.append(f"{merging} ({by_sketch[0]})")
            params += by_sketch[1]
        return (" UNION ALL ".join(parts), params) if parts else None
    both = keyed(valued, merged)  # one scan: on the lake every table scan costs catalog queries
    if both is None:
        return None
    return (
        f"WITH keyed AS ({both[0]}), summed AS ({summed} keyed WHERE NOT merge GROUP BY {key})"
        f" SELECT * FROM summed UNION ALL {merging} keyed WHERE merge",
        [*both[1], *names],
    )


def valued_metrics(read: RollupRead) -> tuple[str, ...]:
    """The metrics of rollup_sql's value columns, in order (the rows with `metric` NULL)."""
    return read.additive + read.unique


Kept = dict[tuple[int, tuple[str | None, ...], str], hll.Sketch]  # (bucket, group, metric) -> merged sketch


def unite(kept: Kept, key: tuple[int, tuple[str | None, ...], str], sketch: hll.Sketch) -> None:
    """Merge `sketch` into the kept sketch of `key` (the first one for it is kept as it is)."""
    kept[key] = kept[key].merge(sketch) if key in kept else sketch


def cells(
    read: RollupRead, table: pa.Table | None, kept: Kept | None = None
) -> Iterator[tuple[int, tuple[str | None, ...], dict[str, float]]]:
    """(bucket, group, {metric: value}) of rollup_sql's rows (as Arrow); each merged sketch estimated.

    A (bucket, group) comes once with its summed values, and once more per metric whose sketches
    were merged for it. The merged sketches of the buckets of `read.sketch_pieces` go into `kept`
    instead, unestimated (given `kept`).
    """
    if table is None:
        return
    width = len(read.group_by)
    names = valued_metrics(read)
    metrics = table.column(1 + width)
    summed = pc.is_null(metrics)
    columns = [table.column(i).filter(summed).to_pylist() for i in range(table.num_columns - 1) if i != 1 + width]
    if width == 1:  # the common shapes without a tuple slice per row
        for bucket, value, *numbers in zip(*columns, strict=True):
            if None in numbers:
                yield bucket, (value,), {n: v for n, v in zip(names, numbers, strict=True) if v is not None}
            else:
                yield bucket, (value,), dict(zip(names, numbers, strict=True))
    else:
        for row in zip(*columns, strict=True):
            found = {n: v for n, v in zip(names, row[1 + width :], strict=True) if v is not None}
            yield row[0], tuple(row[1 : 1 + width]), found
    if metrics.null_count == table.num_rows:
        return
    # Each sketch row goes to the union of its (bucket, group, metric); a summed row has no sketch to add.
    keys = zip(*(table.column(i).to_pylist() for i in range(2 + width)), strict=True)
    index: dict[tuple[Any, ...], int] = {}
    owners = np.fromiter(
        (0 if k[-1] is None else index.setdefault(k, len(index)) for k in keys), np.int32, table.num_rows
    )
    unions = sketches.merged(owners, len(index), table.column(table.num_columns - 1))
    keep = {p.bucket for p in read.sketch_pieces} if kept is not None else set()
    estimated = []
    for (merged_bucket, *values_of_group, metric), union in zip(index, unions, strict=True):
        if merged_bucket in keep:
            assert kept is not None
            kept[(merged_bucket, tuple(values_of_group), metric)] = union
        else:
            estimated.append((merged_bucket, tuple(values_of_group), metric, union))
    values = sketches.estimates([union for *_, union in estimated]).tolist()
    for (merged_bucket, group, metric, _), estimate in zip(estimated, values, strict=True):
        yield merged_bucket, group, {metric: estimate}

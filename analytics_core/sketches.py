"""Unique-user sketches of the DuckDB rollups: analytics_core.hll bytes, as DuckDB functions and estimates.

Each unique-metric rollup row's `sketch` is `hll.Sketch.to_bytes()` (a BLOB): sparse, the sorted
distinct 64-bit hashes of its user keys, while it holds at most hll.SPARSE_MAX (8,192) of them, so
its count is exact; dense above that, 2^16 registers (standard error 0.41 %). dbt builds and merges
them with the functions `register` creates on its DuckDB connection (the dbt-duckdb plugin
analytics_core/dbt_plugin.py): `hll_sketch(list(hash(user_key)))` per group of events,
`hll_merge(list(sketch))` per group of finer rows (minute -> hour -> day: any split of a set merges
to the sketch of the whole, bit for bit) and `hll_estimate(sketch)` for the row's `value`. The query
API merges and estimates them with `merged_estimates`.

Estimates: a sparse sketch's is its exact count; a dense one holds more than SPARSE_MAX distinct
hashes by construction, so its estimate is floored at SPARSE_MAX + 1 (a dense estimate just past
the switch can otherwise read below it: 0.41 % of 8,192 is 34). A value at most SPARSE_MAX is
therefore exact (`is_exact`) wherever it is read, from a row's `value` or from a merge.

The functions are Arrow-vectorised (DuckDB hands them a chunk of up to 2,048 rows at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import FunctionNullHandling, PythonUDFType

from analytics_core import hll

EXACT_UP_TO = hll.SPARSE_MAX  # distinct users a sketch counts exactly
DENSE_FLOOR = float(hll.SPARSE_MAX + 1)  # a dense sketch holds more users than a sparse one can


def is_exact(value: float) -> bool:
    """Whether a unique count read from a rollup sketch (value or merge) is exact: its sketch is sparse."""
    return value <= EXACT_UP_TO


def estimates(sketches: Sequence[hll.Sketch]) -> np.ndarray:
    """hll.estimate_many, dense estimates floored at DENSE_FLOOR."""
    out = hll.estimate_many(sketches)
    dense = np.fromiter((not s.is_sparse for s in sketches), dtype=bool, count=len(sketches))
    out[dense] = np.maximum(out[dense], DENSE_FLOOR)
    return out


def merged_estimates(owners: np.ndarray, count: int, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The estimate of each of `count` unions: row i's sketch bytes (null: none) go to union owners[i]."""
    return estimates(merged(owners, count, column))


def merged(owners: np.ndarray, count: int, column: pa.Array | pa.ChunkedArray) -> list[hll.Sketch]:
    """Each of `count` unions: row i's sketch bytes (null: none) go to union owners[i]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type):  # a lake not yet built since metric_logic_version 2
        raise hll.SketchVersionError(
            "the rollups hold the previous sketches (INTEGER[] registers): `analytics dbt build` migrates them"
        )
    owner = np.asarray(owners, dtype=np.int64)
    if len(owner) != len(column):
        raise ValueError(f"{len(column)} sketches but {len(owner)} owners")
    groups: list[list[hll.Sketch]] = [[] for _ in range(count)]
    for i, data in zip(owner.tolist(), column.to_pylist(), strict=True):
        if data is not None:
            groups[i].append(hll.Sketch.from_bytes(data))
    return [hll.merge(g) for g in groups]


# --- the DuckDB functions -----------------------------------------------------------------------


def _rows(lists: pa.Array | pa.ChunkedArray) -> tuple[pa.ListArray, np.ndarray]:
    """A list array's chunk (offsets made absolute) and its offsets as numpy."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if pa.types.is_large_list(lists.type):
        lists = lists.cast(pa.list_(lists.type.value_type))
    return lists, lists.offsets.to_numpy()


def sketch_of_hashes(lists: pa.Array | pa.ChunkedArray) -> pa.BinaryArray:
    """hll_sketch(UBIGINT[]) -> BLOB: the sketch bytes of each list of hashes (repeats allowed; null -> null)."""
    lists, offsets = _rows(lists)
    values = lists.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
    valid = lists.is_valid().to_numpy(zero_copy_only=False)
    out: list[bytes | None] = []
    for i in range(len(lists)):
        if not valid[i]:
            out.append(None)
            continue
        out.append(hll.Sketch.from_hashes(values[offsets[i] : offsets[i + 1]]).to_bytes())
    return pa.array(out, type=pa.binary())


def merge_sketches(lists: pa.Array | pa.ChunkedArray) -> pa.BinaryArray:
    """hll_merge(BLOB[]) -> BLOB: the union of each list of sketches (null elements skipped; null -> null)."""
    lists, offsets = _rows(lists)
    items = lists.values.to_pylist()
    valid = lists.is_valid().to_numpy(zero_copy_only=False)
    out: list[bytes | None] = []
    for i in range(len(lists)):
        if not valid[i]:
            out.append(None)
            continue
        parts = [hll.Sketch.from_bytes(b) for b in items[offsets[i] : offsets[i + 1]] if b is not None]
        out.append(hll.merge(parts).to_bytes())
    return pa.array(out, type=pa.binary())


def estimate_sketches(column: pa.Array | pa.ChunkedArray) -> pa.DoubleArray:
    """hll_estimate(BLOB) -> DOUBLE: each sketch's estimate (null -> null)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    valid = pc.is_valid(column)
    present = [hll.Sketch.from_bytes(b) for b in column.filter(valid).to_pylist()]
    values = np.full(len(column), np.nan)
    values[valid.to_numpy(zero_copy_only=False)] = estimates(present)
    return pa.array(values, type=pa.float64(), mask=~valid.to_numpy(zero_copy_only=False))


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Create hll_sketch, hll_merge and hll_estimate on `con`, after checking its hash() is the pinned one."""
    hll.check_hash(con)
    blob, arrow, nulls = duckdb.sqltype("BLOB"), PythonUDFType.ARROW, FunctionNullHandling.SPECIAL  # nulls: ours
    hashes = duckdb.list_type(duckdb.sqltype("UBIGINT"))
    con.create_function("hll_sketch", sketch_of_hashes, [hashes], blob, type=arrow, null_handling=nulls)
    con.create_function("hll_merge", merge_sketches, [duckdb.list_type(blob)], blob, type=arrow, null_handling=nulls)
    con.create_function(
        "hll_estimate", estimate_sketches, [blob], duckdb.sqltype("DOUBLE"), type=arrow, null_handling=nulls
    )

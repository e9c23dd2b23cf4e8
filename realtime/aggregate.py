"""A batch of events → the increments of the Redis minute counters and the user keys of each minute sketch, in bulk.

The semantics are those of the dbt rollups (dbt_project/macros/catalogue.sql and the staging model):
bucket = the event's `timestamp` (UTC); null dimension values count as 'unknown'; user_key =
coalesce(user_id, anonymous_id), and events without one add no user; humans_only metrics skip bots;
`event_types` restricts (`purchase`: the tenant's purchase event types); a count adds 1, a sum adds
round(column * SUM_SCALE) (null as 0).
Sums are exact integers whatever their size (`group_sums`); the values must be within
analytics_core/bounds.py (the consumer's decoder drops the rows that are not).

Everything is numpy over dictionary codes: rows are grouped by (tenant, minute, dimension values)
per dimension set with one pass each, so Python only runs per output cell, never per event.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from math import prod

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_core.catalogue import ALL, PURCHASE, Catalogue, Metric, PurchaseMapping
from analytics_core.events import FIELDS
from analytics_core.realtime_keys import GRAIN_SECONDS, SUM_SCALE, counter_field

UNKNOWN = "unknown"  # what the staging model puts in a null dimension
_DENSE_SPACE = 1 << 22  # group by direct indexing below this many combinations, by sorting above
_EXACT_FLOAT = 1 << 53  # float64 adds integers exactly while every partial sum stays below this
_HALF_ROWS = 1 << 20  # rows per bincount of 32-bit halves: 2**20 * 2**32 = 2**52, still exact
_INT64_LIMIT = float(1 << 63)
_FIELD_CACHE_MAX = 200_000

# (tenant, minute) → counter field → increment
Counters = dict[tuple[str, int], dict[str, int]]
# (tenant, minute start, counter field) of a uniques key (a user sketch; minute grain only, docs/REALTIME.md)
UniqueKey = tuple[str, int, str]


@dataclass
class UniquePairs:
    """Each (uniques key, user) pair of a batch: pair i adds users[user[i]] to keys[key[i]]. Pairs may repeat."""

    keys: list[UniqueKey]
    key: np.ndarray
    user: np.ndarray
    users: pa.Array  # distinct user keys of the batch

    def as_sets(self) -> dict[UniqueKey, set[str]]:
        """Key → distinct user keys (tests and small batches)."""
        names = self.users.to_pylist()
        out: dict[UniqueKey, set[str]] = {k: set() for k in self.keys}
        for k, u in zip(self.key.tolist(), self.user.tolist(), strict=True):
            out[self.keys[k]].add(names[u])
        return out


def _array(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _encode(values: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes (int64) and the distinct values of a string column without nulls."""
    encoded = pc.dictionary_encode(values)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def _bucket_codes(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of bucket start times and the distinct starts, by direct offset when their range is small."""
    if not len(starts):
        return starts.astype(np.int64), starts
    lo, hi = int(starts.min()), int(starts.max())
    step = int(np.gcd.reduce(starts - lo)) or 1
    if (hi - lo) // step < _DENSE_SPACE:
        present = np.zeros((hi - lo) // step + 1, dtype=bool)
        offsets = (starts - lo) // step
        present[offsets] = True
        number = np.cumsum(present) - 1
        return number[offsets], lo + np.flatnonzero(present) * step
    distinct, codes = np.unique(starts, return_inverse=True)
    return codes, distinct


def peak(values: np.ndarray) -> int:
    """The largest absolute value of an int64 array, as a Python int (no overflow at -2**63)."""
    return max(int(values.max()), -int(values.min())) if len(values) else 0


def group_sums(gid: np.ndarray, values: np.ndarray, groups: int, largest: int | None = None) -> np.ndarray:
    """The exact sum of int64 `values` per group number: int64, or Python ints (object) if one leaves int64.

    float64 bincount (fast, no Python per row) is exact while |partial sums| < 2**53, which `largest`
    (peak(values)) times the row count bounds: the usual case. Otherwise each value is split into its
    low 32 bits and the rest, each half summed exactly by float64 bincounts over chunks of 2**20 rows,
    and the halves joined as Python ints (per group, not per row).
    """
    largest = peak(values) if largest is None else largest
    if largest * len(values) < _EXACT_FLOAT:
        return np.bincount(gid, weights=values, minlength=groups).astype(np.int64)
    low = (values & 0xFFFFFFFF).astype(np.float64)  # 0 .. 2**32 - 1
    high = (values >> 32).astype(np.float64)  # -2**31 .. 2**31 - 1
    total = np.zeros(groups, dtype=object)
    for s in range(0, len(values), _HALF_ROWS):
        g = gid[s : s + _HALF_ROWS]
        lo = np.bincount(g, weights=low[s : s + _HALF_ROWS], minlength=groups).astype(np.int64)
        hi = np.bincount(g, weights=high[s : s + _HALF_ROWS], minlength=groups).astype(np.int64)
        total += hi.astype(object) * (1 << 32) + lo.astype(object)
    if all(-(1 << 63) <= v < 1 << 63 for v in (min(total, default=0), max(total, default=0))):
        return total.astype(np.int64)
    return total


def group(parts: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Group number of each row by the combination of its parts (codes below `sizes`), and one row of each group."""
    n = len(parts[0]) if parts else 0
    if not parts:
        return np.zeros(n, dtype=np.int64), np.zeros(min(n, 1), dtype=np.int64)
    space = prod(sizes)
    if space < 1 << 62:
        composite = np.zeros(n, dtype=np.int64)
        for part, size in zip(parts, sizes, strict=True):
            composite = composite * size + part
        if space <= _DENSE_SPACE:
            present = np.zeros(space, dtype=bool)
            present[composite] = True
            gid = (np.cumsum(present) - 1)[composite]
        else:
            gid = np.unique(composite, return_inverse=True)[1]
    else:
        gid = np.unique(np.stack(parts, axis=1), axis=0, return_inverse=True)[1].ravel()
    rep = np.empty(int(gid.max()) + 1 if n else 0, dtype=np.int64)
    rep[gid] = np.arange(n)
    return gid, rep


def _micro_units(values: pa.Array, name: str) -> np.ndarray:
    """round(value * SUM_SCALE) as int64 (null as 0); a value whose micro-units leave int64 is refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.rint(values.fill_null(0.0).to_numpy(zero_copy_only=False) * SUM_SCALE)
    if not (np.abs(scaled) < _INT64_LIMIT).all():  # NaN fails too
        raise ValueError(f"{name}: values beyond analytics_core.bounds reached the aggregation")
    return scaled.astype(np.int64)


class Columns:
    """The columns of a batch that the metrics read, as numpy codes."""

    def __init__(self, table: pa.Table, dimensions: tuple[str, ...], sum_columns: set[str]) -> None:
        self.n = table.num_rows
        self.tenant, self.tenants = _encode(_array(table, "tenant_id"))
        micros = _array(table, "timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
        self.seconds = micros // 1_000_000
        self.dims: list[np.ndarray] = []
        self.dim_values: list[list[str]] = []
        for name in dimensions:
            codes, values = _encode(_array(table, name).fill_null(UNKNOWN))
            self.dims.append(codes)
            self.dim_values.append(values)
        if "event_type" in dimensions:
            i = dimensions.index("event_type")
            self.event_type_codes, self.event_types = self.dims[i], self.dim_values[i]
        else:
            self.event_type_codes, self.event_types = _encode(_array(table, "event_type"))
        self.is_bot = _array(table, "is_bot").to_numpy(zero_copy_only=False).astype(bool)
        self.sums = {c: _micro_units(_array(table, c), c) for c in sum_columns}
        user_key = pc.coalesce(_array(table, "user_id"), _array(table, "anonymous_id"))
        self.has_user = user_key.is_valid().to_numpy(zero_copy_only=False)
        encoded = pc.dictionary_encode(user_key)
        self.user = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        self.users: pa.Array = encoded.dictionary
        # Each row's minute (a code into `minutes`, the distinct minute starts): counters and sketches are per minute.
        self.minute, self.minutes = _bucket_codes(self.seconds - self.seconds % GRAIN_SECONDS["minute"])
        self._type_tables: dict[tuple[tuple[str, ...], int], np.ndarray] = {}  # see _counted_types

    def subset(self, rows: np.ndarray) -> Columns:
        """The same columns for these rows only (the dictionaries stay: codes of absent values go unused)."""
        out = copy.copy(self)
        out.n = len(rows)
        out.tenant, out.seconds, out.is_bot = self.tenant[rows], self.seconds[rows], self.is_bot[rows]
        out.dims = [d[rows] for d in self.dims]
        out.event_type_codes = self.event_type_codes[rows]
        out.sums = {c: v[rows] for c, v in self.sums.items()}
        out.has_user, out.user = self.has_user[rows], self.user[rows]
        out.minute = self.minute[rows]
        return out

    def condition(self, metric: Metric, purchases: PurchaseMapping | None = None) -> np.ndarray:
        """Rows that count towards the metric (dbt's metric_condition): `purchase` among its event types is
        each row's tenant's purchase event types (`purchases`, the catalogue's mapping)."""
        mask = ~self.is_bot if metric.humans_only else np.ones(self.n, dtype=bool)
        types = metric.event_types
        if not types:
            return mask
        if not len(self.event_types):
            return mask & False
        return mask & self._counted_types(types, purchases)

    def _counted_types(self, types: tuple[str, ...], purchases: PurchaseMapping | None) -> np.ndarray:
        """Per row, whether its event type is one of `types` (for its tenant, where tenants map purchases to other
        event types); the lookup table is built once per batch and set of types (subsets share it)."""
        key = (types, id(purchases))
        table = self._type_tables.get(key)
        if table is None:
            if purchases is not None and PURCHASE in types and purchases.tenants:
                # (tenant code, event type code) → counts: tenants may map purchases to other event types.
                per_tenant = [set(purchases.expand(types, t)) for t in self.tenants]
                table = np.array([[v in allowed for v in self.event_types] for allowed in per_tenant], dtype=bool)
            else:
                allowed = set(purchases.expand(types, None) if purchases is not None else types)
                table = np.array([v in allowed for v in self.event_types], dtype=bool)
            self._type_tables[key] = table
        if table.ndim == 2:
            return table[self.tenant, self.event_type_codes]
        return table[self.event_type_codes]


class Aggregator:
    """Turns batches of events (Arrow tables with the canonical columns) into counter increments and sketch pairs."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.dimensions = catalogue.rollup_dimensions
        self.additive = [(name, m) for name, m in catalogue.metrics.items() if m.additive]
        self.unique = [(name, m) for name, m in catalogue.metrics.items() if m.kind == "unique"]
        known = {f.name: f.type for f in FIELDS}
        for name, m in self.additive:
            if m.kind == "sum" and known.get(m.column or "") != "double":
                raise ValueError(f"metric {name}: sum column {m.column!r} is not a numeric event field")
        for name, m in self.unique:
            if m.column != "user_key":
                raise ValueError(f"metric {name}: the realtime layer counts distinct user_key only, not {m.column!r}")
        self.sets = [self._set(dims) for dims in catalogue.dimension_sets]
        sketch_sets = catalogue.sketch_dimension_sets or catalogue.dimension_sets
        self.sketch_sets = [self._set(dims) for dims in sketch_sets]
        self._sum_columns = {m.column for _, m in self.additive if m.kind == "sum" and m.column}
        # The event columns a batch's aggregation reads (the rest is not worth copying).
        base = ("tenant_id", "timestamp", "event_type", "is_bot", "user_id", "anonymous_id")
        self.columns_read = list(dict.fromkeys([*base, *self.dimensions, *sorted(self._sum_columns)]))
        self._fields: dict[tuple[str, str, tuple[str, ...]], str] = {}

    def _set(self, dims: tuple[str, ...]) -> tuple[str, list[int]]:
        """(dimension set name, indexes of its dimensions in catalogue order)."""
        return self.catalogue.dimension_set_name(dims), [i for i, d in enumerate(self.dimensions) if d in dims]

    def columns(self, table: pa.Table) -> Columns:
        return Columns(table, self.dimensions, self._sum_columns)

    def field(self, metric: str, set_name: str, values: tuple[str, ...]) -> str:
        key = (metric, set_name, values)
        found = self._fields.get(key)
        if found is None:
            if len(self._fields) >= _FIELD_CACHE_MAX:
                self._fields.clear()
            found = self._fields[key] = counter_field(metric, set_name, values)
        return found

    def _values(self, cols: Columns, dim_index: list[int], rows: np.ndarray) -> list[tuple[str, ...]]:
        """Dimension values (ALL outside the set) of each of `rows`, in catalogue order."""
        per_dim = [
            [cols.dim_values[d][c] for c in cols.dims[d][rows].tolist()] if d in dim_index else [ALL] * len(rows)
            for d in range(len(self.dimensions))
        ]
        return list(zip(*per_dim, strict=True)) if per_dim else [()] * len(rows)

    def counters(self, table: pa.Table, cols: Columns | None = None) -> Counters:
        """Per (tenant, minute): the increment of every non-zero counter field."""
        cols = cols or self.columns(table)
        out: Counters = {}
        if not cols.n:
            return out
        minute_code, minutes = cols.minute, cols.minutes
        weights = {}
        for name, m in self.additive:
            cond = cols.condition(m, self.catalogue.purchases)
            weights[name] = cond.astype(np.int64) if m.kind == "count" else cols.sums[m.column or ""] * cond
        largest = {name: peak(w) for name, w in weights.items()}
        for set_name, dim_index in self.sets:
            parts = [cols.tenant, minute_code, *(cols.dims[d] for d in dim_index)]
            sizes = [len(cols.tenants), len(minutes), *(len(cols.dim_values[d]) for d in dim_index)]
            gid, rep = group(parts, sizes)
            groups = len(rep)
            tenants = [cols.tenants[t] for t in cols.tenant[rep].tolist()]
            starts = minutes[minute_code[rep]].tolist()
            values = self._values(cols, dim_index, rep)
            for name, _ in self.additive:
                sums = group_sums(gid, weights[name], groups, largest[name])
                for g in np.flatnonzero(sums).tolist():
                    cell = out.setdefault((tenants[g], starts[g]), {})
                    cell[self.field(name, set_name, values[g])] = int(sums[g])
        return out

    def unique_pairs(self, table: pa.Table, cols: Columns | None = None) -> UniquePairs:
        """Every (uniques key, user) pair of the batch, for each unique metric, sketch dimension set and minute."""
        cols = cols or self.columns(table)
        keys: list[UniqueKey] = []
        key_parts: list[np.ndarray] = []
        user_parts: list[np.ndarray] = []
        for name, m in self.unique:
            rows = np.flatnonzero(cols.condition(m, self.catalogue.purchases) & cols.has_user)
            if not rows.size:
                continue
            for set_name, dim_index in self.sketch_sets:
                parts = [cols.tenant[rows], cols.minute[rows], *(cols.dims[d][rows] for d in dim_index)]
                sizes = [len(cols.tenants), len(cols.minutes), *(len(cols.dim_values[d]) for d in dim_index)]
                gid, rep = group(parts, sizes)
                reps = rows[rep]
                tenants = [cols.tenants[t] for t in cols.tenant[reps].tolist()]
                minutes = cols.minutes[cols.minute[reps]].tolist()
                values = self._values(cols, dim_index, reps)
                key_parts.append(gid + len(keys))
                keys.extend((tenants[g], minutes[g], self.field(name, set_name, values[g])) for g in range(len(rep)))
                user_parts.append(cols.user[rows])
        empty = np.zeros(0, dtype=np.int64)
        return UniquePairs(
            keys=keys,
            key=np.concatenate(key_parts) if key_parts else empty,
            user=np.concatenate(user_parts) if user_parts else empty,
            users=cols.users,
        )

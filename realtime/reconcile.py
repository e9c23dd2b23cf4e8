"""Reconciliation: the realtime minute counters in Redis against the warehouse minute rollups.

For each tenant, the closed minutes that are still inside the realtime retention and that the
warehouse's minute rollups are complete for (fct_warehouse_watermarks) are compared cell by cell:
metric, dimension set and values. Drift per tenant and additive metric is the sum of the absolute
differences (sums in currency units; differences below one micro-unit or 1e-6 relative are rounding,
not drift). The last drift found goes to the rt:drift hash, where the query API exposes it.

A late event received after the watermark, or a resend more than an hour after the first copy (the
realtime layer dedupes over two hours, the warehouse over a day), shows up as drift until the
warehouse catches up: that is what drift is for.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import duckdb
import redis

from analytics_core.catalogue import get_catalogue
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, bucket_start, counter_field, parse_field
from analytics_core.settings import Settings

RELATIVE_TOLERANCE = 1e-6
Cells = dict[tuple[int, str], float]  # (minute, counter field) → value


@dataclass(frozen=True)
class Drift:
    """How far the realtime layer is from the warehouse for one tenant and metric."""

    tenant_id: str
    metric: str
    drift: float  # sum of |realtime - warehouse| over the compared cells
    minutes: int  # closed minutes compared
    cells: int  # (minute, dimension set, values) cells compared, either side non-zero


def reconcile(
    settings: Settings, con: duckdb.DuckDBPyConnection, redis_client: redis.Redis, now: float | None = None
) -> list[Drift]:
    """Compare every tenant's closed, complete minutes; write the drift hash; return one Drift per tenant and metric."""
    now = time.time() if now is None else now
    catalogue = get_catalogue()
    kinds: dict[str, str] = {name: m.kind for name, m in catalogue.metrics.items() if m.additive}
    keys = RealtimeKeys.from_settings(settings)
    lake = settings.warehouse_alias
    first = math.ceil((now - settings.realtime_retention_s) / 60) * 60  # minutes wholly inside the retention
    try:
        marks = con.execute(
            f"SELECT tenant_id, epoch(complete_until) FROM {lake}.main.fct_warehouse_watermarks"
            " WHERE granularity = 'minute' AND complete_until IS NOT NULL ORDER BY tenant_id"
        ).fetchall()
    except duckdb.CatalogException as exc:
        raise RuntimeError(
            f"the warehouse has no minute rollups or watermarks yet ({exc}); build them with `analytics dbt build`"
        ) from exc
    out: list[Drift] = []
    for tenant, complete_until in marks:
        end = bucket_start(int(min(float(complete_until), now)), "minute")  # minutes ending by then are closed
        minutes = list(range(first, end, 60))
        lake_cells = _warehouse(con, lake, catalogue.rollup_dimensions, tenant, list(kinds), first, end)
        redis_cells = _realtime(redis_client, keys, tenant, minutes, kinds)
        out.extend(_compare(tenant, kinds, lake_cells, redis_cells, len(minutes)))
    if out:
        redis_client.hset(keys.drift, mapping={f"{d.tenant_id}|{d.metric}": d.drift for d in out})
    return out


def _warehouse(
    con: duckdb.DuckDBPyConnection,
    lake: str,
    dimensions: tuple[str, ...],
    tenant: str,
    metrics: list[str],
    first: int,
    end: int,
) -> dict[str, Cells]:
    dims = ", ".join(dimensions)
    rows = con.execute(
        f"SELECT metric, dimension_set, {dims}, epoch(window_start)::BIGINT, value"
        f" FROM {lake}.main.fct_metrics_minute"
        " WHERE tenant_id = ? AND list_contains(?, metric)"
        " AND window_start >= to_timestamp(?) AND window_start < to_timestamp(?)",
        [tenant, metrics, first, end],
    ).fetchall()
    cells: dict[str, Cells] = defaultdict(dict)
    for metric, dimension_set, *rest in rows:
        *values, minute, value = rest
        cells[metric][(int(minute), counter_field(metric, dimension_set, values))] = float(value)
    return cells


def _realtime(
    client: redis.Redis, keys: RealtimeKeys, tenant: str, minutes: list[int], kinds: dict[str, str]
) -> dict[str, Cells]:
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(keys.counters(tenant, minute))
    cells: dict[str, Cells] = defaultdict(dict)
    for minute, stored in zip(minutes, pipe.execute() if minutes else [], strict=True):
        for field, raw in stored.items():
            metric = parse_field(field)[0]
            if metric in kinds:
                value = int(raw)
                cells[metric][(minute, field.decode())] = value / SUM_SCALE if kinds[metric] == "sum" else value
    return cells


def _compare(
    tenant: str, kinds: dict[str, str], lake: dict[str, Cells], live: dict[str, Cells], minutes: int
) -> list[Drift]:
    out = []
    for metric, kind in kinds.items():
        a, b = live.get(metric, {}), lake.get(metric, {})
        total, cells = 0.0, 0
        for cell in a.keys() | b.keys():
            x, y = a.get(cell, 0.0), b.get(cell, 0.0)
            cells += 1
            diff = abs(x - y)
            if kind == "sum" and diff <= max(RELATIVE_TOLERANCE * max(abs(x), abs(y)), 1 / SUM_SCALE):
                continue
            total += diff
        out.append(Drift(tenant, metric, total, minutes, cells))
    return out

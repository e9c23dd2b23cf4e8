"""Asset check on the minute rollups: the realtime counters of closed minutes equal the warehouse's.

Runs with every materialisation of fct_metrics_minute (the minute job). Drift per tenant and
additive metric is recorded as metadata and written to Redis (rt:drift), where the query API's
/metrics exposes it as `realtime_drift`. Additive metrics must show zero; a non-zero drift fails
the check with the tenants and metrics that differ.
"""

from __future__ import annotations

import dagster as dg
import redis

from analytics_core import warehouse as lake
from analytics_core.clients import redis_client
from analytics_core.realtime_keys import RealtimeKeys
from orchestration.defs.warehouse.resources import WarehouseResource
from realtime.reconcile import reconcile

MINUTE_ROLLUPS = dg.AssetKey(["fct_metrics_minute"])


@dg.asset_check(
    asset=MINUTE_ROLLUPS,
    description="Realtime counters (Redis) of closed minutes equal the warehouse minute rollups: zero drift.",
)
def realtime_matches_warehouse(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    settings = warehouse.get_settings()
    client = redis_client(settings, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        if not client.exists(RealtimeKeys.from_settings(settings).alive):
            return dg.AssetCheckResult(
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"skipped": "the realtime consumer has written nothing to this Redis (is it running?)"},
            )
        con = lake.connect(settings, create=False, read_only=True)
        try:
            drifts = reconcile(settings, con, client)
        finally:
            con.close()
    except redis.RedisError as exc:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"error": f"Redis unreachable: {exc}"}
        )
    finally:
        client.close()
    off = [d for d in drifts if d.drift]
    metadata: dict[str, dg.RawMetadataValue] = {
        "tenants": len({d.tenant_id for d in drifts}),
        "minutes_compared": max((d.minutes for d in drifts), default=0),
        "cells_compared": sum(d.cells for d in drifts),
    }
    for d in drifts:
        metadata[f"drift/{d.tenant_id}/{d.metric}"] = d.drift
    if off:
        metadata["drifting"] = ", ".join(f"{d.tenant_id}/{d.metric}={d.drift:g}" for d in off)
    return dg.AssetCheckResult(passed=not off, metadata=metadata)

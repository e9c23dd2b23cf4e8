"""Kafka tracking.events and the DuckLake raw_events table the warehouse loader fills from it."""

import dagster as dg

from orchestration.defs.warehouse.loading import (
    KAFKA_EVENTS_KEY,
    RAW_EVENTS_KEY,
    load_until_caught_up,
    raw_events_metadata,
    row_counts,
)
from orchestration.defs.warehouse.resources import WarehouseResource

GROUP = "warehouse"

kafka_events = dg.AssetSpec(
    KAFKA_EVENTS_KEY,
    description="Kafka topic tracking.events: canonical events from the collector (Protobuf, keyed by tenant).",
    group_name=GROUP,
    kinds={"kafka"},
)


@dg.asset(key=RAW_EVENTS_KEY, deps=[kafka_events], group_name=GROUP, kinds={"duckdb", "python"})
def raw_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """tracking.events loaded into the DuckLake raw_events table by the warehouse loader, until caught up."""
    settings = warehouse.get_settings()
    stats = load_until_caught_up(settings, warehouse.loader_idle_exit_s, warehouse.loader_max_s)
    context.log.info(f"loaded {stats.loaded} events in {stats.batches} batches ({stats.dead_lettered} dead letters)")
    return dg.MaterializeResult(metadata=raw_events_metadata(settings, stats))


@dg.asset_check(asset=raw_events, description="Every Kafka (partition, offset) is in raw_events at most once.")
def each_kafka_record_once(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    rows, positions = row_counts(warehouse.get_settings())
    return dg.AssetCheckResult(passed=rows == positions, metadata={"rows": rows, "duplicate_rows": rows - positions})

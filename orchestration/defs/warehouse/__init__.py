"""Warehouse domain: Kafka tracking.events → DuckLake raw_events through the warehouse loader."""

import dagster as dg

from orchestration.defs.warehouse.assets import each_kafka_record_once, kafka_events, raw_events
from orchestration.defs.warehouse.resources import warehouse_resource

defs = dg.Definitions(
    assets=[kafka_events, raw_events],
    asset_checks=[each_kafka_record_once],
    resources={"warehouse": warehouse_resource},
)

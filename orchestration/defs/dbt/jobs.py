"""Jobs over the dbt assets: minute and hourly rollups, and the rebuild (backfill) with `rebuild_from`."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import build_dbt_asset_selection
from pydantic import Field

from orchestration.defs.dbt.assets import dbt_models
from orchestration.defs.dbt.project import HOURLY_SELECT, MINUTE_SELECT, REBUILD_SELECT
from orchestration.defs.realtime.checks import realtime_matches_warehouse
from orchestration.defs.warehouse.loading import RAW_EVENTS_KEY

# Runs that write the warehouse carry this tag; dagster.yaml lets one of them run at a time.
WAREHOUSE_RUN_TAGS = {"analytics/warehouse": "write"}

metrics_minute_job = dg.define_asset_job(
    "metrics_minute",
    selection=dg.AssetSelection.assets(RAW_EVENTS_KEY)
    | build_dbt_asset_selection([dbt_models], MINUTE_SELECT)
    | dg.AssetSelection.checks(realtime_matches_warehouse),
    description="Load Kafka into raw_events until caught up, then stage and build the minute rollups and watermarks;"
    " check the realtime counters against the minute rollups.",
    tags=WAREHOUSE_RUN_TAGS,
)
metrics_hourly_job = dg.define_asset_job(
    "metrics_hourly",
    selection=build_dbt_asset_selection([dbt_models], HOURLY_SELECT),
    description="Stage what is loaded, then build the hour and day rollups and the watermarks.",
    tags=WAREHOUSE_RUN_TAGS,
)


class RebuildConfig(dg.Config):
    rebuild_from: str = Field(description="ISO-8601 UTC time, e.g. 2026-11-25T00:00:00+00:00; rebuild from here on.")


@dg.config_mapping
def _rebuild_config(config: RebuildConfig) -> Mapping[str, Any]:
    return {"ops": {"dbt_models": {"config": {"rebuild_from": config.rebuild_from}}}}


rebuild_metrics_job = dg.define_asset_job(
    "rebuild_metrics",
    selection=build_dbt_asset_selection([dbt_models], REBUILD_SELECT),
    config=_rebuild_config,
    description="Backfill: re-stage raw events from `rebuild_from` and rebuild every rollup bucket from there on.",
    tags=WAREHOUSE_RUN_TAGS,
)

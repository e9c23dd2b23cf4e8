"""Replay (Kappa-style reprocessing): rewind the loader to a Kafka time, reload, rebuild the rollups."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource
from pydantic import Field

from analytics_core.times import parse_utc
from loaders.replay import reset_loader
from orchestration.defs.dbt.assets import build_args
from orchestration.defs.dbt.jobs import WAREHOUSE_RUN_TAGS
from orchestration.defs.dbt.project import REBUILD_SELECT, dbt_events, dbt_project
from orchestration.defs.warehouse.loading import RAW_EVENTS_KEY, load_until_caught_up, raw_events_metadata
from orchestration.defs.warehouse.resources import WarehouseResource


class ReplayConfig(dg.Config):
    since: str = Field(description="Kafka record time to replay from, ISO-8601 (no offset = UTC).")


@dg.op(out=dg.Out(str, description="rebuild_from: min(since, earliest event time among the deleted rows)"))
def rewind_loader(context: dg.OpExecutionContext, config: ReplayConfig, warehouse: WarehouseResource) -> str:
    """Delete the raw_events rows of Kafka records at or after `since`; move the loader's offsets back to them."""
    plan = reset_loader(warehouse.get_settings(), parse_utc(config.since))
    context.add_output_metadata(
        {
            "rows_deleted": plan.rows_deleted,
            "offsets": json.dumps(plan.offsets),
            "earliest_deleted": str(plan.earliest_deleted),
            "rebuild_from": plan.rebuild_from.isoformat(),
            "kafka_group_offsets_committed": plan.group_offsets_committed,
        }
    )
    return plan.rebuild_from.isoformat()


@dg.op(out=dg.Out(str))
def reload_raw_events(context: dg.OpExecutionContext, rebuild_from: str, warehouse: WarehouseResource) -> str:
    """Run the loader until it has caught up with Kafka again: the deleted records come back once each."""
    settings = warehouse.get_settings()
    stats = load_until_caught_up(settings, warehouse.loader_idle_exit_s, warehouse.loader_max_s)
    context.log_event(dg.AssetMaterialization(RAW_EVENTS_KEY, metadata=raw_events_metadata(settings, stats)))
    return rebuild_from


@dg.op(out={})
def rebuild_from_staging(
    context: dg.OpExecutionContext, rebuild_from: str, warehouse: WarehouseResource, dbt: DbtCliResource
) -> Iterator[Any]:
    """dbt build of staging and the rollups with `rebuild_from`: materialisations and checks as asset events."""
    # Selecting the source too makes the day-reconciliation test (it reads raw_events) run as well.
    args = [*build_args(rebuild_from), "--select", f"{REBUILD_SELECT} source:tracking.raw_events"]
    yield from dbt_events(dbt, warehouse.get_settings(), args, context, manifest=dbt_project.manifest_path)


@dg.job(tags=WAREHOUSE_RUN_TAGS)
def replay() -> None:
    """Kappa-style replay from `since`: rewind the loader, reload from Kafka, rebuild staging and rollups."""
    rebuild_from_staging(reload_raw_events(rewind_loader()))

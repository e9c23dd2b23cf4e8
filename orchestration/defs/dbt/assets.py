"""The dbt models as assets (staging, rollups, watermarks); their dbt tests run as asset checks."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets
from pydantic import Field

from analytics_core.times import parse_utc
from orchestration.defs.dbt.project import dbt_events, dbt_project, translator
from orchestration.defs.warehouse.resources import WarehouseResource

# dbt's advice: unit tests run in development and CI, not in production builds (and one that reads
# the model's own relation cannot run before the first build).
EXCLUDE_UNIT_TESTS = ("--exclude-resource-type", "unit_test")


class DbtBuildConfig(dg.Config):
    rebuild_from: str | None = Field(
        default=None,
        description="ISO-8601 time: re-stage raw events from here and rebuild every rollup bucket from here on.",
    )


def build_args(rebuild_from: str | None) -> list[str]:
    """`dbt build` (no unit tests: they are for CI), with `rebuild_from` as an explicit UTC time when given."""
    args = ["build", *EXCLUDE_UNIT_TESTS]
    if rebuild_from:
        args += ["--vars", json.dumps({"rebuild_from": parse_utc(rebuild_from).isoformat()})]
    return args


@dbt_assets(
    manifest=dbt_project.manifest_path, project=dbt_project, dagster_dbt_translator=translator, name="dbt_models"
)
def dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource, config: DbtBuildConfig
) -> Iterator[Any]:
    """dbt build of the selected models and their tests, on the warehouse of the settings."""
    yield from dbt_events(dbt, warehouse.get_settings(), build_args(config.rebuild_from), context)

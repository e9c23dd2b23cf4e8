"""The whole Dagster code location loads: assets with their lineage and checks, jobs, schedules, instance config."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from analytics_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STAGING = "stg_tracking__events"
EXPERIMENT_AND_FUNNEL_MODELS = (
    "fct_experiment_exposures",
    "fct_experiment_user_metrics",
    "fct_experiment_variant_stats",
    "fct_experiment_significance",
    "fct_funnel_entries",
    "fct_funnel_daily",
)
DBT_MODELS = {
    STAGING,
    "fct_metrics_minute",
    "fct_metrics_hour",
    "fct_metrics_day",
    "fct_warehouse_watermarks",
    *EXPERIMENT_AND_FUNNEL_MODELS,
}
JOBS = ("metrics_minute", "metrics_hourly", "rebuild_metrics", "replay")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    return defs


def selected(defs: dg.Definitions, job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_assets_and_lineage_run_from_kafka_through_raw_events_to_the_rollups(defs: dg.Definitions) -> None:
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {"kafka/tracking_events", "tracking/raw_events", *DBT_MODELS}
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}

    assert parents("tracking/raw_events") == {"kafka/tracking_events"}
    assert parents("stg_tracking__events") == {"tracking/raw_events"}  # the dbt source is the loader's asset
    assert parents("fct_metrics_day") == {"fct_metrics_hour"}
    assert parents("fct_experiment_exposures") == {STAGING}
    assert parents("fct_experiment_user_metrics") == {STAGING, "fct_experiment_exposures"}
    assert parents("fct_experiment_variant_stats") == {"fct_experiment_exposures", "fct_experiment_user_metrics"}
    assert parents("fct_experiment_significance") == {"fct_experiment_variant_stats"}
    assert parents("fct_funnel_entries") == {STAGING}
    assert parents("fct_funnel_daily") == {"fct_funnel_entries"}
    checked = {k.asset_key.to_user_string() for k in graph.asset_check_keys}
    assert {"tracking/raw_events", *DBT_MODELS} <= checked  # dbt tests became asset checks


def test_jobs_and_schedules(defs: dg.Definitions) -> None:
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "metrics_minute",
        "metrics_hourly",
        "rebuild_metrics",
        "replay",
    }
    assert selected(defs, "metrics_minute") == {
        "tracking/raw_events",
        STAGING,
        "fct_metrics_minute",
        "fct_warehouse_watermarks",
    }
    assert selected(defs, "metrics_hourly") == {
        STAGING,
        "fct_metrics_hour",
        "fct_metrics_day",
        "fct_warehouse_watermarks",
        *EXPERIMENT_AND_FUNNEL_MODELS,  # the experiments' and funnels' tables are rebuilt each hour
    }
    assert selected(defs, "rebuild_metrics") == DBT_MODELS
    minute = defs.resolve_schedule_def("metrics_minute_every_minute")
    hourly = defs.resolve_schedule_def("metrics_hourly_every_hour")
    assert (minute.job_name, minute.cron_schedule) == ("metrics_minute", "* * * * *")
    assert (hourly.job_name, hourly.cron_schedule) == ("metrics_hourly", "5 * * * *")
    assert minute.default_status == hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    for job in JOBS:
        assert defs.resolve_job_def(job).run_tags.get("analytics/warehouse") == "write"


def test_minute_schedule_leaves_the_watermarks_out_until_the_hourly_rollups_exist() -> None:
    from orchestration.defs.dbt.schedules import metrics_minute_schedule

    with dg.instance_for_test() as instance:
        request = metrics_minute_schedule(dg.build_schedule_context(instance=instance))
        assert isinstance(request, dg.RunRequest) and request.asset_selection is not None
        assert {k.to_user_string() for k in request.asset_selection} == {
            "tracking/raw_events",
            STAGING,
            "fct_metrics_minute",
        }
        for key in ("fct_metrics_hour", "fct_metrics_day"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        request = metrics_minute_schedule(dg.build_schedule_context(instance=instance))
        assert isinstance(request, dg.RunRequest) and request.asset_selection is None


def test_rebuild_job_takes_one_typed_rebuild_from(defs: dg.Definitions) -> None:
    from orchestration.defs.dbt.assets import build_args

    mapping = defs.resolve_job_def("rebuild_metrics").config_mapping
    assert mapping is not None
    assert mapping.resolve_from_unvalidated_config({"rebuild_from": "2026-11-25T00:00:00+00:00"}) == {
        "ops": {"dbt_models": {"config": {"rebuild_from": "2026-11-25T00:00:00+00:00"}}}
    }
    assert build_args(None) == ["build", "--exclude-resource-type", "unit_test"]
    assert build_args("2026-11-25T01:00:00+01:00") == [
        "build",
        "--exclude-resource-type",
        "unit_test",
        "--vars",
        json.dumps({"rebuild_from": "2026-11-25T00:00:00+00:00"}),
    ]


def test_warehouse_resource_round_trips_settings(tmp_path: Path) -> None:
    from orchestration.defs.warehouse.resources import WarehouseResource

    settings = Settings(warehouse_path=tmp_path / "wh", topic_prefix="t.", loader_batch_events=7, _env_file=None)  # type: ignore[call-arg]
    resource = WarehouseResource.from_settings(settings, loader_idle_exit_s=1.0)
    assert resource.get_settings().warehouse_path == tmp_path / "wh"
    assert (resource.get_settings().topic_prefix, resource.get_settings().loader_batch_events) == ("t.", 7)
    assert resource.loader_idle_exit_s == 1.0


def test_dagster_yaml_is_a_valid_instance_config_with_state_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert (tmp_path / ".state" / "dagster" / "storage").is_dir()
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.tag_concurrency_limits == [{"key": "analytics/warehouse", "value": "write", "limit": 1}]
    finally:
        instance.dispose()


class _FailedInvocation:
    def __init__(self, message: str, target_path: Path) -> None:
        self.message, self.target_path = message, target_path

    def stream(self) -> Iterator[Any]:
        from dagster_dbt.errors import DagsterDbtCliRuntimeError

        yield "event"
        raise DagsterDbtCliRuntimeError("dbt failed")

    def get_artifact(self, name: str) -> dict[str, Any]:
        return {"results": [{"status": "error", "message": self.message}]}


def test_a_dbt_build_that_lost_a_catalog_lock_is_retried_other_failures_are_not(tmp_path: Path) -> None:
    from dagster_dbt.errors import DagsterDbtCliRuntimeError

    from orchestration.defs.dbt.project import stream

    locked = _FailedInvocation("IO Error: database is locked", tmp_path)
    with pytest.raises(dg.RetryRequested):
        list(stream(locked))  # type: ignore[arg-type]
    with pytest.raises(DagsterDbtCliRuntimeError):
        list(stream(_FailedInvocation("Catalog Error: no such table", tmp_path)))  # type: ignore[arg-type]
    assert tmp_path.exists()  # a failed invocation keeps its artifacts

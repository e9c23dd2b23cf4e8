"""The Dagster jobs on real Kafka and a fresh warehouse: load, build, checks, rollups = raw SQL; replay; rebuild."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from analytics_core.topics import ensure_topics
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.lag import loader_lag
from tests.conftest import delete_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY_US = 86_400_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01
# Two sends, apart in Kafka time: the second one's days overlap the first's, so a replay from between
# them rebuilds day buckets that keep rows it did not delete.
FIRST = GeneratorConfig(seed=31, days=2, events_per_day=3_000, tenants=2, start_us=START_US)
SECOND = GeneratorConfig(seed=32, days=1, events_per_day=2_000, tenants=2, start_us=START_US + DAY_US)

# Independently of dbt: per tenant and UTC day, first copies of each event (staging's dedupe order).
RAW_DAY_COUNTS = """
    SELECT tenant_id, timestamp::DATE AS day,
        count(*) FILTER (WHERE NOT is_bot) AS events,
        count(*) AS traffic_events,
        count(*) FILTER (WHERE NOT is_bot AND event_type = 'purchase') AS purchases
    FROM (
        SELECT * FROM lake.raw_events
        QUALIFY row_number() OVER (
            PARTITION BY tenant_id, event_id ORDER BY received_at, _kafka_partition, _kafka_offset) = 1
    )
    GROUP BY ALL
"""
DAY_TOTALS = """
    SELECT tenant_id, window_start::DATE, metric, value FROM lake.fct_metrics_day
    WHERE dimension_set = '' AND metric IN ('events', 'traffic_events', 'purchases')
"""
DAY_ROLLUP = """
    SELECT tenant_id, metric, dimension_set, event_type, country, device, window_start, round(value, 6)
    FROM lake.fct_metrics_day
"""


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    con = warehouse.connect(settings)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def checks_passed(result: dg.ExecuteInProcessResult) -> set[str]:
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    return {e.check_name for e in evaluations}


def raw_events_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    key = dg.AssetKey(["tracking", "raw_events"])
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@dataclass
class Pipeline:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    between: datetime  # a Kafka time after the first send and before the second
    delivered: tuple[int, int]
    runs: dict[str, dg.ExecuteInProcessResult]
    day_rollup: set[tuple[Any, ...]]

    def execute(self, job: str, run_config: dict[str, Any] | None = None, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(run_config, instance=self.instance, **kwargs)


@pytest.fixture(scope="module")
def pipeline(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Two sends into this module's own topics, then the minute and hourly jobs on a fresh warehouse."""
    from orchestration.definitions import defs
    from orchestration.defs.dbt.schedules import metrics_minute_schedule
    from orchestration.defs.warehouse.resources import WarehouseResource

    prefix = f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:8]}."
    update = {
        "topic_prefix": prefix,
        "warehouse_path": tmp_path_factory.mktemp("orchestration") / "warehouse",
        "redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:",  # no realtime consumer: the drift check skips
    }
    settings = kafka_settings.model_copy(
        update={**update, "loader_batch_events": 2_000, "loader_batch_seconds": 0.5, "loader_compact_every_s": 0.0}
    )
    ensure_topics(settings)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_topics, settings)
        instance = cleanup.enter_context(dg.instance_for_test())
        first = run(FIRST, KafkaSink(settings)).statuses["delivered"]
        time.sleep(1.0)
        between = datetime.now(UTC)
        time.sleep(1.0)
        second = run(SECOND, KafkaSink(settings)).statuses["delivered"]
        resource = WarehouseResource.from_settings(settings, loader_idle_exit_s=3.0, loader_max_s=300.0)
        test_defs = dg.Definitions(
            assets=defs.assets,
            asset_checks=defs.asset_checks,
            jobs=defs.jobs,
            resources={**(defs.resources or {}), "warehouse": resource},
        )
        p = Pipeline(settings, test_defs, instance, between, (first, second), {}, set())
        # As the schedules run it: the first minute run has no hour/day rollups yet to watermark.
        bootstrap = metrics_minute_schedule(dg.build_schedule_context(instance=p.instance))
        assert isinstance(bootstrap, dg.RunRequest) and bootstrap.asset_selection
        p.runs["bootstrap"] = p.execute("metrics_minute", asset_selection=bootstrap.asset_selection)
        p.runs["hourly"] = p.execute("metrics_hourly")
        steady = metrics_minute_schedule(dg.build_schedule_context(instance=p.instance))
        assert isinstance(steady, dg.RunRequest) and steady.asset_selection is None
        p.runs["minute"] = p.execute("metrics_minute")
        p.day_rollup = set(query(settings, DAY_ROLLUP))
        yield p


def test_minute_and_hourly_jobs_load_build_pass_checks_and_match_raw_sql(pipeline: Pipeline) -> None:
    runs = pipeline.runs
    assert all(result.success for result in runs.values())
    assert "each_kafka_record_once" in checks_passed(runs["bootstrap"])
    assert any(name.startswith("unique_combination_fct_metrics_day") for name in checks_passed(runs["hourly"]))
    # The experiments' and funnels' tables are built by the hourly job too, their dbt tests as asset checks.
    experiments = ("exposures", "user_metrics", "variant_stats", "significance")
    for model in (*(f"fct_experiment_{name}" for name in experiments), "fct_funnel_entries", "fct_funnel_daily"):
        assert any(name.startswith(f"unique_combination_{model}") for name in checks_passed(runs["hourly"])), model
    assert any(name.startswith("unique_combination_fct_warehouse_watermarks") for name in checks_passed(runs["minute"]))
    loaded = raw_events_metadata(runs["bootstrap"])
    assert loaded["loaded"] == loaded["dagster/row_count"] == sum(pipeline.delivered)
    assert loaded["total_lag"] == 0
    assert raw_events_metadata(runs["minute"])["loaded"] == 0  # caught up already: nothing loaded twice

    expected = {}
    for tenant, day, events, traffic, purchases in query(pipeline.settings, RAW_DAY_COUNTS):
        for metric, value in (("events", events), ("traffic_events", traffic), ("purchases", purchases)):
            if value:  # the rollups store no zero rows
                expected[(tenant, day, metric)] = value
    actual = {(tenant, day, metric): value for tenant, day, metric, value in query(pipeline.settings, DAY_TOTALS)}
    assert len({day for _, day, _ in expected}) >= 2
    assert actual == expected


def test_replay_reloads_each_record_once_and_rebuilds_identical_rollups(pipeline: Pipeline) -> None:
    result = pipeline.execute("replay", {"ops": {"rewind_loader": {"config": {"since": pipeline.between.isoformat()}}}})
    assert result.success
    rebuild_from = datetime.fromisoformat(result.output_for_node("rewind_loader"))
    assert rebuild_from < pipeline.between  # the reloaded events happened in 2024: rebuilt from there
    [output] = [e for e in result.events_for_node("rewind_loader") if e.is_successful_output]
    plan = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert plan["rows_deleted"] == pipeline.delivered[1] and plan["kafka_group_offsets_committed"] is True
    assert raw_events_metadata(result)["loaded"] == pipeline.delivered[1]  # exactly the second send, again
    assert any(name.startswith("unique_combination_fct_metrics_day") for name in checks_passed(result))

    highs = {p.partition: p.high_watermark for p in loader_lag(pipeline.settings)}
    per_partition = query(
        pipeline.settings,
        "SELECT _kafka_partition, count(*), count(DISTINCT _kafka_offset), min(_kafka_offset), max(_kafka_offset) "
        "FROM lake.raw_events GROUP BY 1",
    )
    assert {p: (n, d, lo, hi + 1) for p, n, d, lo, hi in per_partition} == {
        p: (h, h, 0, h) for p, h in highs.items() if h
    }  # every Kafka record exactly once
    assert set(query(pipeline.settings, DAY_ROLLUP)) == pipeline.day_rollup


def test_rebuild_job_rebuilds_identical_rollups(pipeline: Pipeline) -> None:
    since = datetime.fromtimestamp((START_US + DAY_US) / 1e6, UTC).isoformat()
    result = pipeline.execute("rebuild_metrics", {"rebuild_from": since})
    assert result.success
    checks_passed(result)
    assert set(query(pipeline.settings, DAY_ROLLUP)) == pipeline.day_rollup

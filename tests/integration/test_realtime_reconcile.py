"""Reconciliation: the same events through the realtime consumer and through the loader and dbt agree exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from analytics_core import warehouse
from analytics_core.events import to_micros
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, counter_field
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.warehouse_loader import WarehouseLoader
from realtime.consumer import RealtimeConsumer
from realtime.reconcile import reconcile
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.realtime_expected import hash_of

pytestmark = pytest.mark.integration

# The last day, minute by minute: closed minutes inside the retention, rolled up by dbt.
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)


def test_drift_is_zero_for_the_same_events_and_shows_an_altered_counter(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    settings = own_topics.model_copy(
        update={
            "redis_key_prefix": redis_prefix,
            "realtime_retention_s": 2 * 86_400,
            "warehouse_path": tmp_path / "warehouse",
            "loader_batch_events": 5_000,
            "loader_compact_every_s": 0.0,
        }
    )
    config = GeneratorConfig(seed=31, days=1, events_per_day=6_000, tenants=2, start_us=to_micros(START))
    run(config, KafkaSink(settings))
    WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    run_dbt(settings, "run")
    applied = RealtimeConsumer(settings).run(idle_exit_s=2.0, handle_signals=False).applied
    assert applied > 5_000

    con = warehouse.connect(settings)
    try:
        drifts = reconcile(settings, con, redis_conn)
        assert {(d.tenant_id, d.metric) for d in drifts} == {
            (t, m) for t in ("tenant_1", "tenant_2") for m in ("events", "traffic_events", "purchases", "revenue")
        }
        assert all(d.drift == 0 for d in drifts), drifts
        assert all(d.minutes > 1_000 for d in drifts) and min(d.cells for d in drifts) > 100
        stored = {k: float(v) for k, v in hash_of(redis_conn, RealtimeKeys(redis_prefix).drift).items()}
        assert stored == {f"{d.tenant_id}|{d.metric}": 0.0 for d in drifts}

        # Three events too many in one minute and 1.5 of revenue too little in another: exactly that drift.
        minute, revenue_minute = [
            int(m)
            for (m,) in lake_query(
                settings,
                "SELECT epoch(window_start)::BIGINT FROM {lake}.fct_metrics_minute"
                " WHERE tenant_id = 'tenant_1' AND metric = 'revenue' AND dimension_set = '' ORDER BY 1 LIMIT 2",
            )
        ]
        keys = RealtimeKeys(redis_prefix)
        stars = ["*", "*", "*"]
        redis_conn.hincrby(keys.counters("tenant_1", minute), counter_field("events", "", stars), 3)
        redis_conn.hincrby(
            keys.counters("tenant_1", revenue_minute), counter_field("revenue", "", stars), int(-1.5 * SUM_SCALE)
        )
        found = {(d.tenant_id, d.metric): d.drift for d in reconcile(settings, con, redis_conn)}
    finally:
        con.close()
    assert found.pop(("tenant_1", "events")) == 3
    assert abs(found.pop(("tenant_1", "revenue")) - 1.5) < 1e-9
    assert set(found.values()) == {0.0}
    assert float(hash_of(redis_conn, keys.drift)["tenant_1|events"]) == 3.0

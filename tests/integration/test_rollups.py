"""dbt rollups on the real pipeline: generated events through Kafka and the loader, rolled up and
checked against the generator's ground truth and a raw-SQL recomputation; late events restate
their bucket; incremental builds equal a full rebuild."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics_core.clients import kafka_producer
from analytics_core.events import to_micros
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.warehouse_loader import WarehouseLoader
from tests.conftest import delete_topics
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.unique_counts import unique_count_ok

pytestmark = pytest.mark.integration

# Two whole days that end at today's midnight, so minute rollups (kept 7 days) hold them too.
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
CONFIG = GeneratorConfig(seed=11, days=2, events_per_day=8_000, tenants=2, start_us=to_micros(START))
ADDITIVE = ("events", "purchases", "revenue")


def load(settings: Settings) -> None:
    WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)


@pytest.fixture(scope="module")
def lake(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict]]:
    """Generated traffic (resends, late sessions, bots) loaded into a fresh warehouse and rolled up."""
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:8]}.",
            "warehouse_path": tmp_path_factory.mktemp("rollups") / "warehouse",
            "loader_batch_events": 5_000,
            "loader_batch_seconds": 0.5,
            "loader_compact_every_s": 0.0,
        }
    )
    ensure_topics(settings)
    truth = run(CONFIG, KafkaSink(settings)).truth.to_dict()
    load(settings)
    # Unit tests of incremental models need the model's table to exist: they run once it does.
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    yield settings, truth
    delete_topics(settings)


def day_rollups(settings: Settings) -> dict[tuple[str, str, str, str], float]:
    """(day, tenant, metric, dimension set + values) → value, for the metrics the truth knows."""
    rows = lake_query(
        settings,
        "SELECT strftime(window_start, '%Y-%m-%d'), tenant_id, metric,"
        " dimension_set || ':' || country || '/' || device, value FROM {lake}.fct_metrics_day"
        " WHERE dimension_set IN ('', 'country', 'device')",
    )
    return {(d, t, m, k): v for d, t, m, k, v in rows}


def test_dbt_unit_tests_pass(lake: tuple[Settings, dict]) -> None:
    settings, _ = lake
    done = run_dbt(settings, "test", "--select", "test_type:unit")
    assert "PASS=8" in done.stdout, done.stdout[-3000:]  # staging 2, rollups 5, experiments 1


def test_day_rollups_equal_the_ground_truth(lake: tuple[Settings, dict]) -> None:
    settings, truth = lake
    got = day_rollups(settings)
    checked = 0
    for day, tenants in truth["days"].items():
        for tenant, cells in tenants.items():
            key = (day, tenant)
            assert got.get((*key, "events", ":*/*"), 0) == cells["events"]
            assert got.get((*key, "purchases", ":*/*"), 0) == cells["purchases"]
            assert round(got.get((*key, "revenue", ":*/*"), 0) * 100) == cells["revenue_cents"]
            for country, c in cells["by_country"].items():
                assert got.get((*key, "events", f"country:{country}/*"), 0) == c["events"]
                assert round(got.get((*key, "revenue", f"country:{country}/*"), 0) * 100) == c["revenue_cents"]
            for device, c in cells["by_device"].items():
                assert got.get((*key, "purchases", f"device:*/{device}"), 0) == c["purchases"]
            users = got.get((*key, "active_users", ":*/*"), 0)
            assert unique_count_ok(users, cells["active_users"]), (key, users, cells["active_users"])
            checked += cells["events"]
    assert checked > 10_000


RAW_DAY_TOTALS = """
    WITH first_copies AS (
        SELECT * FROM {lake}.raw_events
        QUALIFY row_number() OVER (PARTITION BY tenant_id, event_id ORDER BY received_at) = 1
    )
    SELECT strftime(timestamp, '%Y-%m-%d'), tenant_id,
        count(*) FILTER (WHERE NOT is_bot),
        count(*),
        count(*) FILTER (WHERE NOT is_bot AND event_type = 'purchase'),
        round(sum(revenue) FILTER (WHERE NOT is_bot AND event_type = 'purchase') * 100),
        count(DISTINCT coalesce(user_id, anonymous_id)) FILTER (WHERE NOT is_bot)
    FROM first_copies GROUP BY ALL
"""


def test_every_grain_equals_raw_sql_over_the_same_events(lake: tuple[Settings, dict]) -> None:
    settings, _ = lake
    raw = {(d, t): rest for d, t, *rest in lake_query(settings, RAW_DAY_TOTALS)}
    for table in ("fct_metrics_minute", "fct_metrics_hour", "fct_metrics_day"):
        rows = lake_query(
            settings,
            "SELECT strftime(window_start, '%Y-%m-%d'), tenant_id, metric, sum(value)"
            f" FROM {{lake}}.{table} WHERE dimension_set = '' AND metric <> 'active_users' AND metric <> 'purchasers'"
            " GROUP BY ALL",
        )
        got = {(d, t, m): v for d, t, m, v in rows}
        for (day, tenant), (events, traffic, purchases, revenue_cents, _users) in raw.items():
            assert got.get((day, tenant, "events"), 0) == events, (table, day, tenant)
            assert got.get((day, tenant, "traffic_events"), 0) == traffic, (table, day, tenant)
            assert got.get((day, tenant, "purchases"), 0) == purchases, (table, day, tenant)
            assert round(got.get((day, tenant, "revenue"), 0) * 100) == (revenue_cents or 0), (table, day, tenant)
    users = {
        (d, t): v
        for d, t, v in lake_query(
            settings,
            "SELECT strftime(window_start, '%Y-%m-%d'), tenant_id, value"
            " FROM {lake}.fct_metrics_day WHERE metric = 'active_users' AND dimension_set = ''",
        )
    }
    for (day, tenant), rest in raw.items():
        assert unique_count_ok(users[(day, tenant)], rest[4]), (day, tenant, users[(day, tenant)], rest[4])


def test_sketches_merged_across_days_and_countries_are_the_sketch_of_all_users(lake: tuple[Settings, dict]) -> None:
    from analytics_core import hll, sketches

    settings, _ = lake
    users = dict(
        lake_query(
            settings,
            "SELECT tenant_id, list(DISTINCT user_key) FROM {lake}.stg_tracking__events"
            " WHERE NOT is_bot AND user_key IS NOT NULL GROUP BY ALL",
        )
    )
    exact = dict(
        lake_query(
            settings,
            "SELECT tenant_id, count(DISTINCT coalesce(user_id, anonymous_id)) FROM {lake}.raw_events"
            " WHERE NOT is_bot GROUP BY ALL",
        )
    )
    # Both days and every country, merged: the country rows of each day are disjoint sets of users
    # only if users never move, so this exercises real overlap between days. A merge of any split is
    # the sketch of the whole set, bit for bit.
    rows = lake_query(
        settings,
        "SELECT tenant_id, list(sketch) FROM {lake}.fct_metrics_day"
        " WHERE metric = 'active_users' AND dimension_set = 'country' GROUP BY ALL",
    )
    assert {tenant for tenant, _ in rows} == set(exact)
    for tenant, day_sketches in rows:
        merged = hll.merge(hll.Sketch.from_bytes(b) for b in day_sketches)
        assert merged == hll.Sketch.from_keys(users[tenant])
        estimate = sketches.estimates([merged])[0]
        assert unique_count_ok(estimate, exact[tenant]), (tenant, estimate, exact[tenant])


def test_watermark_is_the_latest_time_every_partition_has_reached(lake: tuple[Settings, dict]) -> None:
    settings, _ = lake
    expected = lake_query(
        settings,
        "SELECT min(latest) FROM (SELECT max(received_at) AS latest FROM {lake}.raw_events GROUP BY _kafka_partition)",
    )[0][0]
    rows = lake_query(settings, "SELECT tenant_id, granularity, complete_until FROM {lake}.fct_warehouse_watermarks")
    assert {(t, g) for t, g, _ in rows} == {(t, g) for t in ("tenant_1", "tenant_2") for g in ("minute", "hour", "day")}
    assert {c for _, _, c in rows} == {expected}


def _late_event(tenant: str, when: datetime, event_id: str) -> dict[str, Any]:
    now = to_micros(datetime.now(UTC))
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "message_type": "track",
        "event_type": "purchase",
        "user_id": "usr_late",
        "anonymous_id": "anon-late",
        "timestamp": to_micros(when),
        "original_timestamp": to_micros(when),
        "sent_at": now,
        "received_at": now,
        "properties": "{}",
        "country": "IS",
        "device": "mobile",
        "revenue": 12.34,
        "currency": "USD",
        "is_bot": False,
    }


def test_a_late_event_restates_its_bucket_and_incremental_equals_full_rebuild(lake: tuple[Settings, dict]) -> None:
    settings, _ = lake
    late_at = START + timedelta(hours=5, minutes=17, seconds=3)
    hour_key = late_at.replace(minute=0, second=0)
    producer = kafka_producer(settings)
    serialize = EventSerializer(register_event_schema(settings))
    topic = Topics.from_settings(settings).events
    for event_id in ("late-1", "late-1", "late-2"):  # a resend of the same event counts once
        event = _late_event("tenant_1", late_at, event_id)
        producer.produce(topic, key=b"tenant_1:usr_late", value=serialize(event))
    assert producer.flush(10) == 0

    hour_sql = (
        "SELECT metric, dimension_set, country, value FROM {lake}.fct_metrics_hour"
        " WHERE tenant_id = 'tenant_1' AND window_start = $h AND metric IN ('events', 'purchases', 'revenue')"
        " AND dimension_set IN ('', 'country')"
    )
    before = {(m, s, c): v for m, s, c, v in lake_query(settings, hour_sql, {"h": hour_key})}
    untouched_sql = "SELECT sum(value) FROM {lake}.fct_metrics_hour WHERE window_start <> $h AND dimension_set = ''"
    untouched = lake_query(settings, untouched_sql, {"h": hour_key})
    load(settings)
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    after = {(m, s, c): v for m, s, c, v in lake_query(settings, hour_sql, {"h": hour_key})}
    assert after[("events", "", "*")] == before[("events", "", "*")] + 2
    assert after[("purchases", "", "*")] == before.get(("purchases", "", "*"), 0) + 2
    assert round(after[("revenue", "", "*")] - before.get(("revenue", "", "*"), 0), 2) == 24.68
    assert after[("events", "country", "IS")] == before.get(("events", "country", "IS"), 0) + 2
    assert lake_query(settings, untouched_sql, {"h": hour_key}) == untouched

    snapshot_sql = (
        "SELECT tenant_id, metric, dimension_set, event_type, country, device, window_start, round(value, 6), sketch"
        " FROM {lake}.{table} ORDER BY ALL"
    )
    incremental = {t: lake_query(settings, snapshot_sql.replace("{table}", t)) for t in TABLES}
    run_dbt(settings, "build", "--full-refresh", "--exclude-resource-type", "unit_test")
    for table in TABLES:
        assert lake_query(settings, snapshot_sql.replace("{table}", table)) == incremental[table], table


TABLES = ("fct_metrics_minute", "fct_metrics_hour", "fct_metrics_day")


def test_rebuild_from_gives_the_same_numbers(lake: tuple[Settings, dict]) -> None:
    settings, _ = lake
    sql = (
        "SELECT tenant_id, metric, dimension_set, country, window_start, round(value, 6)"
        " FROM {lake}.fct_metrics_day ORDER BY ALL"
    )
    before = lake_query(settings, sql)
    since = (START + timedelta(days=1)).isoformat()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test", "--vars", f"{{rebuild_from: '{since}'}}")
    assert lake_query(settings, sql) == before
    staged = lake_query(
        settings, "SELECT count(*), count(DISTINCT (tenant_id, event_id)) FROM {lake}.stg_tracking__events"
    )
    assert staged[0][0] == staged[0][1]


def test_the_experiments_users_and_conversions_equal_the_ground_truth(lake: tuple[Settings, dict]) -> None:
    """checkout_button's primary metric (a purchase carrying the experiment's tag, the session that showed the
    button) through Kafka, the loader and dbt: per tenant and variant, the exposed users and converters the
    generator counted (tests/unit/test_experiment_detection.py takes it from there to the verdict)."""
    settings, truth = lake
    by_tenant = truth["experiments"]["checkout_button"]["by_tenant"]
    rows = lake_query(
        settings,
        "SELECT tenant_id, variant, users, value_sum FROM {lake}.main.fct_experiment_variant_stats"
        " WHERE experiment_key = 'checkout_button' AND metric = 'checkout_purchase'",
    )
    got = {(tenant, variant): (users, int(conversions)) for tenant, variant, users, conversions in rows}
    want = {
        (tenant, variant): (arm["exposed_users"], arm["converters"])
        for tenant, arms in by_tenant.items()
        for variant, arm in arms.items()
    }
    assert got == want
    assert min(users for users, _ in got.values()) > 0


def test_the_checkout_funnels_users_equal_the_ground_truth(lake: tuple[Settings, dict]) -> None:
    """The project's checkout funnel (page_view → add_to_cart → checkout → purchase, ordered, 1 day) through
    Kafka, the loader and dbt: per tenant and step, the users who reached it (their deepest entry of any
    day), as the generator counted the users whose sessions walked that far."""
    settings, truth = lake
    rows = lake_query(
        settings,
        "SELECT tenant_id, max(depth) FROM {lake}.main.fct_funnel_entries"
        " WHERE funnel_key = 'checkout' AND NOT excluded GROUP BY tenant_id, user_key",
    )
    got: dict[str, list[int]] = {}
    for tenant, depth in rows:
        reached = got.setdefault(tenant, [0, 0, 0, 0])
        for k in range(depth):
            reached[k] += 1
    want = {tenant: funnel["users"] for tenant, funnel in truth["funnel"].items()}
    assert all(
        funnel["steps"] == ["page_view", "add_to_cart", "checkout", "purchase"] for funnel in truth["funnel"].values()
    )
    assert got == want
    assert all(users[3] > 0 for users in want.values())

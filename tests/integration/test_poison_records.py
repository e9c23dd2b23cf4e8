"""Poison records: revenue 1e308 / 9.3e18, NaN, year-0001 event times, counters at the 64-bit limits.

Through the real collector they are dead-lettered (out_of_range) and counted; produced straight onto
tracking.events they are dead-lettered by the loader and skipped by the realtime consumer; both keep
going for every tenant, and the other tenants' numbers in Redis and in the warehouse equal a plain
computation from the good events sent. A Redis counter already at its int64 minimum or maximum refuses
the batch's increment: the consumer logs and counts it, applies the rest of the batch and its offsets,
and does not stop (nor stop again after a restart).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import TopicPartition

from analytics_core.catalogue import ALL, get_catalogue
from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.realtime_keys import SUM_SCALE, RealtimeKeys, counter_field
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from loaders.warehouse_loader import WarehouseLoader
from realtime.consumer import RealtimeConsumer, realtime_group
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.conftest import RunningCollector
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.integration.helpers import read_dead_letters, read_events
from tests.realtime_expected import expected_from, hash_of, read_records, redis_counters

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
YEAR_1_US = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
YEAR_9999_US = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
# Good revenues, large ones included (up to just under the 1e9 bound), with at most 6 decimals.
GOOD_REVENUES = [19.99, 0.01, 123456.789012, 999_999_999.99, 45.0, 7.000001, 250_000_000.5, 3.14]


def micro(revenue: float) -> int:
    """Micro-units of an amount, as Python rounds it: the plain computation the counters must match."""
    return round(revenue * SUM_SCALE)


def stars() -> list[str]:
    return [ALL] * len(get_catalogue().rollup_dimensions)


def total_field(metric: str) -> str:
    return counter_field(metric, "", stars())


def realtime_settings(base: Settings, prefix: str, tmp: Path) -> Settings:
    return base.model_copy(
        update={
            "redis_key_prefix": prefix,
            "realtime_retention_s": 86_400,
            "realtime_batch_events": 500,
            "realtime_batch_seconds": 0.2,
            "warehouse_path": tmp / "warehouse",
            "loader_batch_events": 500,
            "loader_batch_seconds": 0.5,
            "loader_compact_every_s": 0.0,
        }
    )


def message(**fields: Any) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(seconds=5)
    return {"type": "track", "messageId": uuid.uuid4().hex, "timestamp": when.isoformat(), **fields}


def purchase(user: str, revenue: Any, **fields: Any) -> dict[str, Any]:
    props = {"revenue": revenue, "currency": "USD"}
    return message(event="purchase", userId=user, properties=props, **fields)


def post(collector: RunningCollector, key: str, batch: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{collector.url}/v1/batch", json={"batch": batch}, auth=(key, ""), timeout=30)


def canonical(tenant: str, event_id: str, now_us: int, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": event_id,
        "tenant_id": tenant,
        "message_type": "track",
        "event_type": "purchase",
        "user_id": f"{tenant}-direct",
        "timestamp": now_us - 3_000_000,
        "received_at": now_us,
        "properties": "{}",
        "revenue": 1.0,
        "currency": "USD",
        "is_bot": False,
    }
    return {**base, **fields}


def produce(settings: Settings, events: list[dict[str, Any]], key: str) -> None:
    serialize = EventSerializer(register_event_schema(settings))
    producer = kafka_producer(settings)
    topic = Topics.from_settings(settings).events
    for e in events:
        producer.produce(topic, serialize(e), key)  # one key: one partition, so good records follow the bad
    assert producer.flush(30) == 0


def test_poison_records_are_dead_lettered_and_every_other_number_stays_exact(
    collector: RunningCollector, redis_prefix: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    poison, good_a, good_b = f"poison_{run}", f"good_a_{run}", f"good_b_{run}"
    store = TenantStore(collector.settings.tenants_db)
    keys = {t: f"wk_{t}" for t in (poison, good_a, good_b)}
    for tenant, key in keys.items():
        create_tenant_with_keys(store, tenant, key, f"rk_{tenant}")
    time.sleep(5.5)  # the collector's key cache refreshes every 5 s
    settings = realtime_settings(collector.settings, redis_prefix, tmp_path)

    # 1. Through the collector: the overflow batch and the year-0001 batch, each beside good events.
    overflow = [purchase("p1", 1e308), purchase("p2", 9.3e18), purchase("p3", 9_300_000_000_000_000_000)]
    ancient = [
        message(event="page_view", userId="p4", timestamp="0001-01-01T00:00:00Z"),
        message(event="page_view", userId="p5", timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z"),
        purchase("p6", 5.0, timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z"),
    ]
    poison_good = [purchase("p7", 12.5), message(event="page_view", userId="p8")]
    sent_to_collector = overflow + ancient + poison_good
    assert post(collector, keys[poison], overflow + poison_good[:1]).status_code == 200
    assert post(collector, keys[poison], ancient + poison_good[1:]).status_code == 200
    good_sent: dict[str, list[dict[str, Any]]] = {good_a: [], good_b: []}
    for i, revenue in enumerate(GOOD_REVENUES):
        tenant = good_a if i % 2 else good_b
        good_sent[tenant] += [purchase(f"{tenant}-u{i}", revenue), message(event="page_view", userId=f"{tenant}-u{i}")]
    for tenant, batch in good_sent.items():
        assert post(collector, keys[tenant], batch).status_code == 200

    # Counts add up for the poison tenant: accepted + dead-lettered (+ rejected: none) = sent.
    accepted = read_events(settings, lambda e: e["tenant_id"] == poison, len(poison_good))
    letters = read_dead_letters(settings, lambda d: d.tenant_id == poison and d.source == "collector", 6)
    assert len(accepted) + len(letters) == len(sent_to_collector)
    assert sorted(e["user_id"] for e in accepted) == ["p7", "p8"]
    assert {d.reason for d in letters} == {"out_of_range"}
    details = sorted(d.detail for d in letters)
    assert details == sorted(
        ["properties.revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)"] * 3
        + ["timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)"] * 3
    )

    # 2. Straight onto tracking.events, bypassing the collector: poison records, then good ones after them.
    now_us = int(time.time() * 1e6)
    bad_direct = [
        canonical(poison, "d-1e308", now_us, revenue=1e308),
        canonical(poison, "d-9.3e18", now_us, revenue=9.3e18),
        canonical(poison, "d-nan", now_us, revenue=float("nan")),
        canonical(poison, "d-inf", now_us, revenue=float("-inf")),
        canonical(poison, "d-year1", now_us, event_type="page_view", revenue=None, timestamp=YEAR_1_US),
        canonical(
            poison,
            "d-7972",
            now_us,
            event_type="page_view",
            revenue=None,
            timestamp=now_us - (YEAR_9999_US - YEAR_1_US),
            original_timestamp=YEAR_1_US,
            sent_at=YEAR_9999_US,
        ),
    ]
    good_direct = [canonical(good_a, f"d-good-{i}", now_us, revenue=r) for i, r in enumerate([2.5, 1e9, 0.000001])]
    good_direct.append(canonical(poison, "d-poison-ok", now_us, revenue=8.25))
    produce(settings, bad_direct + good_direct, key=f"{poison}:direct")

    # 3. The loader and the realtime consumer run through all of it and stop only when idle.
    loaded = WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    live = RealtimeConsumer(settings).run(idle_exit_s=2.0, handle_signals=False)

    records = read_records(settings)
    want = expected_from(get_catalogue(), records, time.time(), settings.realtime_retention_s)
    assert want.out_of_range == len(bad_direct)
    assert (live.applied, live.out_of_range, live.undecodable, live.write_errors) == (
        want.applied,
        want.out_of_range,
        want.undecodable,
        0,
    )
    assert loaded.dead_letter_reasons.get("out_of_range") == len(bad_direct)
    stats = hash_of(redis_conn, RealtimeKeys(redis_prefix).stats)
    assert int(stats["out_of_range"]) == len(bad_direct)
    loader_letters = read_dead_letters(settings, lambda d: d.tenant_id == poison and d.source == "loader", 6)
    assert len(loader_letters) == len(bad_direct) and {d.reason for d in loader_letters} == {"out_of_range"}
    assert sum("revenue: must be a finite number" in d.detail for d in loader_letters) == 2
    assert sum("timestamp: more than 366 days before receivedAt" in d.detail for d in loader_letters) == 2

    # Redis: every cell of every tenant equals the plain computation over the usable records ...
    mine = {poison, good_a, good_b}
    cells = {k: v for k, v in want.counters.items() if k[0] in mine}
    assert redis_counters(redis_conn, redis_prefix, cells) == cells
    # ... and the totals equal what was sent, summed by hand.
    good_events = {t: list(sent) for t, sent in good_sent.items()}
    good_events[poison] = poison_good
    direct_good = {good_a: good_direct[:3], poison: good_direct[3:]}
    for tenant in mine:
        purchases = [m["properties"]["revenue"] for m in good_events[tenant] if m["event"] == "purchase"]
        purchases += [e["revenue"] for e in direct_good.get(tenant, [])]
        events = len(good_events[tenant]) + len(direct_good.get(tenant, []))
        live_cells = [cell for (t, _), cell in cells.items() if t == tenant]
        assert sum(c.get(total_field("events"), 0) for c in live_cells) == events, tenant
        assert sum(c.get(total_field("revenue"), 0) for c in live_cells) == sum(map(micro, purchases)), tenant
        assert all(abs(v) < 2**63 for c in live_cells for v in c.values())

        # The warehouse: the same events, the same revenue, exactly (micro-units summed as integers).
        (rows, revenue_micro, bad), *_ = lake_query(
            settings,
            "SELECT count(*), sum(round(revenue * 1000000))::HUGEINT,"
            " count(*) FILTER (WHERE NOT isfinite(revenue) OR abs(revenue) > 1e9 OR year(timestamp) < 1900)"
            " FROM {lake}.raw_events WHERE tenant_id = ?",
            [tenant],
        )
        assert (rows, int(revenue_micro), bad) == (events, sum(map(micro, purchases)), 0), tenant

    # The rollups over them: finite, and the revenue per tenant equals the sum sent.
    run_dbt(settings, "run", "--select", "stg_tracking__events", "fct_metrics_minute")
    rollup = dict(
        lake_query(
            settings,
            "SELECT tenant_id, sum(value) FROM {lake}.fct_metrics_minute"
            " WHERE metric = 'revenue' AND dimension_set = '' AND list_contains(?, tenant_id) GROUP BY tenant_id",
            [sorted(mine)],
        )
    )
    for tenant in mine:
        purchases = [m["properties"]["revenue"] for m in good_events[tenant] if m["event"] == "purchase"]
        purchases += [e["revenue"] for e in direct_good.get(tenant, [])]
        assert rollup[tenant] == pytest.approx(sum(purchases), rel=1e-12, abs=1e-6)


def test_a_counter_at_its_64_bit_limit_refuses_the_increment_and_the_rest_of_the_batch_applies(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = realtime_settings(own_topics, redis_prefix, tmp_path)
    keys = RealtimeKeys(redis_prefix)
    now_us = int(time.time() * 1e6)
    minute = (now_us - 3_000_000) // 60_000_000 * 60
    at_max, at_min, other = "tenant_max", "tenant_min", "tenant_other"
    # Counters left at the limits (e.g. by the overflow before the bounds): one at int64 max, one at min.
    redis_conn.hset(keys.counters(at_max, minute), total_field("revenue"), str(INT64_MAX))
    redis_conn.hset(keys.counters(at_min, minute), total_field("revenue"), str(INT64_MIN))
    events = [
        canonical(at_max, "max-1", now_us, revenue=5.0),  # +5,000,000 to a counter at 2**63 - 1
        canonical(at_max, "max-2", now_us, event_type="page_view", revenue=None),
        canonical(at_min, "min-1", now_us, revenue=-3.0),  # -3,000,000 to a counter at -2**63
        canonical(other, "other-1", now_us, revenue=42.5),
        canonical(other, "other-2", now_us, revenue=0.5),
    ]
    produce(settings, events, key="limits")

    with caplog.at_level(logging.WARNING, logger="realtime.apply"):
        stats = RealtimeConsumer(settings).run(idle_exit_s=2.0, handle_signals=False)
    assert (stats.applied, stats.write_errors) == (len(events), 2)
    refusals = [r.getMessage() for r in caplog.records if "Redis refused" in r.getMessage()]
    assert len(refusals) == 2 and all("would overflow" in text for text in refusals)
    assert {text.split(":")[0] for text in refusals} == {f"tenant {at_max}", f"tenant {at_min}"}
    assert int(hash_of(redis_conn, keys.stats)["write_errors"]) == 2

    # The refused counters stay at their limits; every other write of the batch is applied, exactly.
    want = expected_from(get_catalogue(), read_records(settings), time.time(), settings.realtime_retention_s)
    expected = {cell: dict(fields) for cell, fields in want.counters.items()}
    expected[(at_max, minute)][total_field("revenue")] = INT64_MAX
    expected[(at_min, minute)][total_field("revenue")] = INT64_MIN
    assert redis_counters(redis_conn, redis_prefix, expected) == expected
    assert expected[(other, minute)][total_field("revenue")] == micro(42.5) + micro(0.5)
    assert expected[(at_max, minute)][total_field("events")] == 2
    # The offsets went with the writes: all three tenants' transactions were applied.
    for tenant, last in want.offsets.items():
        assert {int(p): int(o) for p, o in hash_of(redis_conn, keys.offsets(tenant)).items()} == last
    assert set(want.offsets) == {at_max, at_min, other}

    # A restart from offset 0 (as after a crash before the Kafka commit) neither stops nor applies twice.
    rewind = kafka_consumer(settings, realtime_group(settings))
    topic = Topics.from_settings(settings).events
    parts = rewind.list_topics(topic, timeout=10).topics[topic].partitions
    rewind.commit(offsets=[TopicPartition(topic, p, 0) for p in parts], asynchronous=False)
    rewind.close()
    again = RealtimeConsumer(settings).run(idle_exit_s=2.0, handle_signals=False)
    assert (again.applied, again.replayed, again.write_errors) == (0, len(events), 0)
    assert redis_counters(redis_conn, redis_prefix, expected) == expected
    # New traffic for the tenant at the limit keeps flowing into its other counters.
    produce(settings, [canonical(at_max, "max-3", now_us, event_type="page_view", revenue=None)], key="limits")
    later = RealtimeConsumer(settings).run(idle_exit_s=2.0, handle_signals=False)
    assert (later.applied, later.write_errors) == (1, 0)
    counters = redis_counters(redis_conn, redis_prefix, [(at_max, minute)])[(at_max, minute)]
    assert counters[total_field("events")] == 3 and counters[total_field("revenue")] == INT64_MAX

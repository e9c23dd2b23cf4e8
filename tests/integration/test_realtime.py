"""The realtime consumer on the real broker and Redis, against a plain-Python computation over the same records."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
import redis
from confluent_kafka import TopicPartition

from analytics_core.catalogue import get_catalogue
from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.realtime_keys import RealtimeKeys, expire_at
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from realtime.consumer import RealtimeConsumer, realtime_group
from tests.realtime_expected import (
    Expected,
    assert_sketches_match,
    coarser_uniques_keys,
    expected_from,
    hash_of,
    read_records,
    redis_counters,
    written_keys,
)

pytestmark = pytest.mark.integration

RETENTION_S = 86_400
HOUR_US = 3_600_000_000


def realtime_settings(topics: Settings, prefix: str, batch: int = 2_000) -> Settings:
    return topics.model_copy(
        update={
            "redis_key_prefix": prefix,
            "realtime_retention_s": RETENTION_S,
            "realtime_batch_events": batch,
            "realtime_batch_seconds": 0.2,
        }
    )


def consume(settings: Settings) -> Any:
    return RealtimeConsumer(settings).run(idle_exit_s=1.5, handle_signals=False)


def edge_events(now_us: int) -> list[dict[str, Any]]:
    """Events the generator never makes: missing dimensions and users, a quoted event type, too old, bad JSON,
    a tenant id that cannot be a Redis hash tag."""
    base = {
        "message_type": "track",
        "tenant_id": "tenant_1",
        "user_id": None,
        "anonymous_id": "anon-edge",
        "timestamp": now_us - HOUR_US,
        "received_at": now_us - HOUR_US + 1_000,
        "properties": "{}",
        "country": None,
        "device": None,
        "revenue": None,
        "is_bot": False,
    }
    return [
        {**base, "event_id": "edge-1", "event_type": "purchase"},  # no revenue, unknown country and device
        {**base, "event_id": "edge-2", "event_type": "purchase", "revenue": 12.345678, "country": "DE"},
        {**base, "event_id": "edge-3", "event_type": 'Order "Completed" \u2013 \u00fc', "device": "mobile"},
        {**base, "event_id": "edge-4", "event_type": "page_view", "anonymous_id": None},  # no user at all
        {**base, "event_id": "edge-5", "event_type": "purchase", "revenue": 99.0, "is_bot": True},
        {**base, "event_id": "edge-2", "event_type": "purchase", "revenue": 12.345678, "country": "DE"},  # resend
        {**base, "event_id": "edge-old", "event_type": "page_view", "timestamp": now_us - 3 * 24 * HOUR_US},
        {**base, "event_id": "edge-json", "event_type": "page_view", "properties": "not json"},
        {**base, "event_id": "edge-brace", "event_type": "page_view", "tenant_id": "tenant_{1}"},
    ]


def produce(settings: Settings, events: list[dict[str, Any]], raw: tuple[bytes, ...] = ()) -> None:
    serialize = EventSerializer(register_event_schema(settings))
    producer = kafka_producer(settings)
    topic = Topics.from_settings(settings).events
    for e in events:
        producer.produce(topic, serialize(e), f"{e['tenant_id']}:{e['user_id'] or e['anonymous_id']}")
    for value in raw:
        producer.produce(topic, value, b"tenant_1:garbage")
    assert producer.flush(30) == 0


def generate(settings: Settings, rate: float, seconds: float, seed: int) -> None:
    """Live traffic (sessions already running, resends, bots, late arrivals) at `rate` records a second."""
    config = GeneratorConfig(seed=seed, tenants=2, rate=rate, duration=seconds, duplicate_share=0.1)
    run(config, KafkaSink(settings))


def expected(settings: Settings) -> Expected:
    return expected_from(get_catalogue(), read_records(settings), time.time(), settings.realtime_retention_s)


def assert_hlls_match(client: redis.Redis, settings: Settings, want: Expected) -> None:
    """Every minute uniques key holds the sketch of exactly its expected users (tests/realtime_expected.py), and
    no hour or day uniques key was written."""
    assert_sketches_match(client, settings.redis_key_prefix, want.uniques)
    assert client.exists(*coarser_uniques_keys(settings.redis_key_prefix, want.uniques)) == 0


def test_counters_hlls_offsets_and_updates_match_and_nothing_applies_twice(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis
) -> None:
    settings = realtime_settings(own_topics, redis_prefix)
    keys = RealtimeKeys.from_settings(settings)
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(keys.updates("tenant_1"), keys.updates("tenant_2"))
    generate(settings, 3_000, 4.0, seed=21)
    now_us = int(time.time() * 1e6)
    produce(settings, edge_events(now_us), raw=(b"\x00\x00\x00\x00\x63\x00garbage", b"not even framed"))

    stats = consume(settings)
    want = expected(settings)
    assert want.applied > 10_000 and want.duplicates > 50 and want.too_old == 1 and want.undecodable == 4
    assert (stats.applied, stats.duplicates, stats.too_old, stats.undecodable) == (
        want.applied,
        want.duplicates,
        want.too_old,
        want.undecodable,
    )
    old_minute = (now_us - 3 * 24 * HOUR_US) // 60_000_000 * 60
    assert redis_counters(redis_conn, redis_prefix, [*want.counters, ("tenant_1", old_minute)]) == want.counters
    assert_hlls_match(redis_conn, settings, want)
    assert any(len(u) > 10 for u in want.uniques.values())
    # Every key expires when its bucket leaves the retention.
    pipe = redis_conn.pipeline(transaction=False)
    for tenant, minute in want.counters:
        pipe.expiretime(keys.counters(tenant, minute))
    for tenant, minute, f in want.uniques:
        pipe.expiretime(keys.uniques(tenant, "minute", minute, f))
    ends = [expire_at(m, "minute", RETENTION_S) for _, m in want.counters]
    ends += [expire_at(m, "minute", RETENTION_S) for _, m, _ in want.uniques]
    assert pipe.execute() == ends
    for tenant, last in want.offsets.items():
        assert {int(p): int(o) for p, o in hash_of(redis_conn, keys.offsets(tenant)).items()} == last
    totals = {k: float(v) for k, v in hash_of(redis_conn, keys.stats).items()}
    assert totals["applied"] == want.applied and totals["duplicates"] == want.duplicates
    assert totals["too_old"] == 1 and totals["undecodable"] == 4 and totals["last_applied_at"] > now_us / 1e6 - 60

    # One update per tenant and batch: events add up, minutes are those written, closed ones are corrections.
    updates: dict[str, list[dict[str, Any]]] = {"tenant_1": [], "tenant_2": []}
    while (message := pubsub.get_message(timeout=1.0)) is not None:
        if message["type"] == "message":
            tenant = message["channel"].decode().split("{")[1].split("}")[0]
            updates[tenant].append(json.loads(message["data"]))
    pubsub.close()
    for tenant, messages in updates.items():
        assert sum(m["events"] for m in messages) == sum(1 for e in want.events if e["tenant_id"] == tenant)
        minutes = {m for (t, m) in want.counters if t == tenant}
        assert {m for msg in messages for m in msg["minutes"]} == minutes
        assert all(set(msg["corrections"]) <= set(msg["minutes"]) for msg in messages)
        assert all(c + 60 <= msg["applied_at"] - 5 for msg in messages for c in msg["corrections"])
        assert any(msg["corrections"] for msg in messages)  # the generated past is restated, minute by minute

    # A restart rewound to offset 0 (as after a crash before the Kafka commit) applies nothing again.
    rewind = kafka_consumer(settings, realtime_group(settings))
    topic = Topics.from_settings(settings).events
    parts = rewind.list_topics(topic, timeout=10).topics[topic].partitions
    rewind.commit(offsets=[TopicPartition(topic, p, 0) for p in parts], asynchronous=False)
    rewind.close()
    again = consume(settings)
    records = read_records(settings)
    below = sum(1 for p, o, e in records if e and o <= want.offsets.get(e["tenant_id"], {}).get(p, -1))
    assert again.applied == 0 and again.replayed == below >= want.applied
    # Resends an hour after the first copy: caught by the seen set of the hour before.
    resent = [{**e, "received_at": e["received_at"] + HOUR_US} for e in want.events[:50]]
    produce(settings, resent)
    late = consume(settings)
    assert (late.applied, late.duplicates) == (0, 50)
    assert redis_counters(redis_conn, redis_prefix, want.counters) == want.counters


def test_counters_are_rebuilt_from_kafka_when_redis_loses_them(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis
) -> None:
    settings = realtime_settings(own_topics, redis_prefix, batch=500)
    generate(settings, 1_500, 2.0, seed=22)
    want = expected(settings)
    consumer = RealtimeConsumer(settings)
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(consumer.run(handle_signals=False)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: redis_counters(redis_conn, redis_prefix, want.counters) == want.counters, "first pass")
        # Everything written under this test's prefix vanishes, as after a Redis restart without its data.
        assert redis_conn.delete(*written_keys(redis_prefix, want)) == len(written_keys(redis_prefix, want))
        assert redis_counters(redis_conn, redis_prefix, want.counters) == {}
        wait_for(lambda: redis_counters(redis_conn, redis_prefix, want.counters) == want.counters, "rebuild")
    finally:
        consumer.stop()
        thread.join(30)
    stats = done[0]
    assert stats.rebuilds == 2  # the first start (no rt:alive) and the loss
    assert stats.applied == 2 * want.applied and stats.duplicates == 2 * want.duplicates
    assert redis_conn.exists(RealtimeKeys.from_settings(settings).alive)
    assert_hlls_match(redis_conn, settings, want)


def wait_for(condition: Any, what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s")
        time.sleep(0.5)


def test_a_first_start_reads_kafka_from_the_start_of_the_retention_window(
    own_topics: Settings, redis_prefix: str
) -> None:
    # A 4 s window (below what the settings accept, to keep the test short): records produced
    # earlier are not read at all; the seek goes by Kafka's record time, the time of the produce.
    settings = realtime_settings(own_topics, redis_prefix).model_copy(update={"realtime_retention_s": 4})
    now_us = int(time.time() * 1e6)
    soon_us = now_us + 60_000_000  # a minute ahead: not too old when applied (received an hour before: in bounds)
    edges = edge_events(now_us)
    produce(settings, [{**e, "event_id": f"before-{i}", "timestamp": soon_us} for i, e in enumerate(edges)])
    time.sleep(5.0)
    produce(settings, [{**e, "event_id": f"inside-{i}", "timestamp": soon_us} for i, e in enumerate(edges)])
    stats = consume(settings)
    assert (stats.records, stats.rebuilds) == (len(edges), 1)
    assert stats.applied == len(edges) - 2 and stats.undecodable == 2  # all but bad JSON and bad tenant


def test_two_consumers_at_once_leave_each_key_the_sketch_of_all_its_users_past_the_sparse_limit(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis
) -> None:
    # More users than a sparse sketch holds in one minute, spread over the partitions (the key is tenant:user),
    # applied by two consumers of one group at once: both merge into the same minute keys.
    settings = realtime_settings(own_topics, redis_prefix, batch=1_000)
    now_us = int(time.time() * 1e6)
    minute_us = now_us // 60_000_000 * 60_000_000 - 60_000_000  # the minute before this one: ~11,000 users in it
    base = edge_events(now_us)[0]
    rng = random.Random(9)
    events = [
        {
            **base,
            "event_id": f"many-{i}",
            "event_type": rng.choice(["page_view", "purchase", "signup"]),
            "user_id": f"user-{rng.randrange(12_000)}",
            "country": rng.choice(["DE", "FR", None]),
            "timestamp": minute_us + rng.randrange(60_000_000),
            "received_at": now_us,
        }
        for i in range(30_000)
    ]
    consumers = [RealtimeConsumer(settings), RealtimeConsumer(settings)]
    done: list[Any] = []
    threads = [
        threading.Thread(target=lambda c=c: done.append(c.run(idle_exit_s=5.0, handle_signals=False)), daemon=True)
        for c in consumers
    ]
    for t in threads:
        t.start()
    # Both hold partitions before the events come, so both apply some of each key's users.
    wait_for(lambda: all(c.runner.assigned for c in consumers), "both consumers assigned", timeout=60)
    produce(settings, events)
    for t in threads:
        t.join(120)
    assert len(done) == 2 and all(s.records for s in done)  # both took part
    want = expected(settings)
    assert sum(s.applied for s in done) == want.applied == len(events)
    assert max(len(u) for u in want.uniques.values()) > 8_192
    assert_hlls_match(redis_conn, settings, want)

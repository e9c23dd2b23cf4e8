"""Realtime consumer throughput: events/s from Kafka into the Redis counters and user sketches, against raw consume."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from analytics_core.clients import kafka_producer, redis_client
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from bench.bench_kafka import _consume_rate, _delete, _produce
from bench.events import iter_events, partition_key
from bench.harness import Record, Scale, record
from realtime.consumer import RealtimeConsumer, realtime_group

EVENTS = {"small": 500_000, "large": 5_000_000}
POOL = 500_000  # distinct pre-encoded events; large runs cycle through them (as repeats: duplicates)
TIME_FIELDS = ("timestamp", "original_timestamp", "sent_at", "received_at")


def _recent(n: int) -> Iterator[dict[str, Any]]:
    """The benchmark events moved in time so the last one happens now: all inside the retention window."""
    events = iter_events(n)
    first = next(events)
    shift = int(time.time() * 1e6) - first["timestamp"] - n * 1_000  # the events are ~1 ms apart
    for e in (first, *events) if n else ():
        for f in TIME_FIELDS:
            e[f] += shift
        yield e


def run(settings: Settings, scale: Scale) -> list[Record]:
    """realtime_throughput: a fresh group applies n pre-produced events to fresh keys, timed from assignment."""
    n = EVENTS[scale]
    prefix = f"bench.{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.realtime."
    bench = settings.model_copy(update={"topic_prefix": prefix, "redis_key_prefix": f"bench:{uuid.uuid4().hex[:8]}:"})
    topics = Topics.from_settings(bench)
    raw_group = prefix + "consume-raw"
    client = redis_client(bench)
    try:
        ensure_topics(bench, timeout=30)
        serialize = EventSerializer(register_event_schema(bench))
        items = [(partition_key(e), serialize(e)) for e in _recent(min(n, POOL))]
        _produce(kafka_producer(bench), topics.events, (items[i % len(items)] for i in range(n)))
        del items
        raw_rate = _consume_rate(bench, topics.events, raw_group, n - 5_000, len)
        server_before = _server_usec(client)
        consumer = RealtimeConsumer(bench)
        cpu = time.process_time()
        stats = consumer.run(handle_signals=False, max_events=n)
        elapsed = time.monotonic() - (consumer.assigned_at or time.monotonic())
        cpu = time.process_time() - cpu
        server = {k: v - server_before.get(k, 0) for k, v in _server_usec(client).items()}
        if stats.records != n or stats.applied + stats.duplicates != n:
            raise RuntimeError(f"realtime consumer handled {stats.records} of {n} events: {stats}")
        uniques_bytes, uniques_keys = _uniques_memory(client, bench.redis_key_prefix)
    finally:
        _delete(bench, list(topics.all()), [realtime_group(bench), raw_group])
        _delete_keys(client, bench.redis_key_prefix)
        client.close()
    baseline = record("realtime_consume_raw", raw_rate, "events/s")
    dedupe_us = stats.seen_check_s * 1e6 + server.get("smismember", 0) + server.get("sadd", 0)
    return [
        baseline,
        record("realtime_throughput", n / elapsed, "events/s", baseline=baseline, target=">= 100000"),
        # CPU of this process (all threads) per event, and Redis's own time per event, over the whole run.
        record("realtime_cpu_per_event", cpu / n * 1e6, "us/event"),
        record("realtime_redis_per_event", sum(server.values()) / n, "us/event"),
        # Duplicate detection against the seen sets: the client's lookups plus Redis's SMISMEMBER and SADD.
        record("realtime_dedupe_per_event", dedupe_us / n, "us/event"),
        # The unique-user keys the run left (every one still inside the retention): MEMORY USAGE summed, and how many.
        record("realtime_uniques_memory", uniques_bytes / 1e6, "MB"),
        record("realtime_uniques_keys", uniques_keys, "keys"),
    ]


def _server_usec(client: redis.Redis) -> dict[str, int]:
    """Microseconds Redis spent per command so far (INFO commandstats); EXEC's own figure includes its commands."""
    stats: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items() if name != "cmdstat_exec"}


def _uniques_memory(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """Bytes (MEMORY USAGE, summed) and number of the uniques keys under a key prefix (analytics_core/realtime_keys)."""
    names = list(client.scan_iter(match=prefix + "rt:{*}:u:*", count=5_000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name)
    return sum(pipe.execute()), len(names)


def _delete_keys(client: redis.Redis, prefix: str) -> None:
    batch: list[Any] = []
    for key in client.scan_iter(match=prefix + "*", count=5_000):
        batch.append(key)
        if len(batch) >= 5_000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)

"""Raw Kafka produce and consume throughput with the project's client defaults: the baselines."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import cycle, islice
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from analytics_core.clients import kafka_admin, kafka_consumer, kafka_producer
from analytics_core.serde import EventDeserializer, EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from bench.cpu import CpuMeter, stack_servers
from bench.events import iter_events, partition_key
from bench.harness import Record, Scale, record

EVENTS = {"small": 1_000_000, "large": 10_000_000}
# Distinct pre-encoded events; larger runs cycle through them (10M distinct would need ~6 GB of RAM).
POOL = 2_000_000
WARMUP = 5_000
BATCH = 10_000
SCHEMA_ID = 1  # no registry round trip here: the id only fills the wire-format header
STALL_SECONDS = 30.0


def _encoded(n: int) -> list[tuple[bytes, bytes]]:
    """(key, framed value) of n generated events, built before any clock starts."""
    ser = EventSerializer(SCHEMA_ID)
    return [(partition_key(e), ser(e)) for e in iter_events(n)]


def _produce(producer: Producer, topic: str, items: Iterable[tuple[bytes, bytes]]) -> None:
    produce = producer.produce
    for key, value in items:
        try:
            produce(topic, value, key)
        except BufferError:
            # Local queue full: serve delivery reports until librdkafka has room again. Polling only
            # then (not after every message) keeps this a measure of the client, not of our loop.
            producer.poll(0.05)
            produce(topic, value, key)
    if producer.flush(120) > 0:
        raise RuntimeError(f"{len(producer)} messages still undelivered after flush")


def _consume(consumer: Consumer, n: int, handle: Callable[[bytes], Any]) -> None:
    """Read exactly n records, applying handle to each value."""
    got, last_progress = 0, time.monotonic()
    while got < n:
        # Ask for no more than remain: consume() otherwise waits out its timeout on the last batch.
        msgs = consumer.consume(num_messages=min(BATCH, n - got), timeout=1.0)
        if not msgs:
            if time.monotonic() - last_progress > STALL_SECONDS:
                raise TimeoutError(f"consumer stalled after {got} of {n} records")
            continue
        for m in msgs:
            err, value = m.error(), m.value()
            if err is not None:
                raise KafkaException(err)
            if value is None:
                raise ValueError(f"record without a value at offset {m.offset()}")
            handle(value)
        got += len(msgs)
        last_progress = time.monotonic()


def _consume_rate(settings: Settings, topic: str, group: str, n: int, handle: Callable[[bytes], Any]) -> float:
    """Events/s reading n records after WARMUP records (group join and first fetches) from the beginning."""
    consumer = kafka_consumer(settings, group)
    try:
        consumer.subscribe([topic])
        _consume(consumer, WARMUP, handle)
        t0 = time.perf_counter()
        _consume(consumer, n, handle)
        return n / (time.perf_counter() - t0)
    finally:
        consumer.close()


def _delete(settings: Settings, topics: list[str], groups: list[str]) -> None:
    admin = kafka_admin(settings)
    futures = list(admin.delete_topics(topics, operation_timeout=30).values())
    futures += list(admin.delete_consumer_groups(groups, request_timeout=30).values())
    for fut in futures:
        try:
            fut.result()
        except KafkaException as exc:
            # Cleanup must not hide the benchmark's own result or error; say what was left behind.
            if exc.args[0].code() not in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.GROUP_ID_NOT_FOUND):
                print(f"bench cleanup: {exc}")


def run(settings: Settings, scale: Scale) -> list[Record]:
    """kafka_produce_raw, kafka_consume_raw and kafka_consume_decode in events/s; the produce CPU per event."""
    n = EVENTS[scale]
    prefix = f"bench.{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}."
    bench = settings.model_copy(update={"topic_prefix": prefix})
    topics = Topics.from_settings(bench)
    groups = [prefix + "consume-raw", prefix + "consume-decode"]
    try:
        kafka_admin(bench).list_topics(timeout=10)
    except KafkaException as exc:
        raise ConnectionError(f"no Kafka broker at {bench.kafka_bootstrap} (`analytics stack up`?): {exc}") from exc
    items = _encoded(min(WARMUP + n, POOL))
    try:
        ensure_topics(bench, timeout=30)
        producer = kafka_producer(bench)
        _produce(producer, topics.events, items[:WARMUP])
        meter = CpuMeter({"producer": [os.getpid()], **stack_servers(bench)})
        meter.start()
        t0 = time.perf_counter()
        _produce(producer, topics.events, islice(cycle(items), WARMUP, WARMUP + n))
        produce_rate = n / (time.perf_counter() - t0)
        produce_cpu = meter.stop()
        del items, producer

        def raw(value: bytes) -> int:
            return len(value)

        deserialize = EventDeserializer({SCHEMA_ID})
        raw_rate = _consume_rate(bench, topics.events, groups[0], n, raw)
        decode_rate = _consume_rate(bench, topics.events, groups[1], n, deserialize)
    finally:
        _delete(bench, list(topics.all()), groups)
    consume_raw = record("kafka_consume_raw", raw_rate, "events/s")
    return [
        record("kafka_produce_raw", produce_rate, "events/s"),
        # Where the produce CPU went: this process (with librdkafka's threads) and the broker.
        record("kafka_produce_cpu_per_event", produce_cpu["producer"] / n * 1e6, "us/event"),
        *(
            [record("kafka_produce_broker_cpu_per_event", produce_cpu["kafka"] / n * 1e6, "us/event")]
            if "kafka" in produce_cpu
            else []
        ),
        consume_raw,
        record("kafka_consume_decode", decode_rate, "events/s", baseline=consume_raw),
    ]

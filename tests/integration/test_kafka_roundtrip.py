"""Canonical events through the real broker: produced with the project's producer, consumed and decoded."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicPartition

from analytics_core.clients import kafka_admin, kafka_consumer, kafka_producer
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventDeserializer, EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from tests.unit.test_events import valid_event

pytestmark = pytest.mark.integration


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = kafka_consumer(settings, f"test.{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    records = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                records.append(msg)
    finally:
        consumer.close()
    return records


def test_topics_exist_with_the_configured_partitions(kafka_settings: Settings) -> None:
    topics = Topics.from_settings(kafka_settings)
    admin = kafka_admin(kafka_settings)
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[topics.events].partitions) == kafka_settings.kafka_partitions >= 6
    assert len(meta[topics.events_dlq].partitions) == kafka_settings.kafka_partitions
    assert len(meta[topics.schemas].partitions) == 1


def test_events_round_trip_through_kafka(own_topics: Settings) -> None:
    topic = Topics.from_settings(own_topics).events
    serialize = EventSerializer(register_event_schema(own_topics))
    sent = []
    producer = kafka_producer(own_topics)
    for i in range(500):
        event = valid_event() | {"event_id": f"rt-{i}", "user_id": f"u-{i % 7}", "revenue": i * 0.5}
        sent.append(event)
        producer.produce(topic, key=f"{event['tenant_id']}:{event['user_id']}", value=serialize(event))
    assert producer.flush(30) == 0

    records = consume_all(own_topics, topic, len(sent))
    decode = EventDeserializer({serialize.schema_id})
    received = {r.key().decode(): [] for r in records}
    for r in records:
        received[r.key().decode()].append(decode(r.value()))
    got = sorted((e for events in received.values() for e in events), key=lambda e: e["event_id"])
    assert got == sorted(sent, key=lambda e: e["event_id"])
    # One key, one partition: a user's events stay in order.
    partitions_by_key: dict[str, set[int]] = {}
    for r in records:
        partitions_by_key.setdefault(r.key().decode(), set()).add(r.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values())
    for events in received.values():
        ids = [int(e["event_id"].split("-")[1]) for e in events]
        assert ids == sorted(ids)


def test_committed_offsets_resume_where_the_group_stopped(own_topics: Settings) -> None:
    topic = Topics.from_settings(own_topics).events_dlq
    producer = kafka_producer(own_topics)
    for i in range(20):
        producer.produce(topic, key="k", value=f"v{i}".encode())
    assert producer.flush(30) == 0
    group = f"test.{uuid.uuid4().hex}"
    first = kafka_consumer(own_topics, group)
    first.subscribe([topic])
    seen = []
    while len(seen) < 10:
        seen += [m for m in first.consume(num_messages=10 - len(seen), timeout=1.0) if m.error() is None]
    first.commit(asynchronous=False)
    first.close()
    second = kafka_consumer(own_topics, group)
    second.subscribe([topic])
    rest = []
    while len(rest) < 10:
        rest += [m for m in second.consume(num_messages=100, timeout=1.0) if m.error() is None]
    committed = second.committed([TopicPartition(topic, m.partition()) for m in rest[:1]], timeout=10)
    second.close()
    assert [m.value() for m in seen + rest] == [f"v{i}".encode() for i in range(20)]
    assert committed[0].offset >= 10

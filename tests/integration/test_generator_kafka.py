"""`analytics generate --to kafka` against the real broker: what lands on the topics matches the truth."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from analytics_core.clients import kafka_admin, kafka_consumer
from analytics_core.deadletter import DeadLetter
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventDeserializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink, MemorySink

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(seed=21, days=2, events_per_day=4_000, tenants=2, start_us=1_704_067_200_000_000)


@pytest.fixture(scope="module")
def generator_settings(kafka_settings: Settings) -> Iterator[Settings]:
    """Topics of their own (the session's are shared with other tests), deleted afterwards."""
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}gen{uuid.uuid4().hex[:6]}."}
    )
    yield settings
    admin = kafka_admin(settings)
    for future in admin.delete_topics(list(Topics.from_settings(settings).all()), operation_timeout=30).values():
        future.result()


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic`, from the beginning up to the high watermarks seen at the start."""
    consumer = kafka_consumer(settings, f"test.generator.{uuid.uuid4().hex}")
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, high in highs.items() if high > 0])
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < sum(highs.values()):
            assert time.monotonic() < deadline, f"{topic}: only {len(records)} of {sum(highs.values())} readable"
            # consume() waits for all num_messages or the timeout: short waits, many calls.
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                records.append(msg)
        return records
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def produced(generator_settings: Settings) -> dict[str, Any]:
    expected = MemorySink()
    run(CONFIG, expected)  # the same seed again: the events the Kafka run must have produced
    result = run(CONFIG, KafkaSink(generator_settings))
    topics = Topics.from_settings(generator_settings)
    return {
        "expected": expected.records,
        "result": result,
        "truth": result.truth.to_dict(),
        "events": read_topic(generator_settings, topics.events),
        "dlq": read_topic(generator_settings, topics.events_dlq),
        "decode": EventDeserializer({register_event_schema(generator_settings)}),
    }


def test_events_topic_holds_every_valid_event_and_each_resend(produced: dict[str, Any]) -> None:
    counts = produced["truth"]["counts"]["total"]
    assert len(produced["events"]) == counts["valid"] + counts["duplicate"]
    assert produced["result"].statuses == {
        "delivered": counts["valid"] + counts["duplicate"],
        "dlq_delivered": counts["invalid"],
    }
    decoded = [produced["decode"](m.value()) for m in produced["events"]]
    expected = [e for e, kind in produced["expected"] if kind is None]

    def order(e: dict[str, Any]) -> tuple[str, int]:
        return e["event_id"], e["received_at"]

    assert sorted(decoded, key=order) == sorted(expected, key=order)
    for msg, event in zip(produced["events"], decoded, strict=True):
        assert msg.key().decode() == f"{event['tenant_id']}:{event['user_id'] or event['anonymous_id']}"


def test_daily_revenue_from_the_topic_equals_the_truth(produced: dict[str, Any]) -> None:
    seen: set[str] = set()
    cents: dict[str, Counter[str]] = defaultdict(Counter)
    for msg in produced["events"]:
        event = produced["decode"](msg.value())
        if event["event_id"] in seen or event["is_bot"]:
            continue
        seen.add(event["event_id"])
        day = datetime.fromtimestamp(event["timestamp"] / 1e6, UTC).date().isoformat()
        cents[day][event["tenant_id"]] += round((event["revenue"] or 0) * 100)
    truth = {
        day: {t: c["revenue_cents"] for t, c in tenants.items()} for day, tenants in produced["truth"]["days"].items()
    }
    assert {day: dict(c) for day, c in cents.items()} == truth
    assert sum(sum(c.values()) for c in cents.values()) > 0


def test_dead_letter_queue_holds_the_invalid_events_with_typed_reasons(produced: dict[str, Any]) -> None:
    counts = produced["truth"]["counts"]["total"]
    letters = [DeadLetter.from_json(m.value()) for m in produced["dlq"]]
    assert len(letters) == counts["invalid"] > 0
    assert Counter(d.reason for d in letters) == {r: n for r, n in counts["invalid_by_reason"].items() if n}
    assert {d.source for d in letters} == {"generator"}
    assert {d.payload["messageId"] for d in letters} == {e["event_id"] for e, kind in produced["expected"] if kind}

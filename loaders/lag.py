"""Per-partition stored offsets and high watermarks of the loader, for dashboards and Dagster metadata."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import TopicPartition

from analytics_core.clients import kafka_consumer
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from loaders.offsets import NO_OFFSET, PartitionLag
from loaders.sinks import open_sink

__all__ = ["PartitionLag", "loader_lag"]


def loader_lag(settings: Settings, timeout: float = 10.0, bigquery_client: Any = None) -> list[PartitionLag]:
    """Stored offset (the warehouse's, the source of truth) and high watermark of each partition.

    `bigquery_client` replaces the client built from the settings (tests).
    """
    topic = Topics.from_settings(settings).events
    sink = open_sink(settings, topic, bigquery_client)  # the loader's warehouse, DuckLake or BigQuery
    try:
        stored = sink.stored_offsets()
    finally:
        sink.close()
    client = kafka_consumer(settings, f"loader.lag.{uuid.uuid4().hex}")  # never joins: only metadata calls
    try:
        meta = client.list_topics(topic, timeout=timeout).topics[topic]
        out = []
        for part in sorted(meta.partitions):
            _, high = client.get_watermark_offsets(TopicPartition(topic, part), timeout=timeout)
            out.append(PartitionLag(part, stored.get(part, NO_OFFSET), int(high)))
        return out
    finally:
        client.close()

"""Factories for Kafka and Redis clients, configured from Settings (never built at import time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from analytics_core.settings import Settings

# Durable by default: the collector and loaders must not lose an acknowledged event.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    # librdkafka pauses fetching for 1 s when the local queue fills; that, not CPU, capped raw
    # consume at a third of its rate (bench/bench_kafka.py).
    "fetch.queue.backoff.ms": 10,
}


def kafka_producer(settings: Settings, overrides: Mapping[str, Any] | None = None) -> Producer:
    """An idempotent, acks=all producer; `overrides` are librdkafka properties (e.g. {"linger.ms": 50})."""
    return Producer({"bootstrap.servers": settings.kafka_bootstrap, **PRODUCER_DEFAULTS, **(overrides or {})})


def kafka_consumer(settings: Settings, group_id: str, overrides: Mapping[str, Any] | None = None) -> Consumer:
    """A consumer with auto-commit off: callers commit or store offsets after their write."""
    conf = {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group_id, **CONSUMER_DEFAULTS}
    return Consumer({**conf, **(overrides or {})})


def kafka_admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def redis_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def redis_async_client(settings: Settings, **kwargs: Any) -> redis.asyncio.Redis:
    """A redis.asyncio client: connections belong to the event loop that first uses them."""
    return redis.asyncio.Redis.from_url(settings.redis_url, **kwargs)

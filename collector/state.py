"""Everything a collector process holds: clients built once at start, shared by every request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from analytics_core.clients import kafka_producer, redis_client
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics
from collector.dedupe import Deduplicator
from collector.metrics import CollectorMetrics
from collector.producer import BatchProducer
from collector.ratelimit import RateLimiter
from collector.registration import register_schemas
from tenants import KeyCache, TenantStore

REDIS_BACKOFF_S = 5.0  # after a Redis failure, skip Redis this long instead of paying a timeout per request


@dataclass
class CollectorState:
    settings: Settings
    topics: Topics
    serialize: EventSerializer
    keys: KeyCache
    producer: BatchProducer
    redis: redis.Redis
    dedupe: Deduplicator
    limiter: RateLimiter
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)
    redis_down_until: float = 0.0

    @classmethod
    def build(cls, settings: Settings) -> CollectorState:
        client = redis_client(settings, socket_connect_timeout=0.25, socket_timeout=0.5)
        timeout = settings.collector_kafka_timeout_s
        producer = kafka_producer(settings, {"message.timeout.ms": int(timeout * 1000)})
        return cls(
            settings=settings,
            topics=Topics.from_settings(settings),
            serialize=EventSerializer(register_schemas(settings)[EVENTS_SUBJECT]),
            keys=KeyCache(TenantStore(settings.tenants_db)),
            producer=BatchProducer(producer, timeout),
            redis=client,
            dedupe=Deduplicator(client, settings.collector_dedupe_window_s),
            limiter=RateLimiter(client),
        )

    def redis_usable(self) -> bool:
        return time.monotonic() >= self.redis_down_until

    def redis_failed(self, feature: str, _exc: Any) -> None:
        self.metrics.redis_unavailable.labels(feature).inc()
        self.redis_down_until = time.monotonic() + REDIS_BACKOFF_S

    def close(self) -> None:
        self.producer.close()
        self.redis.close()

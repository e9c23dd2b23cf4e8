"""Everything a collector process holds: clients built once at start, shared by every request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from analytics_core.bounds import Bounds
from analytics_core.clients import kafka_producer, redis_async_client
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics
from collector.dedupe import Deduplicator
from collector.metrics import CollectorMetrics
from collector.producer import BatchProducer
from collector.ratelimit import RateLimiter
from collector.redisconn import connection_class
from collector.registration import register_schemas
from tenants import KeyCache, TenantStore
from tenants.throttle import AuthThrottle

# linger.ms of the collector's producer, chosen by measurement (docs/BENCHMARKS.md, "linger.ms"): at
# 20 ms the broker and librdkafka spend less of the two shared cores per record than at 0/1/5 ms, which
# gave the highest ingest rate and the lowest p99 under load; idle, it adds at most 20 ms to an answer.
COLLECTOR_LINGER_MS = 20
REDIS_BACKOFF_S = 5.0  # after a Redis failure, skip Redis this long instead of paying a timeout per request


@dataclass
class CollectorState:
    settings: Settings
    topics: Topics
    serialize: EventSerializer
    keys: KeyCache
    producer: BatchProducer
    redis: redis.asyncio.Redis
    dedupe: Deduplicator
    limiter: RateLimiter
    auth_throttle: AuthThrottle
    bounds: Bounds
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)
    redis_down_until: float = 0.0

    @classmethod
    def build(cls, settings: Settings) -> CollectorState:
        client = redis_async_client(
            settings, socket_connect_timeout=0.25, socket_timeout=0.5, connection_class=connection_class()
        )
        timeout = settings.collector_kafka_timeout_s
        producer = kafka_producer(
            settings, {"message.timeout.ms": int(timeout * 1000), "linger.ms": COLLECTOR_LINGER_MS}
        )
        return cls(
            settings=settings,
            topics=Topics.from_settings(settings),
            serialize=EventSerializer(register_schemas(settings)[EVENTS_SUBJECT]),
            keys=KeyCache(TenantStore(settings.tenants_db)),
            producer=BatchProducer(producer, timeout),
            redis=client,
            dedupe=Deduplicator(client, settings.collector_dedupe_window_s),
            limiter=RateLimiter(client),
            auth_throttle=AuthThrottle.from_settings(settings, "collector", client),
            bounds=Bounds.from_settings(settings),
        )

    def redis_usable(self) -> bool:
        return time.monotonic() >= self.redis_down_until

    def redis_failed(self, feature: str, _exc: Any) -> None:
        self.metrics.redis_unavailable.labels(feature).inc()
        self.redis_down_until = time.monotonic() + REDIS_BACKOFF_S

    async def close(self) -> None:
        self.producer.close()
        await self.redis.aclose()

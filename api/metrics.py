"""Prometheus metrics of the query API, plus the realtime consumer's totals and the drift, read from Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from analytics_core.realtime_keys import RealtimeKeys


class RealtimeCollector(Collector):
    """At each scrape: the realtime consumer's running totals and the last drift per tenant and metric."""

    def __init__(self, client: redis.Redis | None, keys: RealtimeKeys) -> None:
        self._redis = client
        self._keys = keys

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("api_realtime_redis_up", "1 when the realtime layer's Redis answered this scrape.")
        if self._redis is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            stats: dict[bytes, bytes] = self._redis.hgetall(self._keys.stats)  # type: ignore[assignment]
            drift: dict[bytes, bytes] = self._redis.hgetall(self._keys.drift)  # type: ignore[assignment]
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        consumer = GaugeMetricFamily(
            "realtime_consumer_total", "Running totals of the realtime consumer, by kind.", labels=["kind"]
        )
        for kind, value in sorted(stats.items()):
            consumer.add_metric([kind.decode()], float(value))
        yield consumer
        gauge = GaugeMetricFamily(
            "realtime_drift",
            "Realtime minus warehouse over closed minutes at the last reconciliation (0 for additive metrics).",
            labels=["tenant", "metric"],
        )
        for name, value in sorted(drift.items()):
            tenant, _, metric = name.decode().partition("|")
            gauge.add_metric([tenant, metric], float(value))
        yield gauge


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "api_requests", "Answered requests, by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.cache_hits = Counter(
            "api_cache_hits", "Queries, funnels and experiment results answered from the Redis cache.", registry=r
        )
        self.cache_misses = Counter(
            "api_cache_misses",
            "Queries, funnels and experiment results computed (not in the cache, or its entry stale or not"
            " verifiable).",
            registry=r,
        )
        self.cache_stale = Counter(
            "api_cache_stale",
            "Cached answers refused (and computed again, counted as misses too): the warehouse data they were"
            " computed from changed since, or their watermarks moved within their range.",
            registry=r,
        )
        self.query_seconds = Histogram(
            "api_query_seconds",
            "Time to answer a query, by where the answer came from (cache, or the first source of the plan).",
            ["source"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.realtime_missing = Counter(
            "api_realtime_unavailable", "Queries answered without the realtime layer (Redis down).", registry=r
        )
        self.dashboard_hits = Counter(
            "api_dashboard_cache_hits",
            "Dashboard loads answered from the Redis cache, by dashboard.",
            ["dashboard"],
            registry=r,
        )
        self.dashboard_misses = Counter(
            "api_dashboard_cache_misses",
            "Dashboard loads computed (no entry, or its entry expired, stale or not verifiable), by dashboard.",
            ["dashboard"],
            registry=r,
        )
        self.dashboard_stale = Counter(
            "api_dashboard_cache_stale",
            "Cached dashboard answers refused because a table or watermark they read changed since (counted as misses"
            " too), by dashboard.",
            ["dashboard"],
            registry=r,
        )
        self.dashboard_seconds = Histogram(
            "api_dashboard_seconds",
            "Time to answer a dashboard load, by dashboard and cache (hit, miss).",
            ["dashboard", "cache"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

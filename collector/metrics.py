"""Prometheus metrics of the collector; one registry per app so tests can build several apps."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class CollectorMetrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter("collector_events_received", "Messages received in accepted requests.", registry=r)
        self.accepted = Counter("collector_events_accepted", "Events produced to tracking.events.", registry=r)
        self.dead_lettered = Counter(
            "collector_events_dead_lettered", "Events produced to tracking.events_dlq.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "collector_events_duplicate", "Resent events dropped by the dedupe window.", registry=r
        )
        self.bots = Counter("collector_events_bot", "Events flagged as bot traffic (kept, flagged).", registry=r)
        self.rejected = Counter(
            "collector_requests_rejected", "Requests answered with an error, by HTTP status.", ["status"], registry=r
        )
        self.redis_unavailable = Counter(
            "collector_redis_unavailable",
            "Requests processed without Redis (no rate limit, no dedupe), by feature.",
            ["feature"],
            registry=r,
        )
        self.kafka_latency = Histogram(
            "collector_kafka_ack_seconds",
            "Time from producing a batch to Kafka's acknowledgement of all of it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

"""Every Kafka topic and consumer group name, in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from analytics_core.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

EVENTS = "tracking.events"
EVENTS_DLQ = "tracking.events_dlq"
# Compacted: one record per subject and version, like Confluent's _schemas topic.
SCHEMAS = "registry.schemas"

LOADER_GROUP = "loaders.warehouse"
REALTIME_GROUP = "realtime.counters"

EVENTS_SUBJECT = f"{EVENTS}-value"


@dataclass(frozen=True)
class Topics:
    """Topic names with the configured prefix applied."""

    events: str
    events_dlq: str
    schemas: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p = settings.topic_prefix
        return cls(events=p + EVENTS, events_dlq=p + EVENTS_DLQ, schemas=p + SCHEMAS)

    def all(self) -> tuple[str, ...]:
        return (self.events, self.events_dlq, self.schemas)


def topic_configs(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Partition count and topic config of every topic the pipeline needs."""
    t = Topics.from_settings(settings)
    return {
        t.events: (settings.kafka_partitions, {}),
        t.events_dlq: (settings.kafka_partitions, {}),
        # One partition keeps schema ids in order; compaction keeps the latest record per key.
        t.schemas: (1, {"cleanup.policy": "compact"}),
    }


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics and wait until each partition has a leader; return the names created."""
    from confluent_kafka.admin import NewTopic

    from analytics_core.clients import kafka_admin

    admin = kafka_admin(settings)
    configs = topic_configs(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=parts, replication_factor=settings.kafka_replication_factor, config=config)
        for name, (parts, config) in configs.items()
        if name not in existing
    ]
    created = []
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                future.result()
                created.append(name)
            except Exception as exc:
                # Another process may have created it between our listing and our request.
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    _wait_for_leaders(admin, list(configs), timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    # A new topic answers NOT_LEADER for a moment after creation; callers should not see that.
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        pending = [n for n in names if n not in topics or any(p.leader < 0 for p in topics[n].partitions.values())]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without a partition leader after {timeout:.0f} s: {', '.join(pending)}")
        time.sleep(0.1)

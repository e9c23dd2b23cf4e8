"""Where generated records go: nowhere (null), a JSON-lines file, memory, or Kafka in the collector's place."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from analytics_core.clients import kafka_producer
from analytics_core.deadletter import DeadLetter
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from generator.block import INVALID_REASONS
from generator.segment import to_segment

# What the collector would say about each invalid shape, for the dead letter's `detail`.
INVALID_DETAILS = {
    "missing_event_name": "event: is required for a track message",
    "negative_revenue": "revenue: must be >= 0 on a purchase",
    "non_numeric_revenue": "revenue: must be a number",
    "future_timestamp": "timestamp: more than 24 h after receivedAt",
    "missing_user": "userId/anonymousId: one of them is required",
}


class Sink(Protocol):
    """Receives records in delivery order; `invalid` maps positions in `events` to their invalid kind."""

    name: str

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None: ...

    def close(self) -> dict[str, int]:
        """Flush, release resources and return delivery statuses with their counts."""
        ...


class NullSink:
    """Drops everything: generation and ground truth only (tests, benchmarks)."""

    name = "null"

    def __init__(self) -> None:
        self.records = 0

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        self.records += len(events)

    def close(self) -> dict[str, int]:
        return {"dropped": self.records}


class MemorySink:
    """Keeps (event, invalid kind or None) pairs, for tests and notebooks."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[tuple[dict[str, Any], str | None]] = []

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        self.records.extend((e, invalid.get(i)) for i, e in enumerate(events))

    def close(self) -> dict[str, int]:
        return {"kept": len(self.records)}


class FileSink:
    """One JSON object per line: {"event": canonical event, "invalid": kind or null}."""

    name = "file"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("wb")
        self.records = 0

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        self._file.write(
            b"".join(orjson.dumps({"event": e, "invalid": invalid.get(i)}) + b"\n" for i, e in enumerate(events))
        )
        self.records += len(events)

    def close(self) -> dict[str, int]:
        self._file.close()
        return {"written": self.records}


def dead_letter(event: dict[str, Any], kind: str) -> DeadLetter:
    """The DLQ record the collector would write for an invalid event (payload: the message as sent)."""
    return DeadLetter(
        reason=INVALID_REASONS[kind],
        detail=INVALID_DETAILS[kind],
        tenant_id=event["tenant_id"],
        received_at=event["received_at"],
        payload=to_segment(event, client_clock=True),
        source="generator",
    )


class KafkaSink:
    """Stands in for the collector: valid events to tracking.events, invalid ones to tracking.events_dlq."""

    name = "kafka"

    def __init__(self, settings: Settings, flush_timeout: float = 60.0) -> None:
        self._topics = Topics.from_settings(settings)
        ensure_topics(settings)
        self._serialize = EventSerializer(register_event_schema(settings))
        self._producer = kafka_producer(settings)
        self._flush_timeout = flush_timeout
        self.statuses: Counter[str] = Counter()

    def _on_events(self, err: Any, _msg: Any) -> None:
        self.statuses["failed" if err else "delivered"] += 1

    def _on_dlq(self, err: Any, _msg: Any) -> None:
        self.statuses["dlq_failed" if err else "dlq_delivered"] += 1

    def _produce(self, topic: str, key: str, value: bytes, callback: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=callback)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        for i, event in enumerate(events):
            kind = invalid.get(i)
            if kind is None:
                key = f"{event['tenant_id']}:{event['user_id'] or event['anonymous_id']}"
                self._produce(self._topics.events, key, self._serialize(event), self._on_events)
            else:
                user = event["user_id"] or event["anonymous_id"]
                key = f"{event['tenant_id']}:{user}" if user else event["tenant_id"]
                self._produce(self._topics.events_dlq, key, dead_letter(event, kind).to_json(), self._on_dlq)
        self._producer.poll(0)

    def close(self) -> dict[str, int]:
        remaining = self._producer.flush(self._flush_timeout)
        if remaining:
            self.statuses["undelivered"] += remaining
        return dict(self.statuses)

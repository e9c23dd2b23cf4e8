"""Schema registry access: a Confluent-compatible registry by URL, or schemas kept in a compacted topic.

The topic store keeps one record per subject version, keyed by {"subject", "version"} as
Confluent's registry does in `_schemas`; ids are global and an identical schema reuses its id.
It assumes one writer at a time for new schemas: concurrent registrations of the same schema
write the same record, which compaction folds into one.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.serde import proto_schema_text
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics

SCHEMA_TYPE = "PROTOBUF"
_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema_id: int
    schema: str
    schema_type: str = SCHEMA_TYPE


class SchemaStore(Protocol):
    def register(self, subject: str, schema: str, schema_type: str = SCHEMA_TYPE) -> int: ...

    def ids_for(self, subject: str) -> set[int]: ...


class TopicSchemaStore:
    """Schemas stored in the registry topic; reads the whole topic on each refresh (it is small)."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self._settings = settings
        self._topic = Topics.from_settings(settings).schemas
        self._timeout = timeout
        self.versions: dict[str, list[SchemaVersion]] = {}

    def refresh(self) -> None:
        consumer = kafka_consumer(self._settings, f"registry.reader.{uuid.uuid4().hex}")
        try:
            high = self._high_watermark(consumer)
            versions: dict[str, dict[int, SchemaVersion]] = {}
            if high > 0:
                consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
                position = 0
                while position < high:
                    msg = consumer.poll(self._timeout)
                    if msg is None:
                        raise TimeoutError(f"schema topic {self._topic} not readable to offset {high}")
                    if msg.error():
                        raise RuntimeError(f"reading {self._topic}: {msg.error()}")
                    position = (msg.offset() or 0) + 1
                    _apply_record(versions, msg.key(), msg.value())
            self.versions = {s: [vs[k] for k in sorted(vs)] for s, vs in versions.items()}
        finally:
            consumer.close()

    def _high_watermark(self, consumer: Consumer) -> int:
        # Right after topic creation the broker may answer NOT_LEADER for a moment although
        # metadata already names a leader; that is worth waiting out, not failing on.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return int(consumer.get_watermark_offsets(TopicPartition(self._topic, 0), timeout=self._timeout)[1])
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or error.code() not in _NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def lookup(self, schema_id: int) -> SchemaVersion | None:
        for versions in self.versions.values():
            for v in versions:
                if v.schema_id == schema_id:
                    return v
        return None

    def ids_for(self, subject: str) -> set[int]:
        self.refresh()
        return {v.schema_id for v in self.versions.get(subject, [])}

    def register(self, subject: str, schema: str, schema_type: str = SCHEMA_TYPE) -> int:
        """Id of `schema` under `subject`, adding a new version when it is not there yet."""
        self.refresh()
        existing = self.versions.get(subject, [])
        for v in existing:
            if v.schema == schema and v.schema_type == schema_type:
                return v.schema_id
        all_versions = [v for vs in self.versions.values() for v in vs]
        same = next((v for v in all_versions if v.schema == schema and v.schema_type == schema_type), None)
        schema_id = same.schema_id if same else max((v.schema_id for v in all_versions), default=0) + 1
        version = max((v.version for v in existing), default=0) + 1
        record = {"subject": subject, "version": version, "id": schema_id, "schema": schema, "schemaType": schema_type}
        producer = kafka_producer(self._settings)
        producer.produce(
            self._topic, key=json.dumps({"subject": subject, "version": version}), value=json.dumps(record)
        )
        if producer.flush(self._timeout) != 0:
            raise TimeoutError(f"schema registration for {subject} not acknowledged by Kafka")
        self.versions.setdefault(subject, []).append(SchemaVersion(subject, version, schema_id, schema, schema_type))
        return schema_id


def _apply_record(versions: dict[str, dict[int, SchemaVersion]], key: bytes | None, value: bytes | None) -> None:
    k = json.loads(key or b"{}")
    if value is None:  # tombstone: a deleted version
        versions.get(k.get("subject", ""), {}).pop(k.get("version", -1), None)
        return
    v = json.loads(value)
    versions.setdefault(v["subject"], {})[v["version"]] = SchemaVersion(
        v["subject"], v["version"], v["id"], v["schema"], v.get("schemaType", SCHEMA_TYPE)
    )


class UrlSchemaStore:
    """A Confluent Schema Registry (or compatible) reached over its REST API."""

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})

    def register(self, subject: str, schema: str, schema_type: str = SCHEMA_TYPE) -> int:
        from confluent_kafka.schema_registry import Schema

        return int(self._client.register_schema(subject, Schema(schema, schema_type)))

    def ids_for(self, subject: str) -> set[int]:
        ids = (self._client.get_version(subject, v).schema_id for v in self._client.get_versions(subject))
        return {i for i in ids if i is not None}


def schema_store(settings: Settings) -> SchemaStore:
    if settings.schema_registry_url:
        return UrlSchemaStore(settings.schema_registry_url)
    return TopicSchemaStore(settings)


def register_event_schema(settings: Settings) -> int:
    """Register the canonical event schema under tracking.events-value and return its id."""
    return schema_store(settings).register(EVENTS_SUBJECT, proto_schema_text())

"""Schemas kept in the compacted registry topic, read incrementally by one long-lived consumer.

Records follow Confluent's `_schemas` layout: a schema version is keyed {"subject", "version"}
(the key this project has always written, so compaction keeps folding old and new records) and
its value carries "deleted" for a soft delete; a compatibility level is keyed
{"keytype": "CONFIG", "subject": name or null} with value {"compatibilityLevel"}. A null value
(tombstone) removes a version permanently or a level. Ids are global; an identical schema reuses
its id. It assumes one writer at a time for new schemas.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from analytics_core.clients import kafka_consumer, kafka_producer
from analytics_core.settings import Settings
from analytics_core.topics import Topics

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
    deleted: bool = False


class TopicSchemaStore:
    """Schemas stored in the registry topic; each refresh reads only the records added since the last."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self._settings = settings
        self._topic = Topics.from_settings(settings).schemas
        self._timeout = timeout
        # Every version, soft-deleted ones included (flagged), in version order per subject.
        self.versions: dict[str, list[SchemaVersion]] = {}
        # Compatibility levels by subject; the key None holds the global level.
        self.configs: dict[str | None, str] = {}
        self._records: dict[str, dict[int, SchemaVersion]] = {}
        self._consumer: Consumer | None = None
        # Watermarks come from a second, idle client: on the reader's connection a ListOffsets
        # request queues behind its long-polling fetch and every refresh would wait ~500 ms.
        self._watermarks: Consumer | None = None
        self._producer: Producer | None = None
        self._position = 0
        # The server calls in from several threads; a librdkafka consumer must not poll concurrently.
        self.lock = threading.RLock()

    def refresh(self) -> None:
        """Read the records written since the last refresh (the whole topic the first time)."""
        with self.lock:
            if self._consumer is None or self._watermarks is None:
                group = f"registry.reader.{uuid.uuid4().hex}"  # never joined: partitions are assigned
                self._consumer = kafka_consumer(self._settings, group)
                self._consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
                self._watermarks = kafka_consumer(self._settings, group)
            high = self._high_watermark(self._watermarks)
            while self._position < high:
                msg = self._consumer.poll(self._timeout)
                if msg is None:
                    raise TimeoutError(f"schema topic {self._topic} not readable to offset {high}")
                if msg.error():
                    raise RuntimeError(f"reading {self._topic}: {msg.error()}")
                self._position = (msg.offset() or 0) + 1
                self._apply(msg.key(), msg.value())

    def close(self) -> None:
        with self.lock:
            for client in (self._consumer, self._watermarks):
                if client is not None:
                    client.close()
            self._consumer = self._watermarks = None
            if self._producer is not None:
                self._producer.flush(self._timeout)
                # Dropped, not kept: a live producer keeps reconnecting to a broker that may be gone.
                self._producer = None
            self._position = 0
            self._records, self.configs, self.versions = {}, {}, {}

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
        """The first version holding `schema_id`; soft-deleted versions count (readers still need them)."""
        for versions in self.versions.values():
            for v in versions:
                if v.schema_id == schema_id:
                    return v
        return None

    def ids_for(self, subject: str) -> set[int]:
        self.refresh()
        return {v.schema_id for v in self.versions.get(subject, []) if not v.deleted}

    def register(self, subject: str, schema: str, schema_type: str = SCHEMA_TYPE) -> int:
        """Id of `schema` under `subject`, adding a new version when it is not there yet."""
        with self.lock:
            self.refresh()
            existing = self.versions.get(subject, [])
            for v in existing:
                if v.schema == schema and v.schema_type == schema_type and not v.deleted:
                    return v.schema_id
            all_versions = [v for vs in self.versions.values() for v in vs]
            same = next((v for v in all_versions if v.schema == schema and v.schema_type == schema_type), None)
            schema_id = same.schema_id if same else max((v.schema_id for v in all_versions), default=0) + 1
            # Soft-deleted version numbers are never reused, as in Confluent's registry.
            version = max((v.version for v in existing), default=0) + 1
            self._write_version(SchemaVersion(subject, version, schema_id, schema, schema_type))
            return schema_id

    def delete_version(self, subject: str, version: int, permanent: bool = False) -> None:
        """Soft-delete a version (kept, flagged deleted), or remove it for good with a tombstone."""
        with self.lock:
            found = next((v for v in self.versions.get(subject, []) if v.version == version), None)
            if found is None:
                return
            if permanent:
                self._produce({"subject": subject, "version": version}, None)
            else:
                self._write_version(replace(found, deleted=True))

    def set_compatibility(self, subject: str | None, level: str | None) -> None:
        """Store a compatibility level for `subject` (None: the global default); level None removes it."""
        with self.lock:
            key = {"keytype": "CONFIG", "subject": subject, "magic": 0}
            self._produce(key, None if level is None else {"compatibilityLevel": level})

    def _write_version(self, v: SchemaVersion) -> None:
        record = {
            "subject": v.subject,
            "version": v.version,
            "id": v.schema_id,
            "schema": v.schema,
            "schemaType": v.schema_type,
            "deleted": v.deleted,
        }
        self._produce({"subject": v.subject, "version": v.version}, record)

    def _produce(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        if self._producer is None:
            self._producer = kafka_producer(self._settings)
        key_bytes, value_bytes = json.dumps(key).encode(), None if value is None else json.dumps(value).encode()
        self._producer.produce(self._topic, key=key_bytes, value=value_bytes)
        if self._producer.flush(self._timeout) != 0:
            raise TimeoutError(f"schema registry write to {self._topic} not acknowledged by Kafka")
        # Read-your-writes without waiting for the consumer; re-reading the record later is harmless.
        self._apply(key_bytes, value_bytes)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        k = json.loads(key or b"{}")
        keytype = k.get("keytype", "SCHEMA")
        if keytype == "CONFIG":
            if value is None:
                self.configs.pop(k.get("subject"), None)
            else:
                self.configs[k.get("subject")] = json.loads(value)["compatibilityLevel"]
            return
        if keytype != "SCHEMA":  # NOOP, MODE and the like: nothing this store serves
            return
        subject = k.get("subject", "")
        if value is None:  # tombstone: a permanently deleted version
            self._records.get(subject, {}).pop(k.get("version", -1), None)
        else:
            v = json.loads(value)
            self._records.setdefault(subject, {})[v["version"]] = SchemaVersion(
                v["subject"],
                v["version"],
                v["id"],
                v["schema"],
                v.get("schemaType", SCHEMA_TYPE),
                v.get("deleted", False),
            )
        self.versions = {s: [vs[n] for n in sorted(vs)] for s, vs in self._records.items() if vs}

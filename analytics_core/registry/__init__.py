"""Schema registry access: a Confluent-compatible registry by URL, or schemas kept in a compacted topic.

The topic store (analytics_core.schema_topic) keeps one record per subject version, keyed by
{"subject", "version"} as Confluent's registry does in `_schemas`; ids are global and an identical
schema reuses its id. The project's own registry server (schema_registry/) serves that topic over
Confluent's REST API with the registry logic kept here, shared with the collector's in-process
registration: `service` (subjects, versions, ids, levels, Confluent's error codes), `compatibility`
(validation and levels) over the per-format checks `proto_compat` and `json_compat`.
"""

from __future__ import annotations

from typing import Protocol

from analytics_core.schema_topic import SCHEMA_TYPE, SchemaVersion, TopicSchemaStore
from analytics_core.serde import proto_schema_text
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT

__all__ = [
    "SCHEMA_TYPE",
    "SchemaStore",
    "SchemaVersion",
    "TopicSchemaStore",
    "UrlSchemaStore",
    "register_event_schema",
    "schema_store",
]


class SchemaStore(Protocol):
    def register(self, subject: str, schema: str, schema_type: str = SCHEMA_TYPE) -> int: ...

    def ids_for(self, subject: str) -> set[int]: ...


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
    store = schema_store(settings)
    try:
        return store.register(EVENTS_SUBJECT, proto_schema_text())
    finally:
        if isinstance(store, TopicSchemaStore):
            store.close()

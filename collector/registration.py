"""At start, the collector registers the event schema and each per-event-type JSON Schema file version.

A file version that breaks compatibility with what the registry already holds stops the start
with the registry's reason, rather than letting events be validated by a schema nobody agreed to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from analytics_core.registry import TopicSchemaStore, UrlSchemaStore
from analytics_core.serde import proto_schema_text
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT
from collector.event_schemas import SCHEMAS_DIR, schema_files

Register = Callable[[str, str, str], int]


class SchemaRegistrationError(RuntimeError):
    """A schema the registry refused (incompatible or invalid); the message says which and why."""


def properties_subject(name: str) -> str:
    """Subject of an event type's `properties` schema, e.g. tracking.events.properties.order_completed."""
    return f"tracking.events.properties.{name}"


def _registrar(settings: Settings) -> tuple[Register, Callable[[], None]]:
    if settings.schema_registry_url:
        url_store = UrlSchemaStore(settings.schema_registry_url)
        return url_store.register, lambda: None
    from analytics_core.registry.service import Registry

    store = TopicSchemaStore(settings)
    return Registry(store).register, store.close


def register_schemas(settings: Settings, directory: Path | str = SCHEMAS_DIR) -> dict[str, int]:
    """{subject: id} of the event schema and the newest version of each properties schema."""
    register, close = _registrar(settings)
    ids: dict[str, int] = {}
    try:
        ids[EVENTS_SUBJECT] = _checked(register, EVENTS_SUBJECT, proto_schema_text(), "PROTOBUF")
        # Oldest version first, so the registry holds the same history as the repository.
        for file in schema_files(directory):
            subject = properties_subject(file.name)
            ids[subject] = _checked(register, subject, json.dumps(file.schema, sort_keys=True), "JSON")
    finally:
        close()
    return ids


def _checked(register: Register, subject: str, schema: str, schema_type: str) -> int:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from analytics_core.registry.service import RegistryError

    try:
        return register(subject, schema, schema_type)
    except RegistryError as exc:  # the built-in registry
        reason, status = str(exc), exc.status
    except SchemaRegistryError as exc:  # a registry reached by URL
        reason, status = exc.error_message, exc.http_status_code
    if status not in (409, 422):
        raise RuntimeError(f"schema registry failed on {subject} (HTTP {status}): {reason}")
    raise SchemaRegistrationError(f"schema registry refused {subject} ({schema_type}): {reason}")

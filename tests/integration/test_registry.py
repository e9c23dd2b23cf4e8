"""Schemas kept in the compacted registry topic: ids stable, versions appended, state survives a restart."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource

from analytics_core.clients import kafka_admin
from analytics_core.registry import TopicSchemaStore, register_event_schema
from analytics_core.serde import proto_schema_text
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics

pytestmark = pytest.mark.integration


def test_registry_topic_is_compacted(kafka_settings: Settings) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, Topics.from_settings(kafka_settings).schemas)
    admin = kafka_admin(kafka_settings)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_register_is_idempotent_and_versions_accumulate(kafka_settings: Settings) -> None:
    first = register_event_schema(kafka_settings)
    assert register_event_schema(kafka_settings) == first

    store = TopicSchemaStore(kafka_settings)
    changed = proto_schema_text().replace("}\n", "  optional string campaign = 99;\n}\n")
    second = store.register(EVENTS_SUBJECT, changed)
    assert second != first
    again_elsewhere = store.register("other.topic-value", changed)
    assert again_elsewhere == second, "an identical schema keeps its global id under another subject"

    fresh = TopicSchemaStore(kafka_settings)  # a new process reading the topic from the start
    assert fresh.ids_for(EVENTS_SUBJECT) == {first, second}
    versions = fresh.versions[EVENTS_SUBJECT]
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].schema == proto_schema_text()
    assert fresh.lookup(second) is not None

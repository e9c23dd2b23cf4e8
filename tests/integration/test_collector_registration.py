"""The collector registers its schemas at start; an incompatible change to a schema file stops it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics_core.registry import TopicSchemaStore
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT
from collector.event_schemas import SCHEMAS_DIR, schema_files
from collector.registration import SchemaRegistrationError, properties_subject, register_schemas

pytestmark = pytest.mark.integration


def test_every_schema_file_is_registered_once(own_topics: Settings) -> None:
    ids = register_schemas(own_topics)
    assert register_schemas(own_topics) == ids  # a restart registers nothing new
    names = {f.name for f in schema_files(SCHEMAS_DIR)}
    assert set(ids) == {EVENTS_SUBJECT} | {properties_subject(n) for n in names}
    store = TopicSchemaStore(own_topics)
    store.refresh()
    purchase = store.versions[properties_subject("purchase")]
    assert [v.schema_type for v in purchase] == ["JSON"]
    assert json.loads(purchase[0].schema)["properties"]["revenue"]
    store.close()


def test_an_incompatible_new_version_is_refused(own_topics: Settings, tmp_path: Path) -> None:
    v1 = {"type": "object", "properties": {"revenue": {"type": "number"}}}
    v2 = {**v1, "required": ["coupon"], "properties": {**v1["properties"], "coupon": {"type": "string"}}}
    (tmp_path / "refund.v1.json").write_text(json.dumps(v1))
    register_schemas(own_topics, tmp_path)
    (tmp_path / "refund.v2.json").write_text(json.dumps(v2))
    with pytest.raises(SchemaRegistrationError, match=r"tracking\.events\.properties\.refund.*coupon"):
        register_schemas(own_topics, tmp_path)

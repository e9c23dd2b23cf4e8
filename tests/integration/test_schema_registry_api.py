"""The registry server against a real broker, driven by Confluent's SchemaRegistryClient and plain REST."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from analytics_core.registry import UrlSchemaStore
from analytics_core.serde import proto_schema_text
from analytics_core.settings import Settings
from schema_registry import create_app
from tests.servers import serve

pytestmark = pytest.mark.integration

EVENT = proto_schema_text()
EVOLVED = EVENT.replace("  bool is_bot = 22;\n", "  bool is_bot = 22;\n  optional string campaign = 99;\n")
BROKEN = EVOLVED.replace("optional double revenue", "optional string revenue")
SUBJECT = "api.tracking.events-value"


@pytest.fixture(scope="module")
def registry_url(kafka_settings: Settings) -> Iterator[str]:
    with serve(create_app(kafka_settings)) as url:
        yield url


def test_client_register_evolve_and_refuse(registry_url: str, kafka_settings: Settings) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    first = client.register_schema(SUBJECT, Schema(EVENT, "PROTOBUF"))
    assert SchemaRegistryClient({"url": registry_url}).register_schema(SUBJECT, Schema(EVENT, "PROTOBUF")) == first
    fetched = SchemaRegistryClient({"url": registry_url}).get_schema(first)
    assert (fetched.schema_str, fetched.schema_type) == (EVENT, "PROTOBUF")
    assert client.get_latest_version(SUBJECT).version == 1

    second = client.register_schema(SUBJECT, Schema(EVOLVED, "PROTOBUF"))
    assert second != first
    client.clear_latest_caches()  # the client caches "latest" itself
    latest = client.get_latest_version(SUBJECT)
    assert (latest.version, latest.schema_id, latest.schema.schema_str) == (2, second, EVOLVED)
    assert client.get_versions(SUBJECT) == [1, 2]
    assert client.lookup_schema(SUBJECT, Schema(EVENT, "PROTOBUF")).version == 1

    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(SUBJECT, Schema(BROKEN, "PROTOBUF"))
    assert refused.value.http_status_code == 409
    assert refused.value.error_code == 409
    assert "field 15 'revenue': type changed from double to string" in refused.value.error_message

    assert client.test_compatibility(SUBJECT, Schema(EVOLVED, "PROTOBUF")) is True
    assert client.test_compatibility(SUBJECT, Schema(BROKEN, "PROTOBUF")) is False
    assert client.test_compatibility(SUBJECT, Schema(BROKEN, "PROTOBUF"), version=1) is False

    assert client.get_compatibility() == "BACKWARD"
    client.set_compatibility(SUBJECT, "NONE")
    assert client.get_compatibility(SUBJECT) == "NONE"
    third = client.register_schema(SUBJECT, Schema(BROKEN, "PROTOBUF"))
    assert client.get_versions(SUBJECT) == [1, 2, 3]

    # A second instance reads everything back from the topic: versions, ids and the subject's level.
    with serve(create_app(kafka_settings)) as url:
        other = SchemaRegistryClient({"url": url})
        assert other.get_versions(SUBJECT) == [1, 2, 3]
        assert [other.get_version(SUBJECT, v).schema_id for v in (1, 2, 3)] == [first, second, third]
        assert other.get_schema(second).schema_str == EVOLVED
        assert other.get_compatibility(SUBJECT) == "NONE"
        assert [(v.subject, v.version) for v in other.get_schema_versions(third)] == [(SUBJECT, 3)]


def test_rest_errors_and_soft_delete(registry_url: str) -> None:
    ct = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    with httpx.Client(base_url=registry_url, headers=ct) as http:
        missing = http.get("/subjects/nope/versions")
        assert (missing.status_code, missing.json()["error_code"]) == (404, 40401)
        assert missing.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
        assert http.get("/schemas/ids/999999").json()["error_code"] == 40403
        bad = http.post("/subjects/json-value/versions", json={"schema": "syntax = nope", "schemaType": "PROTOBUF"})
        assert (bad.status_code, bad.json()["error_code"]) == (422, 42201)
        assert "schema.proto" in bad.json()["message"]
        level = http.put("/config/json-value", json={"compatibility": "SIDEWAYS"})
        assert (level.status_code, level.json()["error_code"]) == (422, 42203)

        v1 = {"type": "object", "properties": {"sku": {"type": "string"}}}
        v2 = {**v1, "required": ["sku"]}
        first = http.post("/subjects/json-value/versions", json={"schema": _dumps(v1), "schemaType": "JSON"})
        assert first.status_code == 200
        refused = http.post("/subjects/json-value/versions", json={"schema": _dumps(v2), "schemaType": "JSON"})
        assert refused.status_code == 409
        assert "property 'sku' became required" in refused.json()["message"]
        assert http.get("/subjects/json-value/versions/2").json()["error_code"] == 40402
        assert http.get("/subjects/json-value/versions/latest/schema").text == _dumps(v1)

        assert http.delete("/subjects/json-value/versions/1").json() == 1
        assert http.get("/subjects/json-value/versions").json()["error_code"] == 40401
        assert "json-value" not in http.get("/subjects").json()
        assert "json-value" in http.get("/subjects", params={"deleted": "true"}).json()
        schema = http.get(f"/schemas/ids/{first.json()['id']}").json()
        assert schema == {"schema": _dumps(v1), "schemaType": "JSON"}, "ids stay readable after a soft delete"
        again = http.post("/subjects/json-value/versions", json={"schema": _dumps(v1), "schemaType": "JSON"})
        assert again.json()["id"] == first.json()["id"]
        assert http.get("/subjects/json-value/versions").json() == [2]


def test_url_schema_store_against_the_server(registry_url: str) -> None:
    store = UrlSchemaStore(registry_url)
    first = store.register("url-store-value", EVENT)
    assert store.register("url-store-value", EVENT) == first
    second = store.register("url-store-value", EVOLVED)
    assert store.ids_for("url-store-value") == {first, second}


def _dumps(schema: dict[str, object]) -> str:
    import json

    return json.dumps(schema, sort_keys=True)

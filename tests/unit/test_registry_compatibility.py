"""BACKWARD compatibility of Protobuf and JSON schemas, and how levels combine the checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from analytics_core.registry import json_compat, proto_compat
from analytics_core.registry.compatibility import InvalidSchemaError, check, validate
from analytics_core.serde import proto_schema_text

EVENT = proto_schema_text()
NESTED = """syntax = "proto3";
package shop;
message Order {
  string id = 1;
  repeated Line lines = 2;
  map<string, int64> counters = 3;
  oneof payment { string card = 4; string iban = 5; }
  int32 quantity = 6;
  message Line { string sku = 1; double price = 2; }
}
"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


PROTO_COMPATIBLE = {
    "identical": EVENT,
    "optional field added": edit(
        EVENT, "  bool is_bot = 22;\n", "  bool is_bot = 22;\n  optional string campaign = 99;\n"
    ),
    "field removed": edit(EVENT, "  optional string currency = 16;\n", ""),
    "field renamed": edit(EVENT, "double revenue = 15", "double amount = 15"),
    "int32 widened to int64 (same varint group)": edit(NESTED, "int32 quantity", "int64 quantity"),
    "string to bytes": edit(NESTED, "string sku = 1", "bytes sku = 1"),
    "message added": NESTED + "message Refund { string id = 1; }\n",
    "nested message field added": edit(NESTED, "double price = 2;", "double price = 2; string note = 3;"),
    "comment changed": edit(EVENT, "// Client IP address.", "// The client's IP address."),
    "oneof member added": edit(NESTED, "string iban = 5;", "string iban = 5; string voucher = 7;"),
    "singular field becomes a oneof alone": edit(NESTED, "int32 quantity = 6;", "oneof q { int32 quantity = 6; }"),
}

PROTO_INCOMPATIBLE = {
    "type changed": (
        edit(EVENT, "double revenue", "string revenue"),
        "field 15 'revenue': type changed from double to string",
    ),
    "int to double": (edit(NESTED, "int32 quantity", "double quantity"), "type changed from int32 to double"),
    "singular to repeated": (
        edit(EVENT, "bool is_bot", "repeated bool is_bot"),
        "label changed from singular to repeated",
    ),
    "repeated to singular": (
        edit(NESTED, "repeated Line lines", "Line lines"),
        "label changed from repeated to singular",
    ),
    "package renamed": (edit(EVENT, "package analytics.tracking", "package analytics.events"), "package changed"),
    "message renamed": (edit(EVENT, "message CanonicalEvent", "message Event"), "message 'CanonicalEvent' removed"),
    "message type changed": (
        edit(NESTED, "repeated Line lines", "repeated string lines"),
        "type changed from Order.Line to string",
    ),
    "map value changed": (edit(NESTED, "map<string, int64>", "map<string, string>"), "map<string, int64> to map"),
    "nested field type changed": (edit(NESTED, "double price = 2", "string price = 2"), "Order.Line field 2 'price'"),
    "oneof member removed": (edit(NESTED, " string iban = 5;", ""), "removed from oneof 'payment'"),
    "field moved into existing oneof": (
        edit(edit(NESTED, " int32 quantity = 6;", ""), "string iban = 5;", "string iban = 5; int32 quantity = 6;"),
        "moved into existing oneof 'payment'",
    ),
}


@pytest.mark.parametrize("new", PROTO_COMPATIBLE.values(), ids=PROTO_COMPATIBLE.keys())
def test_proto_compatible_changes(new: str) -> None:
    old = NESTED if "package shop" in new else EVENT
    assert proto_compat.backward_issues(new, old) == []


@pytest.mark.parametrize(("new", "expected"), PROTO_INCOMPATIBLE.values(), ids=PROTO_INCOMPATIBLE.keys())
def test_proto_incompatible_changes(new: str, expected: str) -> None:
    old = NESTED if "package shop" in new else EVENT
    issues = proto_compat.backward_issues(new, old)
    assert any(expected in issue for issue in issues), issues


def test_invalid_proto_reports_protoc_message() -> None:
    with pytest.raises(InvalidSchemaError, match=r'schema.proto:2:\d+: "strin" is not defined'):
        validate("PROTOBUF", 'syntax = "proto3";\nmessage A { strin x = 1; }\n')


ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "maxLength": 32},
        "amount": {"type": "number", "minimum": 0},
        "qty": {"type": "integer"},
        "status": {"enum": ["new", "paid"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sku"],
}
CLOSED = {**ORDER, "additionalProperties": False}


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `base` with the value at a slash-separated path replaced (None deletes it)."""
    copy = json.loads(json.dumps(base))
    *parents, last = path.split("/")
    node = copy
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return copy


JSON_COMPATIBLE = {
    "identical": (ORDER, ORDER),
    "optional property added": (changed(ORDER, "properties/coupon", {"type": "string"}), ORDER),
    "property removed, open model": (changed(ORDER, "properties/qty", None), ORDER),
    "required dropped": (changed(ORDER, "required", []), ORDER),
    "integer widened to number": (changed(ORDER, "properties/qty/type", "number"), ORDER),
    "type widened with null": (changed(ORDER, "properties/sku/type", ["string", "null"]), ORDER),
    "enum widened": (changed(ORDER, "properties/status/enum", ["new", "paid", "refunded"]), ORDER),
    "bound relaxed": (changed(ORDER, "properties/sku/maxLength", 64), ORDER),
    "bound removed": (changed(ORDER, "properties/amount/minimum", None), ORDER),
    "closed model opened": (ORDER, CLOSED),
    "property added to closed model": (changed(CLOSED, "properties/coupon", {"type": "string"}), CLOSED),
    "anyOf gains a branch": ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string"}),
}

JSON_INCOMPATIBLE = {
    "required property added": (changed(ORDER, "required", ["sku", "amount"]), "property 'amount' became required"),
    "removed from closed model": (
        changed(CLOSED, "properties/qty", None),
        "removed while additionalProperties is false",
    ),
    "type narrowed": (changed(ORDER, "properties/amount/type", "integer"), "properties/amount: type narrowed"),
    "type changed": (changed(ORDER, "properties/sku/type", "integer"), "string no longer allowed"),
    "enum narrowed": (changed(ORDER, "properties/status/enum", ["new"]), "enum narrowed, ['paid']"),
    "model closed": (CLOSED, "additionalProperties changed to false"),
    "bound tightened": (changed(ORDER, "properties/sku/maxLength", 8), "maxLength tightened from 32 to 8"),
    "bound added": (changed(ORDER, "properties/qty/minimum", 1), "minimum tightened from none to 1"),
    "items narrowed": (changed(ORDER, "properties/tags/items/type", "integer"), "tags/items: type narrowed"),
    "pattern added": (changed(ORDER, "properties/sku/pattern", "^[A-Z]+$"), "pattern added"),
    "anyOf loses a branch": ({"anyOf": [{"type": "string"}]}, "accepted by no new alternative"),
}


@pytest.mark.parametrize(("new", "old"), JSON_COMPATIBLE.values(), ids=JSON_COMPATIBLE.keys())
def test_json_compatible_changes(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert json_compat.backward_issues(json.dumps(new), json.dumps(old)) == []


@pytest.mark.parametrize(("new", "expected"), JSON_INCOMPATIBLE.values(), ids=JSON_INCOMPATIBLE.keys())
def test_json_incompatible_changes(new: dict[str, Any], expected: str) -> None:
    old = {"anyOf": [{"type": "string"}, {"type": "null"}]} if "anyOf" in new else ORDER
    issues = json_compat.backward_issues(json.dumps(new), json.dumps(old))
    assert any(expected in issue for issue in issues), issues


@pytest.mark.parametrize("text", ["{", "[1, 2]", '{"type": "strng"}'])
def test_invalid_json_schema(text: str) -> None:
    with pytest.raises(InvalidSchemaError):
        validate("JSON", text)


@dataclass(frozen=True)
class Old:
    version: int
    schema: str
    schema_type: str = "JSON"


def test_levels_choose_versions_and_direction() -> None:
    v1 = Old(1, json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    v2 = Old(2, json.dumps({"type": "object", "properties": {"a": {"type": ["string", "integer"]}}}))
    narrower = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
    assert check("JSON", narrower, [v1, v2], "NONE") == []
    assert check("JSON", narrower, [v2], "BACKWARD") != []
    assert check("JSON", v2.schema, [v1], "FORWARD") != [], "old readers cannot read the widened type"
    assert check("JSON", v1.schema, [v1, v2], "BACKWARD") != []
    widest = json.dumps({"type": "object", "properties": {"a": {"type": ["string", "integer", "null"]}}})
    assert check("JSON", widest, [v1, v2], "BACKWARD_TRANSITIVE") == []
    assert check("PROTOBUF", EVENT, [v2], "BACKWARD") == ["version 2: schema type changed from JSON to PROTOBUF"]


def test_avro_is_stored_but_only_under_none() -> None:
    avro = json.dumps({"type": "record", "name": "E", "fields": [{"name": "a", "type": "string"}]})
    validate("AVRO", avro)
    assert check("AVRO", avro, [Old(1, avro, "AVRO")], "NONE") == []
    assert "not checked" in check("AVRO", avro, [Old(1, avro, "AVRO")], "BACKWARD")[0]
    with pytest.raises(InvalidSchemaError):
        validate("AVRO", '{"type": "record", "name": "E", "fields": [{"name": "a", "type": "nope"}]}')

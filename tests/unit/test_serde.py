"""Protobuf encoding in the Confluent wire format, checked against confluent-kafka's own deserializer."""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from analytics_core.serde import (
    CanonicalEventProto,
    EventDeserializer,
    EventSerializer,
    WireFormatError,
    decode_payload,
    encode_payload,
)
from tests.unit.test_events import valid_event


def test_round_trip_keeps_every_value_including_none_and_zero() -> None:
    event = valid_event() | {"revenue": 0.0, "user_id": None, "is_bot": False, "page": ""}
    assert decode_payload(encode_payload(event)) == event


def test_framing_is_confluent_wire_format() -> None:
    data = EventSerializer(42)(valid_event())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert (magic, schema_id) == (0, 42)
    assert data[5:6] == b"\x00"  # message index list [0]
    assert CanonicalEventProto.FromString(data[6:]).event_id == "e-1"


def test_confluent_deserializer_reads_our_records() -> None:
    deserializer = ProtobufDeserializer(CanonicalEventProto, {"use.deprecated.format": False})
    data = EventSerializer(7)(valid_event())
    msg = deserializer(data, SerializationContext("tracking.events", MessageField.VALUE))
    assert msg.tenant_id == "tenant_1"
    assert msg.revenue == 12.5
    assert not msg.HasField("anonymous_id")


def test_deserializer_rejects_unknown_schema_and_garbage() -> None:
    data = EventSerializer(9)(valid_event())
    with pytest.raises(WireFormatError, match="schema id 9"):
        EventDeserializer({1})(data)
    with pytest.raises(WireFormatError, match="magic byte"):
        EventDeserializer({9})(b"\x01" + data[1:])
    with pytest.raises(WireFormatError, match="shorter"):
        EventDeserializer({9})(b"\x00\x00")
    with pytest.raises(WireFormatError, match="not a valid CanonicalEvent"):
        EventDeserializer({9})(data[:6] + b"\xff\xff\xff")

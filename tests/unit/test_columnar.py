"""The columnar decoder returns exactly what the reference decoder does, and refuses what it cannot follow."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from analytics_core.columnar import SCHEMA, decode_columns
from analytics_core.events import to_micros
from analytics_core.serde import EventDeserializer, EventSerializer, encode_payload, frame
from bench.events import iter_events


def as_event(row: dict) -> dict:
    return {k: to_micros(v) if isinstance(v, datetime) else v for k, v in row.items()}


def test_matches_the_reference_decoder() -> None:
    events = list(iter_events(3_000, seed=3))
    values = [EventSerializer(7)(e) for e in events]
    table, bad = decode_columns(values, {7})
    assert table.schema == SCHEMA and not bad.any()
    reference = EventDeserializer({7})
    assert [as_event(r) for r in table.to_pylist()] == [reference(v) for v in values]


def test_zero_values_absent_fields_and_unknown_fields() -> None:
    minimal = frame(1, encode_payload({"event_id": "e1", "is_bot": False, "revenue": 0.0, "user_id": ""}))
    unknown_field = minimal + bytes([0xF8, 0x01, 0x05])  # field 31, varint 5: a newer schema's field
    table, bad = decode_columns([minimal, unknown_field], {1})
    assert not bad.any()
    row = table.to_pylist()[1]
    assert row["properties"] == "{}" and row["tenant_id"] == "" and row["revenue"] == 0.0 and row["user_id"] == ""
    assert row["page"] is None and row["original_timestamp"] is None and row["is_bot"] is False


def test_flags_what_it_cannot_follow() -> None:
    good = EventSerializer(1)(next(iter_events(1)))
    bad_utf8 = frame(1, bytes([0x0A, 0x02, 0xFF, 0xFE]))  # event_id with invalid UTF-8
    wrong_wire = frame(1, bytes([0x0D, 0, 0, 0, 0]))  # event_id as fixed32
    values = [good, b"\x00\x00", good[:-4], frame(2, good[6:]), b"\x01" + good[1:], wrong_wire, good]
    table, bad = decode_columns(values, {1})
    assert bad.tolist() == [False, True, True, True, True, True, False]
    assert table.num_rows == len(values) and isinstance(table, pa.Table)
    # Invalid UTF-8 is found per column, so every record holding that field goes to the reference decoder.
    _, bad = decode_columns([good, bad_utf8], {1})
    assert bad.tolist() == [True, True]

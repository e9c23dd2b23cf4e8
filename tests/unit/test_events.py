"""The canonical event model and what is derived from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import duckdb
import pytest

from analytics_core.events import FIELD_NAMES, FIELDS, REQUIRED_FIELDS, EventError, check_event, from_micros, to_micros
from analytics_core.serde import proto_schema_text


def valid_event() -> dict:
    return {
        "event_id": "e-1",
        "tenant_id": "tenant_1",
        "message_type": "track",
        "event_type": "purchase",
        "user_id": "u-1",
        "anonymous_id": None,
        "timestamp": 1_700_000_000_000_000,
        "original_timestamp": 1_700_000_000_000_000,
        "sent_at": None,
        "received_at": 1_700_000_000_500_000,
        "properties": '{"revenue": 12.5}',
        "page": "/checkout",
        "country": "DE",
        "device": "mobile",
        "revenue": 12.5,
        "currency": "EUR",
        "experiment_key": None,
        "experiment_variant": None,
        "ip": "5.9.0.1",
        "user_agent": "Mozilla/5.0",
        "library": "analytics-python/2.4.0",
        "is_bot": False,
    }


def test_field_names_and_numbers_are_unique() -> None:
    assert len(set(FIELD_NAMES)) == len(FIELDS)
    numbers = [f.number for f in FIELDS]
    assert len(set(numbers)) == len(numbers)
    assert numbers == sorted(numbers), "new fields go at the end with the next number"


def test_issue_fields_are_present() -> None:
    wanted = {
        "event_id", "tenant_id", "event_type", "user_id", "anonymous_id", "timestamp", "original_timestamp",
        "sent_at", "received_at", "properties", "page", "country", "device", "revenue", "currency",
        "experiment_key", "experiment_variant", "ip", "user_agent", "library", "is_bot",
    }  # fmt: skip
    assert wanted <= set(FIELD_NAMES)
    assert {"event_id", "tenant_id", "event_type", "timestamp", "received_at"} <= REQUIRED_FIELDS


def test_duckdb_ddl_creates_the_table_with_every_field() -> None:
    from analytics_core.events import warehouse_ddl

    con = duckdb.connect()
    con.execute(warehouse_ddl("raw_events"))
    cols = con.execute(
        "select column_name, is_nullable from information_schema.columns where table_name = 'raw_events' "
        "order by ordinal_position"
    ).fetchall()
    assert [c for c, _ in cols] == list(FIELD_NAMES)
    assert {c for c, nullable in cols if nullable == "NO"} == set(REQUIRED_FIELDS)


def test_bigquery_ddl_types() -> None:
    from analytics_core.events import warehouse_ddl

    ddl = warehouse_ddl("ds.raw_events", "bigquery")
    assert "timestamp TIMESTAMP NOT NULL" in ddl
    assert "revenue FLOAT64" in ddl
    assert "properties JSON NOT NULL" in ddl


def test_proto_text_declares_every_field_with_its_number() -> None:
    declared = dict(re.findall(r"^\s+(?:optional )?\w+ (\w+) = (\d+);$", proto_schema_text(), re.M))
    assert {name: int(num) for name, num in declared.items()} == {f.name: f.number for f in FIELDS}
    optional = set(re.findall(r"^\s+optional \w+ (\w+) =", proto_schema_text(), re.M))
    assert optional == set(FIELD_NAMES) - REQUIRED_FIELDS


def test_check_event_accepts_a_valid_event() -> None:
    check_event(valid_event())


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"event_id": None}, "event_id", "is required"),
        ({"revenue": "12"}, "revenue", "must be of type double"),
        ({"timestamp": True}, "timestamp", "must be of type timestamp"),
        ({"properties": "[1]"}, "properties", "must be a JSON object"),
        ({"properties": "{"}, "properties", "must be a JSON object"),
        ({"colour": "red"}, "colour", "is not a field"),
    ],
)
def test_check_event_names_field_and_rule(change: dict, field: str, rule: str) -> None:
    event = valid_event() | change
    with pytest.raises(EventError) as err:
        check_event(event)
    assert err.value.field == field
    assert rule in err.value.rule


def test_micros_round_trip_and_timezones() -> None:
    dt = datetime(2024, 3, 10, 7, 30, 15, 123456, tzinfo=UTC)
    us = to_micros(dt)
    assert us == int(dt.timestamp()) * 1_000_000 + 123456
    assert from_micros(us) == dt
    plus_five_thirty = dt.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert to_micros(plus_five_thirty) == us


def test_event_model_doc_lists_every_field() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "EVENT_MODEL.md").read_text()
    for f in FIELDS:
        assert f"| {f.number} | `{f.name}` | {f.type} |" in doc, f.name


def test_dead_letter_round_trips_as_json() -> None:
    from analytics_core.deadletter import REASONS, DeadLetter

    letter = DeadLetter("schema_violation", "revenue: must be >= 0", "tenant_1", 123, {"event": "x"}, "collector")
    assert DeadLetter.from_json(letter.to_json()) == letter
    assert "schema_violation" in REASONS and "format" in REASONS

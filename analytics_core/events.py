"""The canonical event model: one field list from which the Kafka schema and warehouse DDL are derived.

Events travel through the pipeline as plain dicts keyed by these field names (building a model
object per event costs more than the rest of the hot path). Timestamps are integer microseconds
since the Unix epoch, UTC; `properties` is a JSON object serialised as a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

FieldType = Literal["string", "timestamp", "double", "boolean", "json"]


@dataclass(frozen=True)
class EventField:
    number: int  # Protobuf field number: never reuse or renumber, add new fields at the end.
    name: str
    type: FieldType
    required: bool
    doc: str


FIELDS: tuple[EventField, ...] = (
    EventField(1, "event_id", "string", True, "Unique id of the event; the SDK's messageId or uuid when given."),
    EventField(2, "tenant_id", "string", True, "Tenant that owns the event, from the write key only."),
    EventField(3, "message_type", "string", True, "Segment message type: track, page, screen, identify, group, alias."),
    EventField(4, "event_type", "string", True, "Event name, e.g. page_view, add_to_cart, purchase."),
    EventField(5, "user_id", "string", False, "Known user id, if identified."),
    EventField(6, "anonymous_id", "string", False, "Device or cookie id before identification."),
    EventField(7, "timestamp", "timestamp", True, "Event time in UTC, corrected for client clock skew."),
    EventField(8, "original_timestamp", "timestamp", False, "Event time as the client reported it."),
    EventField(9, "sent_at", "timestamp", False, "When the SDK sent the batch, by the client clock."),
    EventField(10, "received_at", "timestamp", True, "When the collector received the batch, by the server clock."),
    EventField(11, "properties", "json", True, "Event properties as a JSON object."),
    EventField(12, "page", "string", False, "Page path or screen name."),
    EventField(13, "country", "string", False, "ISO 3166-1 alpha-2 country from the client IP."),
    EventField(14, "device", "string", False, "Device class: desktop, mobile, tablet or bot."),
    EventField(15, "revenue", "double", False, "Revenue of a purchase, in `currency`."),
    EventField(16, "currency", "string", False, "ISO 4217 currency code of `revenue`."),
    EventField(17, "experiment_key", "string", False, "Experiment the user was exposed to."),
    EventField(18, "experiment_variant", "string", False, "Variant of `experiment_key` shown to the user."),
    EventField(19, "ip", "string", False, "Client IP address."),
    EventField(20, "user_agent", "string", False, "Client user agent string."),
    EventField(21, "library", "string", False, "SDK name and version that sent the event."),
    EventField(22, "is_bot", "boolean", True, "True when the sender was classified as a bot."),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED_FIELDS: frozenset[str] = frozenset(f.name for f in FIELDS if f.required)

_DUCKDB_TYPES: dict[FieldType, str] = {
    "string": "VARCHAR",
    "json": "JSON",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
BIGQUERY_TYPES: dict[FieldType, str] = {
    "string": "STRING",
    "json": "JSON",
    "double": "FLOAT64",
    "boolean": "BOOL",
    "timestamp": "TIMESTAMP",
}


def warehouse_ddl(table: str, dialect: Literal["duckdb", "bigquery"] = "duckdb") -> str:
    """CREATE TABLE statement of the raw events table for the given warehouse dialect."""
    types = _DUCKDB_TYPES if dialect == "duckdb" else BIGQUERY_TYPES
    cols = ",\n".join(f"    {f.name} {types[f.type]}{' NOT NULL' if f.required else ''}" for f in FIELDS)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n{cols}\n)"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive ones are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


class EventError(ValueError):
    """A dict that is not a valid canonical event; names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


_PY_CHECKS: dict[FieldType, tuple[type, ...]] = {
    "string": (str,),
    "json": (str,),
    "double": (float, int),
    "boolean": (bool,),
    "timestamp": (int,),
}


def check_event(event: dict[str, Any]) -> None:
    """Raise EventError naming the first field that breaks the canonical model."""
    unknown = event.keys() - set(FIELD_NAMES)
    if unknown:
        raise EventError(sorted(unknown)[0], "is not a field of the canonical event")
    for f in FIELDS:
        value = event.get(f.name)
        if value is None:
            if f.required:
                raise EventError(f.name, "is required")
            continue
        ok = isinstance(value, _PY_CHECKS[f.type]) and not (
            f.type in ("double", "timestamp") and isinstance(value, bool)
        )
        if not ok:
            raise EventError(f.name, f"must be of type {f.type}, got {type(value).__name__}")
        if f.type == "json":
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise EventError(f.name, f"must be a JSON object ({exc})") from exc
            if not isinstance(parsed, dict):
                raise EventError(f.name, "must be a JSON object")

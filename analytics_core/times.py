"""Reading times given by people (command-line options, Dagster run config) as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_utc(text: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime; a time without an offset is taken as UTC."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

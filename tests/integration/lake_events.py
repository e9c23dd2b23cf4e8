"""Events written straight into a test lake's raw_events, for dbt models that need no Kafka."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from analytics_core import warehouse
from analytics_core.settings import Settings


def write_raw(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Append `events` (dicts: tenant_id, user_id, event_type, timestamp, is_bot, and optionally
    event_id, page, country, device, library, revenue, currency, experiment_key, experiment_variant,
    properties) to raw_events, on partition 0 at offsets after the ones already there."""
    con = warehouse.connect(settings)
    try:
        table = f"{settings.warehouse_alias}.{warehouse.RAW_EVENTS}"
        first = int((con.execute(f"SELECT coalesce(max(_kafka_offset) + 1, 0) FROM {table}").fetchone() or (0,))[0])
        rows = [
            (
                e.get("event_id") or uuid.uuid4().hex, e["tenant_id"], "track", e["event_type"], e["user_id"], None,
                e["timestamp"], e["timestamp"], e["timestamp"], e["timestamp"], json.dumps(e.get("properties", {})),
                e.get("page"), e.get("country", "US"), e.get("device", "desktop"), e.get("revenue"), e.get("currency"),
                e.get("experiment_key"), e.get("experiment_variant"), None, None, e.get("library", "test"),
                e["is_bot"], 0, first + i,
            )
            for i, e in enumerate(events)
        ]  # fmt: skip
        marks = ", ".join("?" * len(rows[0]))
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    finally:
        con.close()


def lake_settings(stack: Settings, folder: Path, name: str) -> Settings:
    """The stack's settings with a fresh lake and tenants database in `folder`, and Redis keys of their own."""
    return stack.model_copy(
        update={
            "warehouse_path": folder / "warehouse",
            "warehouse_catalog": "",
            "warehouse_data_path": "",
            "tenants_db": folder / "tenants.sqlite",
            "redis_key_prefix": f"test:{name}:{uuid.uuid4().hex[:8]}:",
        }
    )

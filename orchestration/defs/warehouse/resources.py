"""The warehouse resource: the project Settings, with the few overrides a deployment or a test sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from analytics_core.settings import Settings, get_settings

# Settings fields a WarehouseResource may override; None keeps the ANALYTICS_* / .env value.
OVERRIDABLE = (
    "kafka_bootstrap",
    "topic_prefix",
    "schema_registry_url",
    "warehouse_path",
    "warehouse_catalog",
    "warehouse_data_path",
    "loader_batch_events",
    "loader_batch_seconds",
    "loader_compact_every_s",
    "redis_url",
    "redis_key_prefix",
)


class WarehouseResource(dg.ConfigurableResource):
    """DuckLake warehouse and Kafka settings (analytics_core.settings), read when a run needs them."""

    kafka_bootstrap: str | None = None
    topic_prefix: str | None = None
    schema_registry_url: str | None = None
    warehouse_path: str | None = None
    warehouse_catalog: str | None = None
    warehouse_data_path: str | None = None
    loader_batch_events: int | None = None
    loader_batch_seconds: float | None = None
    loader_compact_every_s: float | None = None
    redis_url: str | None = None  # the realtime layer's Redis, for the reconciliation check
    redis_key_prefix: str | None = None
    loader_idle_exit_s: float = Field(default=5.0, description="Stop loading after this long without new events.")
    loader_max_s: float = Field(default=600.0, description="Stop loading after this long whatever happens.")

    def get_settings(self) -> Settings:
        """The process settings with this resource's overrides applied (validated: paths become Paths)."""
        overrides = {name: getattr(self, name) for name in OVERRIDABLE if getattr(self, name) is not None}
        if not overrides:
            return get_settings()
        return Settings.model_validate({**get_settings().model_dump(), **overrides})

    @classmethod
    def from_settings(cls, settings: Settings, **loader: Any) -> WarehouseResource:
        """A resource pinned to `settings` (tests: a tmp warehouse and a topic prefix)."""
        values = {name: getattr(settings, name) for name in OVERRIDABLE}
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        return cls(**values, **loader)


warehouse_resource = WarehouseResource()

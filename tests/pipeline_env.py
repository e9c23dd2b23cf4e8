"""A test's own pipeline: settings with its own warehouse, tenants, Redis keys (and Kafka topics), and the
environment of a pipeline process it starts (`analytics realtime`, ...) with micro-batches short enough for a test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from analytics_core.settings import Settings

# Loader batches for a test: small and quick, compaction off.
QUICK_LOADER = {"loader_batch_events": 5_000, "loader_batch_seconds": 0.5, "loader_compact_every_s": 0.0}


def isolated(settings: Settings, base: Path, topics: bool = False, **update: Any) -> Settings:
    """`settings` with a warehouse and tenant store under `base`, Redis keys of their own and, with `topics`,
    Kafka topics of their own (create them with ensure_topics); then `update`."""
    own: dict[str, Any] = {
        "warehouse_path": base / "warehouse",
        "tenants_db": base / "tenants.sqlite",
        "redis_key_prefix": f"test:{uuid.uuid4().hex[:10]}:",
    }
    if topics:
        own["topic_prefix"] = f"{settings.topic_prefix}{uuid.uuid4().hex[:8]}."
    return settings.model_copy(update={**own, **update})


def pipeline_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_TOPIC_PREFIX": settings.topic_prefix,
        "ANALYTICS_REDIS_URL": settings.redis_url,
        "ANALYTICS_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ANALYTICS_REALTIME_BATCH_SECONDS": "0.05",
    }

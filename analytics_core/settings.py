"""The one settings object, read from ANALYTICS_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "analytics-pipeline"


class Settings(BaseSettings):
    """Everything configurable; every service builds it once through get_settings()."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", env_file=".env", extra="ignore")

    # Kafka: point kafka_bootstrap at an existing cluster and set stack_kafka=false to use it.
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.1.1"
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_heap: str = "1g"
    topic_prefix: str = Field(default="", description="prepended to every topic name; tests isolate runs with it")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible registry; unset: schemas live in the registry topic"
    )

    # Redis: point redis_url at an existing server and set stack_redis=false to use it.
    redis_url: str = "redis://127.0.0.1:16379/0"

    # What `analytics stack up` starts itself.
    stack_kafka: bool = True
    stack_redis: bool = True

    # Where state lives: one git-ignored folder for data, logs and pids; jars in a user cache.
    state_dir: Path = Path(".state")
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    warehouse_path: Path = Path(".state/warehouse")
    tenants_db: Path = Path(".state/tenants.sqlite")
    # DuckLake catalog: empty = SQLite file <warehouse_path>/catalog.sqlite; a path = that SQLite
    # file; "postgres:<libpq DSN>" = a PostgreSQL catalog. Data path empty = <warehouse_path>/data.
    warehouse_catalog: str = ""
    warehouse_data_path: str = ""
    warehouse_alias: str = "lake"
    # Where the loader writes and dbt builds: the local DuckLake, or BigQuery (docs/BIGQUERY.md).
    warehouse_target: Literal["duckdb", "bigquery"] = "duckdb"
    bigquery_project: str = ""  # empty: the project of the application default credentials
    bigquery_dataset: str = "analytics"  # dataset of raw_events, loader_offsets and the dbt models
    bigquery_location: str = "US"  # location of the dataset, where every load and query job runs
    min_free_disk_mb: int = 1024

    # Ports of the services later issues add; kept here so one file documents every port.
    collector_port: int = 8080
    collector_workers: int = Field(default=1, ge=1)
    # Segment's limits: 32 KB an event, 500 KB a batch (checked after decompression too).
    collector_max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    collector_max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    collector_dedupe_window_s: int = Field(default=24 * 3600, ge=1)
    collector_kafka_timeout_s: float = Field(default=10.0, gt=0)
    collector_retry_after_s: int = Field(default=5, ge=1)
    # Warehouse loader: a micro-batch closes at this many events or this age, whichever comes first.
    loader_batch_events: int = Field(default=100_000, ge=1)
    loader_batch_seconds: float = Field(default=2.0, gt=0)
    loader_compact_every_s: float = Field(default=600.0, ge=0)
    # Realtime consumer (group realtime.counters): a batch closes at this many events or this age;
    # minute counters and HLLs live realtime_retention_s past their minute (longer than the
    # warehouse lag); events older than that are left to the warehouse.
    realtime_batch_events: int = Field(default=20_000, ge=1)
    realtime_batch_seconds: float = Field(default=0.1, gt=0)
    realtime_retention_s: int = Field(default=2 * 3600, ge=300)
    live_window_s: int = Field(default=300, ge=60)  # "active now": users seen in the last N seconds
    redis_key_prefix: str = Field(default="", description="prepended to every Redis key; tests isolate runs")

    # Query API.
    api_port: int = 8000
    api_workers: int = Field(default=1, ge=1)
    api_max_rows: int = Field(default=10_000, ge=1)  # rows an answer may hold
    api_max_buckets: int = Field(default=10_000, ge=1)  # time buckets a query may ask for
    api_max_range_days: int = Field(default=3 * 366, ge=1)
    api_cache_ttl_s: int = Field(default=60, ge=1)  # answers whose range reaches past the watermark
    api_cache_closed_ttl_s: int = Field(default=3600, ge=1)  # answers over closed ranges
    api_live_interval_s: float = Field(default=2.0, gt=0)  # SSE heartbeat when nothing changes
    api_retry_after_s: int = Field(default=5, ge=1)
    # In-memory replica of the rollup tables the engine reads (api/replica.py): on or off, how often it
    # looks for a new lake snapshot, and after how long without reaching the lake answers say they are stale.
    api_replica: bool = True
    api_replica_refresh_s: float = Field(default=1.0, gt=0)
    api_replica_stale_s: float = Field(default=60.0, gt=0)
    dagster_port: int = 3000

    # External programs, overridable when they are not on PATH.
    java_bin: str = "java"
    mvn_bin: str = "mvn"
    redis_server_bin: str = "redis-server"

    @field_validator("state_dir", "cache_dir", "warehouse_path", "tenants_db", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def redis_host(self) -> str:
        return urlparse(self.redis_url).hostname or "127.0.0.1"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

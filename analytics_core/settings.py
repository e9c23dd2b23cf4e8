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

    # Ports and limits of the HTTP services, kept here so one file documents every port.
    collector_port: int = 8080
    collector_workers: int = Field(default=1, ge=1)
    # Segment's limits: 32 KB an event, 500 KB a batch (checked after decompression too).
    collector_max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    collector_max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    collector_dedupe_window_s: int = Field(default=24 * 3600, ge=1)
    collector_kafka_timeout_s: float = Field(default=10.0, gt=0)
    collector_retry_after_s: int = Field(default=5, ge=1)
    # Proxies (comma-separated addresses or networks, "*": any) whose X-Forwarded-For and X-Forwarded-Proto the
    # collector believes: the client address then comes from X-Forwarded-For (country, failed-auth throttling).
    # Default loopback: a proxy on the same host. Put the load balancer's addresses here; never "*" when clients
    # can reach the collector directly, since any client could then claim any address.
    collector_trusted_proxies: str = "127.0.0.1,::1"
    # Hardening of both HTTP services, the collector and the query API (analytics_core/serving.py, tenants/throttle.py):
    # a request head must arrive within http_head_timeout_s and be at most http_max_head_bytes (else 408 / 431
    # and the connection is closed), a body within http_body_timeout_s after its head (else 408). After
    # auth_throttle_failures unknown keys from one client address within auth_throttle_window_s, that address
    # is refused with 429 for auth_throttle_block_s (0 failures: off); addresses in auth_throttle_exempt
    # (comma-separated networks; loopback, i.e. a local proxy or tool) are never throttled.
    http_head_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_max_head_bytes: int = Field(default=64 * 1024, ge=1024)
    auth_throttle_failures: int = Field(default=20, ge=0)
    auth_throttle_window_s: float = Field(default=60.0, gt=0)
    auth_throttle_block_s: float = Field(default=300.0, gt=0)
    auth_throttle_exempt: str = "127.0.0.0/8,::1"
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

    # Bounds of event fields (analytics_core/bounds.py), checked by the collector, the loader and the realtime
    # consumer; an event outside them is dead-lettered as out_of_range. Revenue: 1e9 currency units is above
    # any single order a shop sends (larger is a unit mistake or an attack); at most 2**53 micro-units, the
    # largest amount a double holds exactly to the micro-unit. Event age: a year and a day covers SDK offline
    # queues (days to weeks) and last year's imports; older is a broken clock (0001-01-01, the epoch). Future
    # skew: 24 h covers every time zone mistake; more is a broken clock (its reason stays enrichment_failure).
    bounds_max_abs_revenue: float = Field(default=1e9, gt=0, le=2**53 / 1_000_000)
    bounds_max_event_age_days: int = Field(default=366, ge=1, le=36_500)
    bounds_max_future_skew_s: int = Field(default=24 * 3600, ge=0, le=366 * 86_400)

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
    # Live SSE streams (api/live_hub.py), per API process: the most open at once per read key (429 above)
    # and in all (503 above), the Redis connections they all share (one subscription, the rest for reads),
    # and how often open streams re-check their read key (a rotated or revoked key ends them).
    api_live_max_streams_per_key: int = Field(default=20, ge=1)
    api_live_max_streams: int = Field(default=2000, ge=1)
    api_live_redis_connections: int = Field(default=4, ge=2)
    api_live_key_check_s: float = Field(default=1.0, gt=0)
    # In-memory replica of the rollup tables the engine reads (api/engine/replica/): on or off, how often it
    # looks for a new lake snapshot, and after how long without reaching the lake answers say they are stale.
    api_replica: bool = True
    api_replica_refresh_s: float = Field(default=1.0, gt=0)
    api_replica_stale_s: float = Field(default=60.0, gt=0)
    # Query API hardening (docs/API.md, "Limits"): queries a read key may ask per window (a token bucket in
    # Redis shared by every worker; 0 = no limit), filter values a query may hold in all, the longest range
    # answered from raw events, and the most (bucket, group) cells or source rows a query may read before its
    # answer is cut to `limit`; each is refused with a 400 naming it before anything of its size is built.
    api_rate_limit_queries: int = Field(default=1000, ge=0)
    api_rate_limit_window_s: float = Field(default=10.0, gt=0)
    api_max_filter_values: int = Field(default=1000, ge=1)
    api_max_raw_range_days: int = Field(default=93, ge=1)
    api_max_cells: int = Field(default=100_000, ge=1)
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

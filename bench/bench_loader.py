"""Warehouse loader throughput: events/s from Kafka into the DuckLake raw table, against raw consume."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from analytics_core.clients import kafka_producer
from analytics_core.registry import register_event_schema
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from bench.bench_kafka import _delete, _produce
from bench.events import iter_events, partition_key
from bench.harness import Record, Scale, record
from loaders.warehouse_loader import WarehouseLoader, loader_group

EVENTS = {"small": 500_000, "large": 5_000_000}
POOL = 500_000  # distinct pre-encoded events; large runs cycle through them


def run(settings: Settings, scale: Scale) -> list[Record]:
    """loader_throughput: a fresh group loads n pre-produced events into a fresh warehouse, timed from assignment."""
    n = EVENTS[scale]
    prefix = f"bench.{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.loader."
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        bench = settings.model_copy(
            update={"topic_prefix": prefix, "warehouse_path": Path(tmp), "loader_compact_every_s": 0.0}
        )
        topics = Topics.from_settings(bench)
        try:
            ensure_topics(bench, timeout=30)
            serialize = EventSerializer(register_event_schema(bench))
            items = [(partition_key(e), serialize(e)) for e in iter_events(min(n, POOL))]
            _produce(kafka_producer(bench), topics.events, (items[i % len(items)] for i in range(n)))
            del items
            loader = WarehouseLoader(bench)
            cpu = time.process_time()
            stats = loader.run(handle_signals=False, max_events=n)
            elapsed = time.monotonic() - (loader.assigned_at or time.monotonic())
            cpu = time.process_time() - cpu
            if stats.loaded != n:
                raise RuntimeError(f"loader stopped after {stats.loaded} of {n} events")
            rows = _count(bench)
            if rows != n:
                raise RuntimeError(f"warehouse holds {rows} rows, expected {n}")
        finally:
            _delete(bench, list(topics.all()), [loader_group(bench)])
    return [
        record("loader_throughput", n / elapsed, "events/s", baseline="kafka_consume_raw", target=">= 100000"),
        # CPU of this process (all threads: loader, writer, librdkafka, DuckDB) per event over the whole
        # run(), group join and close included: steadier than events/s when other work shares the cores.
        record("loader_cpu_per_event", cpu / n * 1e6, "us/event"),
    ]


def _count(settings: Settings) -> int:
    from analytics_core import warehouse

    con = warehouse.connect(settings)
    try:
        row = con.execute(f"SELECT count(*) FROM {settings.warehouse_alias}.raw_events").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()

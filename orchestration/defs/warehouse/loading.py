"""Run the warehouse loader until it has caught up, and describe raw_events for asset metadata."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import dagster as dg
from confluent_kafka import KafkaException

from analytics_core import warehouse
from analytics_core.clients import kafka_admin
from analytics_core.settings import Settings
from loaders.lag import PartitionLag, loader_lag
from loaders.warehouse_loader import LoaderStats, WarehouseLoader, loader_group

RAW_EVENTS_KEY = dg.AssetKey(["tracking", "raw_events"])  # the key dagster-dbt gives source('tracking', 'raw_events')
KAFKA_EVENTS_KEY = dg.AssetKey(["kafka", "tracking_events"])
UNASSIGNED_EXIT_S = 30.0
log = logging.getLogger(__name__)


def load_until_caught_up(settings: Settings, idle_exit_s: float, max_s: float) -> LoaderStats:
    """Load until every partition is stored up to the high watermark seen at the start.

    When a loader already runs in the group (`analytics loader`, as `make demo` starts one), this only
    waits for it to get there: joining the group would move its partitions at every run. Otherwise it
    runs a loader itself; live traffic never lets that loader go idle, so "caught up" is the usual
    end. Partitions other loaders of the group own are theirs to load: this waits for them too.
    idle_exit_s, max_s and 30 s without any partition bound the rest. If the group empties while
    partitions are behind, this runs a loader after all.
    """
    targets = {p.partition: p.high_watermark for p in loader_lag(settings)}
    started = time.monotonic()
    members = group_members(settings)
    if members:
        log.info(
            "%d loader(s) in group %s: waiting for them to store up to %s", members, loader_group(settings), targets
        )
        stats = LoaderStats()
    else:
        stats = _run_loader(settings, targets, idle_exit_s, max_s)
    while time.monotonic() - started < max_s:
        behind = [p.partition for p in loader_lag(settings) if max(p.stored_offset, 0) < targets.get(p.partition, 0)]
        if not behind:
            break
        if not group_members(settings):
            remaining = max_s - (time.monotonic() - started)
            stats = _run_loader(settings, targets, idle_exit_s, remaining)
            continue
        log.info("waiting for other loaders: partitions %s not loaded up to %s yet", behind, targets)
        time.sleep(1.0)
    return stats


def group_members(settings: Settings, timeout: float = 10.0) -> int:
    """Consumers in the loader's group now (0 when the group does not exist or Kafka cannot tell)."""
    group = loader_group(settings)
    admin = kafka_admin(settings)
    try:
        return len(admin.describe_consumer_groups([group], request_timeout=timeout)[group].result().members)
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" not in str(exc):
            log.warning("describing group %s: %s", group, exc)
        return 0


def _run_loader(settings: Settings, targets: dict[int, int], idle_exit_s: float, max_s: float) -> LoaderStats:
    loader = WarehouseLoader(settings)
    done = threading.Event()
    started = last_owned = time.monotonic()

    def watch() -> None:
        nonlocal last_owned
        while not done.wait(0.25):
            owned = dict(loader.expected)  # next offset per owned partition, moved after each commit
            now = time.monotonic()
            last_owned = now if owned else last_owned
            caught_up = bool(owned) and all(max(o, 0) >= targets.get(p, 0) for p, o in owned.items())
            # No partition for a while: other loaders of the group hold them all.
            if caught_up or now - started > max_s or now - last_owned > UNASSIGNED_EXIT_S:
                loader.stop()
                return

    watcher = threading.Thread(target=watch, name="loader-watch", daemon=True)
    watcher.start()
    try:
        # Dagster handles SIGTERM/SIGINT of the run: the loader's finally still closes the consumer.
        return loader.run(idle_exit_s=idle_exit_s, handle_signals=False)
    finally:
        done.set()
        watcher.join()


def _raw_events_row(settings: Settings, columns: str) -> tuple[int, ...]:
    con = warehouse.connect(settings)
    try:
        row = con.execute(f"SELECT {columns} FROM {settings.warehouse_alias}.{warehouse.RAW_EVENTS}").fetchone()
        assert row is not None  # an aggregate without GROUP BY always returns one row
        return tuple(int(v) for v in row)
    finally:
        con.close()


def row_count(settings: Settings) -> int:
    """Rows of raw_events: metadata of every load, so no scan for distinct positions."""
    return _raw_events_row(settings, "count(*)")[0]


def row_counts(settings: Settings) -> tuple[int, int]:
    """Rows of raw_events, and distinct Kafka (partition, offset) positions among them."""
    rows, positions = _raw_events_row(settings, "count(*), count(DISTINCT (_kafka_partition, _kafka_offset))")
    return rows, positions


def lag_table(lag: list[PartitionLag]) -> dg.TableMetadataValue:
    names = ("partition", "stored_offset", "high_watermark", "lag")
    records = [dg.TableRecord({**asdict(p), "lag": p.lag}) for p in lag]
    return dg.MetadataValue.table(records, dg.TableSchema(columns=[dg.TableColumn(name, "int") for name in names]))


def raw_events_metadata(settings: Settings, stats: LoaderStats | None = None) -> dict[str, Any]:
    """Per-partition stored offset, high watermark and lag, total lag, row count, what this run loaded."""
    lag = loader_lag(settings)
    metadata: dict[str, Any] = {
        "partitions": lag_table(lag),
        "total_lag": dg.MetadataValue.int(sum(p.lag for p in lag)),
        "dagster/row_count": dg.MetadataValue.int(row_count(settings)),
    }
    if stats is not None:
        metadata |= {
            "loaded": dg.MetadataValue.int(stats.loaded),
            "dead_lettered": dg.MetadataValue.int(stats.dead_lettered),
            "batches": dg.MetadataValue.int(stats.batches),
            "fenced_batches": dg.MetadataValue.int(stats.fenced),
        }
    return metadata

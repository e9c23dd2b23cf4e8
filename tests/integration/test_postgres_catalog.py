"""DuckLake with a PostgreSQL catalog: the loader, a reader in another process and dbt on a real PostgreSQL."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.warehouse_loader import WarehouseLoader
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.postgres import postgres_server

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(seed=11, days=2, events_per_day=5_000, tenants=2, start_us=1_704_067_200_000_000)


@pytest.fixture()
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


def _read(settings: Settings, ready: Any, stop: Any, out: Any) -> None:
    """Count raw events over and over until told to stop, then once more; an error ends the loop."""
    counts, error = [], None
    try:
        con = warehouse.connect(settings, create=False)
        ready.set()
        while True:
            last = stop.is_set()
            counts.append(con.execute(f"SELECT count(*) FROM {settings.warehouse_alias}.raw_events").fetchone()[0])
            if last:
                break
            time.sleep(0.02)
    except Exception as exc:  # reported to the test, which fails on it
        error = repr(exc)
    ready.set()
    out.put((counts, error))


def test_loader_reader_and_dbt_on_a_postgres_catalog(own_topics: Settings, postgres_dsn: str, tmp_path: Path) -> None:
    delivered = run(CONFIG, KafkaSink(own_topics)).statuses["delivered"]
    settings = own_topics.model_copy(
        update={
            "warehouse_path": tmp_path / "warehouse",
            "warehouse_catalog": f"postgres:{postgres_dsn}",
            "loader_batch_events": 500,  # many small commits, so the reader sees them land
            "loader_batch_seconds": 0.2,
            "loader_compact_every_s": 0.0,
        }
    )
    assert warehouse.catalog_uri(settings) == f"ducklake:postgres:{postgres_dsn}"
    warehouse.connect(settings).close()  # creates the tables in the PostgreSQL catalog

    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read, args=(settings, ready, stop, out))
    reader.start()
    try:
        assert ready.wait(60), "the reader process did not attach the lake"
        stats = WarehouseLoader(settings).run(idle_exit_s=3.0, handle_signals=False)
    finally:
        stop.set()
        counts, error = out.get(timeout=60)
        reader.join(30)
    assert error is None, error
    assert stats.loaded == delivered and stats.batches > 5
    assert not [(a, b) for a, b in itertools.pairwise(counts) if b < a]  # every read saw a committed state
    assert any(0 < c < delivered for c in counts), "the reader saw no commit land while the loader ran"
    assert counts[-1] == delivered

    positions = lake_query(settings, "SELECT count(DISTINCT (_kafka_partition, _kafka_offset)) FROM {lake}.raw_events")
    assert positions[0][0] == delivered  # every record exactly once

    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    raw = lake_query(settings, "SELECT count(DISTINCT (tenant_id, event_id)) FROM {lake}.raw_events WHERE NOT is_bot")
    rolled = lake_query(
        settings, "SELECT sum(value) FROM {lake}.fct_metrics_day WHERE metric = 'events' AND dimension_set = ''"
    )
    assert raw[0][0] > 0 and rolled[0][0] == raw[0][0]

    # The catalog is in PostgreSQL, not in a SQLite file next to the data.
    assert not (settings.warehouse_path / "catalog.sqlite").exists()
    con = warehouse.connect(settings, create=False)
    try:
        con.execute(f"ATTACH '{postgres_dsn}' AS pg (TYPE postgres, READ_ONLY)")
        tables = {r[0] for r in con.execute("SELECT table_name FROM pg.information_schema.tables").fetchall()}
        snapshots = con.execute("SELECT count(*) FROM pg.public.ducklake_snapshot").fetchone()[0]
    finally:
        con.close()
    assert {"ducklake_snapshot", "ducklake_table", "ducklake_data_file"} <= tables
    assert snapshots > stats.batches

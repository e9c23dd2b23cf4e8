"""The loader, dbt and a reader work on the same DuckLake at the same time, each in its own process."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.warehouse_loader import WarehouseLoader
from tests.integration.dbt_runs import lake_query, run_dbt

pytestmark = pytest.mark.integration

CONFIG = GeneratorConfig(seed=3, days=2, events_per_day=15_000, tenants=2, start_us=1_704_067_200_000_000)


def _load(settings: Settings, out: Any) -> None:
    started = time.time()
    stats = WarehouseLoader(settings).run(idle_exit_s=4.0, handle_signals=False)
    out.put(("loader", started, time.time(), stats.loaded, stats.batches))


def _read(settings: Settings, stop: Any, out: Any) -> None:
    """Query raw events and the rollups over and over until told to stop; an error ends the loop and is reported."""
    con = warehouse.connect(settings, create=False)
    counts, rollup_reads, error = [], 0, None
    while not stop.is_set():
        try:
            counts.append(con.execute(f"SELECT count(*) FROM {settings.warehouse_alias}.raw_events").fetchone()[0])
            try:
                con.execute(f"SELECT sum(value) FROM {settings.warehouse_alias}.fct_metrics_hour").fetchone()
                rollup_reads += 1
            except duckdb.CatalogException:
                pass  # not built yet
        except Exception as exc:  # reported to the test, which fails on it
            error = repr(exc)
            break
        time.sleep(0.05)
    out.put(("reader", counts, rollup_reads, error))


def test_loader_dbt_and_a_reader_share_the_lake(own_topics: Settings, tmp_path: Path) -> None:
    delivered = run(CONFIG, KafkaSink(own_topics)).statuses["delivered"]
    settings = own_topics.model_copy(
        update={
            "warehouse_path": tmp_path / "warehouse",
            "loader_batch_events": 400,  # many small commits, so they land while dbt builds
            "loader_batch_seconds": 0.2,
            "loader_compact_every_s": 0.0,
        }
    )
    warehouse.connect(settings).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    loader = ctx.Process(target=_load, args=(settings, out))
    stop = ctx.Event()
    reader = ctx.Process(target=_read, args=(settings, stop, out))
    loader.start()
    reader.start()
    time.sleep(1.0)
    builds = []
    for _ in range(2):
        started = time.time()
        run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
        builds.append((started, time.time()))
    time.sleep(1.0)  # let the reader see the rollups the last build committed
    stop.set()
    results = {r[0]: r for r in (out.get(timeout=120), out.get(timeout=120))}
    loader.join(30)
    reader.join(30)

    _, _, load_end, loaded, batches = results["loader"]
    _, counts, rollup_reads, error = results["reader"]
    assert error is None
    assert loaded == delivered and batches > 20
    assert builds[0][0] < load_end  # dbt built while the loader was still committing
    drops = [(a, b) for a, b in itertools.pairwise(counts) if b < a]
    assert not drops and rollup_reads > 0, drops[:5]

    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")  # catch up with the rest
    raw = lake_query(settings, "SELECT count(DISTINCT (tenant_id, event_id)) FROM {lake}.raw_events WHERE NOT is_bot")
    rolled = lake_query(
        settings, "SELECT sum(value) FROM {lake}.fct_metrics_day WHERE metric = 'events' AND dimension_set = ''"
    )
    assert rolled[0][0] == raw[0][0]

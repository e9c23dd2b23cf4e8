"""A continuous loader and dbt minute builds on one SQLite-catalog DuckLake, with events flowing into Kafka.

Without the writer lock a dbt build here loses its commits to the loader's (one every fraction of a
second) with "database is locked". With it the loader's commits wait for each build while it goes on
reading Kafka (pausing its partitions once every batch is full), no build sees the error even once
(its retried attempts included), and the warehouse holds every sent event exactly once. Dagster's
minute job, finding the loader in its group, waits for it instead of loading itself.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from analytics_core import dbt, warehouse
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import RunResult, run
from generator.sinks import KafkaSink
from loaders.lag import loader_lag
from loaders.warehouse_loader import WarehouseLoader
from tests.integration.dbt_runs import lake_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What Dagster's minute job builds before the first hourly run (tests whose every parent is built, as it runs them).
MINUTE_BUILD = [
    *("build", "--select", "stg_tracking__events", "fct_metrics_minute"),
    *("--indirect-selection", "cautious", "--exclude-resource-type", "unit_test"),
]
TRAFFIC = GeneratorConfig(seed=21, tenants=2, rate=300.0, duration=12.0, invalid_share=0.0)


class RecordingSink(KafkaSink):
    """The generator's Kafka sink, counting the event ids it sends to tracking.events (resends included)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: Counter[str] = Counter()

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        super().send(events, invalid)
        self.sent.update(e["event_id"] for i, e in enumerate(events) if i not in invalid)


def _loader(settings: Settings, started: Any, out: Any) -> None:
    loader = WarehouseLoader(settings)
    started.set()
    out.put(asdict(loader.run()))  # until SIGTERM


def _caught_up(settings: Settings, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.lag == 0 for p in loader_lag(settings)):
            return True
        time.sleep(0.5)
    return False


def test_a_continuous_loader_and_dbt_builds_share_the_lake_without_lock_errors(
    own_topics: Settings, tmp_path: Path
) -> None:
    settings = own_topics.model_copy(
        update={
            "warehouse_path": tmp_path / "warehouse",
            "loader_batch_events": 500,  # full within a build: the loader pauses its partitions
            "loader_batch_seconds": 0.3,  # a commit every 0.3 s while no build runs
            "loader_compact_every_s": 4.0,  # compaction too, never while a build runs
        }
    )
    warehouse.connect(settings).close()
    ctx = multiprocessing.get_context("spawn")
    out, started = ctx.Queue(), ctx.Event()
    loader = ctx.Process(target=_loader, args=(settings, started, out))
    loader.start()
    sink = RecordingSink(settings)
    results: list[RunResult] = []
    traffic = threading.Thread(target=lambda: results.append(run(TRAFFIC, sink)))
    try:
        assert started.wait(60)
        traffic.start()
        time.sleep(2.0)  # the loader is committing
        builds = []
        while traffic.is_alive() or len(builds) < 2:
            done = dbt.run_dbt(settings, MINUTE_BUILD, tmp_path / "dbt" / "target", tmp_path / "dbt" / "logs", True)
            builds.append(done)
            assert done.returncode == 0, done.stdout[-4000:]
        traffic.join(60)
        assert _caught_up(settings, 60)

        # Dagster's minute job finds the loader in its group and only waits for it.
        from orchestration.defs.warehouse.loading import group_members, load_until_caught_up

        assert group_members(settings) == 1
        assert load_until_caught_up(settings, idle_exit_s=5.0, max_s=60.0).loaded == 0
    finally:
        loader.terminate()  # SIGTERM: the loader commits what it holds and exits
        loader.join(60)
    stats = out.get(timeout=10)
    assert loader.exitcode == 0

    # No build lost a commit, not even in an attempt its retries hid.
    assert not [b.stdout for b in builds if dbt.LOCK_MESSAGE in b.stdout]
    # The builds and the loader did meet: its commits waited for them, and it paused reading at least once.
    assert stats["lock_wait_s"] > 1.0 and stats["paused"] >= 1, stats

    delivered = results[0].statuses["delivered"]
    assert delivered == sum(sink.sent.values()) > 2_000 and results[0].statuses.get("failed", 0) == 0
    rows, positions = lake_query(
        settings, "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)) FROM {lake}.raw_events"
    )[0]
    assert rows == positions == delivered == stats["loaded"]
    loaded = Counter(dict(lake_query(settings, "SELECT event_id, count(*) FROM {lake}.raw_events GROUP BY 1")))
    assert loaded == sink.sent

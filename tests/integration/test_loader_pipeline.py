"""The loader with its writer thread on the real broker: a failed commit stops it with nothing committed
after it, a fenced commit in flight re-seeks, SIGTERM commits what was read; every record lands once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.offsets import commit_batch
from loaders.warehouse_loader import WarehouseLoader
from tests.integration.test_loader import load_all, loader_settings, query

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = GeneratorConfig(seed=12, days=1, events_per_day=6_000, tenants=2, invalid_share=0.0)


def loaded_once(settings: Settings) -> tuple[int, int, int]:
    """(rows, distinct Kafka positions, sum of the stored next offsets)."""
    total, positions = query(
        settings, "SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)) FROM {lake}.raw_events"
    )[0]
    stored = query(settings, "SELECT coalesce(sum(next_offset), 0) FROM {lake}.loader_offsets")[0][0]
    return int(total), int(positions), int(stored)


def test_a_failed_commit_stops_the_loader_and_nothing_after_it_is_committed(
    own_topics: Settings, tmp_path: Path
) -> None:
    delivered = run(TRAFFIC, KafkaSink(own_topics)).statuses["delivered"]
    settings = loader_settings(own_topics, tmp_path, batch=1_000)
    commits: list[int] = []

    def third_fails(con: Any, alias: str, topic: str, rows: Any, expected: Any, next_offsets: Any) -> None:
        commits.append(rows.num_rows)
        if len(commits) == 3:
            raise OSError("disk full")
        commit_batch(con, alias, topic, rows, expected, next_offsets)

    with pytest.raises(OSError, match="disk full"):
        WarehouseLoader(settings, commit_batch=third_fails).run(idle_exit_s=5.0, handle_signals=False)
    # Not a fourth commit, not even from the revoke while the consumer closed.
    assert len(commits) == 3
    assert loaded_once(settings) == (sum(commits[:2]),) * 3

    load_all(settings)  # the restart resumes from the stored offsets
    assert loaded_once(settings) == (delivered,) * 3


def test_a_fenced_commit_in_flight_reseeks_and_every_record_lands_once(own_topics: Settings, tmp_path: Path) -> None:
    delivered = run(TRAFFIC, KafkaSink(own_topics)).statuses["delivered"]
    settings = loader_settings(own_topics, tmp_path, batch=1_000)
    commits: list[int] = []

    def raced(con: Any, alias: str, topic: str, rows: Any, expected: Any, next_offsets: Any) -> None:
        commits.append(rows.num_rows)
        if len(commits) == 2:  # another loader took these partitions over and loaded the same records first
            other = warehouse.connect(settings)
            commit_batch(other, alias, topic, rows, expected, next_offsets)
            other.close()
        commit_batch(con, alias, topic, rows, expected, next_offsets)

    stats = WarehouseLoader(settings, commit_batch=raced).run(idle_exit_s=3.0, handle_signals=False)
    assert stats.fenced == 1 and stats.loaded == delivered - commits[1]
    assert loaded_once(settings) == (delivered,) * 3


def test_sigterm_commits_what_was_read_and_exits_cleanly(own_topics: Settings, tmp_path: Path) -> None:
    delivered = run(TRAFFIC, KafkaSink(own_topics)).statuses["delivered"]
    settings = own_topics.model_copy(update={"warehouse_path": tmp_path / "warehouse"})
    env = {
        **os.environ,
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_TOPIC_PREFIX": settings.topic_prefix,
        "ANALYTICS_WAREHOUSE_PATH": str(settings.warehouse_path),
        # Batches that never close by themselves: whatever is in the warehouse came from the SIGTERM.
        "ANALYTICS_LOADER_BATCH_EVENTS": "1000000",
        "ANALYTICS_LOADER_BATCH_SECONDS": "600",
    }
    proc = subprocess.Popen([sys.executable, "-m", "loaders.cli"], cwd=ROOT, env=env)
    time.sleep(10.0)  # start-up, group join, reading the backfill
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    total, positions, stored = loaded_once(settings)
    assert 0 < total == positions == stored <= delivered

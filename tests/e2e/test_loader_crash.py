"""SIGKILL the loader at random points while events flow; after a restart every Kafka record is loaded once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from loaders.lag import loader_lag

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def start_loader(settings: Settings, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_TOPIC_PREFIX": settings.topic_prefix,
        "ANALYTICS_WAREHOUSE_PATH": str(settings.warehouse_path),
        "ANALYTICS_LOADER_BATCH_EVENTS": "700",
        "ANALYTICS_LOADER_BATCH_SECONDS": "0.3",
        "ANALYTICS_LOADER_COMPACT_EVERY_S": "2",
    }
    return subprocess.Popen([sys.executable, "-m", "loaders.cli", *args], cwd=ROOT, env=env)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(own_topics: Settings, tmp_path: Path) -> None:
    settings = own_topics.model_copy(update={"warehouse_path": tmp_path / "warehouse"})
    live = GeneratorConfig(seed=3, tenants=2, rate=1_500.0, duration=20.0)
    traffic = threading.Thread(target=run, args=(live, KafkaSink(settings)), daemon=True)
    traffic.start()
    rng = random.Random(42)
    kills = 0
    while traffic.is_alive() and kills < 5:
        proc = start_loader(settings)
        time.sleep(rng.uniform(2.0, 4.5))  # start-up, group join, then somewhere inside a batch or commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    traffic.join(60)
    assert kills >= 3
    final = start_loader(settings, "--idle-exit", "4")
    assert final.wait(120) == 0

    highs = {p.partition: p.high_watermark for p in loader_lag(settings)}
    con = warehouse.connect(settings)
    rows = con.execute(
        "SELECT _kafka_partition, count(*), count(DISTINCT _kafka_offset), min(_kafka_offset), max(_kafka_offset) "
        f"FROM {settings.warehouse_alias}.raw_events GROUP BY 1"
    ).fetchall()
    con.close()
    loaded = {p: (n, distinct, lo, hi) for p, n, distinct, lo, hi in rows}
    assert sum(highs.values()) > 10_000
    for part, high in highs.items():
        if high == 0:
            continue
        n, distinct, lo, hi = loaded[part]
        assert (n, distinct, lo, hi) == (high, high, 0, high - 1), f"partition {part}"

"""SIGKILL `analytics realtime` at random points while events flow; after a restart Redis counts each event once."""

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
import redis

from analytics_core.catalogue import get_catalogue
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import KafkaSink
from tests.realtime_expected import (
    assert_sketches_match,
    coarser_uniques_keys,
    expected_from,
    hash_of,
    read_records,
    redis_counters,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
RETENTION_S = 86_400


def start_consumer(settings: Settings, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_TOPIC_PREFIX": settings.topic_prefix,
        "ANALYTICS_REDIS_URL": settings.redis_url,
        "ANALYTICS_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ANALYTICS_REALTIME_RETENTION_S": str(RETENTION_S),
        "ANALYTICS_REALTIME_BATCH_EVENTS": "700",
        "ANALYTICS_REALTIME_BATCH_SECONDS": "0.3",
    }
    return subprocess.Popen([sys.executable, "-m", "realtime.cli", *args], cwd=ROOT, env=env)


def test_sigkill_at_random_points_counts_every_event_once(
    own_topics: Settings, redis_prefix: str, redis_conn: redis.Redis
) -> None:
    settings = own_topics.model_copy(update={"redis_key_prefix": redis_prefix})
    stats_key = RealtimeKeys(redis_prefix).stats
    live = GeneratorConfig(seed=4, tenants=2, rate=3_000.0, duration=12.0, duplicate_share=0.05)
    traffic = threading.Thread(target=run, args=(live, KafkaSink(settings)), daemon=True)
    traffic.start()
    rng = random.Random(43)
    for _ in range(3):
        proc = start_consumer(settings)
        # Once it applies batches (a restart waits out the killed member's session first), kill it
        # somewhere inside a batch, a transaction or just before its Kafka commit.
        applied = hash_of(redis_conn, stats_key).get("applied")
        deadline = time.monotonic() + 30
        while hash_of(redis_conn, stats_key).get("applied") == applied and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the consumer applied nothing within 30 s"
        time.sleep(rng.uniform(0.1, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    traffic.join(60)
    final = start_consumer(settings, "--idle-exit", "4")
    assert final.wait(120) == 0

    want = expected_from(get_catalogue(), read_records(settings), time.time(), RETENTION_S)
    assert want.applied > 15_000 and want.duplicates > 100
    assert redis_counters(redis_conn, redis_prefix, want.counters) == want.counters
    keys = RealtimeKeys(redis_prefix)
    for tenant, last in want.offsets.items():
        assert {int(p): int(o) for p, o in hash_of(redis_conn, keys.offsets(tenant)).items()} == last
    # Sketch merges are idempotent anyway; every minute uniques key must still hold the sketch of exactly its
    # expected users, bit for bit what a clean run leaves (Sketch.from_keys of them): nothing lost, nothing added.
    assert_sketches_match(redis_conn, redis_prefix, want.uniques)
    assert redis_conn.exists(*coarser_uniques_keys(redis_prefix, want.uniques)) == 0

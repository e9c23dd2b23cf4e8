"""The installed `analytics` command end to end: stack status, and generated traffic landing in Kafka."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from analytics_core.clients import kafka_admin, kafka_consumer
from analytics_core.settings import Settings
from analytics_core.topics import Topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANALYTICS = str(Path(sys.executable).with_name("analytics"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYTICS, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def topic_size(settings: Settings, topic: str) -> int:
    consumer = kafka_consumer(settings, f"test.{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_stack_status_reports_both_services_healthy(stack_settings: Settings) -> None:
    result = run_cli("stack", "status")
    assert result.returncode == 0, result.stderr
    # Two rows say healthy (not "unhealthy"), whether this checkout or another one started the stack.
    assert len(re.findall(r"\bhealthy\b", result.stdout)) == 2, result.stdout


def test_generate_to_kafka_counts_add_up(stack_settings: Settings, tmp_path: Path) -> None:
    prefix = f"test.e2e.{uuid.uuid4().hex[:8]}."
    settings = stack_settings.model_copy(update={"topic_prefix": prefix})
    truth_path = tmp_path / "truth.json"
    args = ("generate", "--to", "kafka", "--days", "1", "--events-per-day", "20000", "--start", "2024-05-01",
            "--seed", "11", "--truth", str(truth_path), "--no-progress")  # fmt: skip
    try:
        result = run_cli(*args, env={"ANALYTICS_TOPIC_PREFIX": prefix})
        assert result.returncode == 0, result.stdout + result.stderr
        counts = json.loads(truth_path.read_text())["counts"]["total"]
        topics = Topics.from_settings(settings)
        assert topic_size(settings, topics.events) == counts["valid"] + counts["duplicate"]
        assert topic_size(settings, topics.events_dlq) == counts["invalid"]
        assert counts["valid"] + counts["duplicate"] + counts["invalid"] == counts["sent"]
    finally:
        admin = kafka_admin(settings)
        for future in admin.delete_topics(list(Topics.from_settings(settings).all())).values():
            future.result()


def test_same_seed_gives_the_same_truth_file(tmp_path: Path) -> None:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in paths:
        result = run_cli("generate", "--to", "null", "--days", "2", "--events-per-day", "5000",
                         "--start", "2024-02-28", "--seed", "5", "--truth", str(path), "--no-progress")  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes()
